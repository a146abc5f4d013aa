"""A small real grid, serial against local Dask workers (`nxbar reproduce NAME --quick --workers N`): wall times
and their ratio.

The shipped VGG8 on the first N embedded images, the experiment's quick grid at default physics (fig8b: SW, and
SH and HH on 32x32 crossbars at two ON/OFF ratios, PGD-10 8/255), each run into a fresh results folder with a
fresh disk cache, so each maps its chips and makes its attacks; the cluster's time includes starting its
workers. The runs go serial, cluster, cluster, serial, so that a load that drifts during them (a shared machine)
weighs on both alike; the ratio is of the sums. Every run's rows must be the same (docs/protocol.md section 9,
"Running on a cluster"). The load average is printed with the numbers.

    python3 -m benchmarks.bench_cluster [--name fig8b] [--n 32] [--workers 2]      (from the repository root)
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from nxbar import cluster
from nxbar.study import grid, runner


def timed_run(name: str, n: int, folder: Path, workers: int | None) -> tuple[float, list[str]]:
    """(wall seconds, the stored rows sorted) of `name`'s quick grid on n images, computed in this process
    (workers None) or on that many local worker processes."""
    start = time.perf_counter()
    with cluster.connect(workers=workers) as client:
        path = runner.run(name, folder / "out", quick=True, n=n, cache_dir=folder / "cache", client=client)
    wall = time.perf_counter() - start
    with open(path, newline="") as f:
        return wall, sorted(str(sorted(row.items())) for row in csv.DictReader(f))


def main():
    """Both runs of the grid, their times and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", choices=sorted(grid.EXPERIMENTS), default="fig8b")
    parser.add_argument("--n", type=int, default=32, help="embedded test images")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cells = len(grid.experiment_cells(args.name, quick=True))
    print(f"{args.name} --quick: {cells} cells on {args.n} images; cores {os.cpu_count()}, "
          f"load average {os.getloadavg()}")
    walls, rows = {None: [], args.workers: []}, []
    with tempfile.TemporaryDirectory() as directory:
        for i, workers in enumerate((None, args.workers, args.workers, None)):
            wall, stored = timed_run(args.name, args.n, Path(directory) / str(i), workers)
            walls[workers].append(wall)
            rows.append(stored)
            label = "serial" if workers is None else f"--workers {workers}"
            print(f"{label:<12s} {wall:8.1f} s   load average {os.getloadavg()}", flush=True)
    serial, spread = sum(walls[None]), sum(walls[args.workers])
    same = all(r == rows[0] for r in rows)
    print(f"serial / cluster  {serial / spread:.2f}x (sums {serial:.1f} s / {spread:.1f} s); same rows: "
          f"{'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
