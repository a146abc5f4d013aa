"""Whole-model mapping time: map_model end to end (every tile of both polarities, exact solve).

VGG8 (random weights) at 32x32 and 64x64, VGG16 at 16x16, default physics (docs/protocol.md section 3), no cache.
Each line splits the time into the circuit solve (sum of the report's solve_s, inside
transfer_matrix) and the rest (unrolling, conductances, tiling, variation draw, NF, effective
weights, building the model), and gives the time as a fraction of the README's target (15 s,
30 s, 60 s). "cpu s" is the process CPU time of the whole call (all threads): on a shared machine
it shows the work done independently of the other processes' load. Then the same mapping through
the disk cache: the first call stores it, the second loads it (a temporary cache directory),
with the ratio map time / load time. The machine may be shared: the load average is printed with the numbers.

    python3 -m benchmarks.bench_mapping [--only vgg8-32]      (from the repository root)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numba
import numpy as np

from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_layer, map_model
from nxbar.models.vgg import VGG, random_params

CASES = {"vgg8-32": ("vgg8", 32, 15.0), "vgg8-64": ("vgg8", 64, 30.0), "vgg16-16": ("vgg16", 16, 60.0)}


def network(arch: str) -> VGG:
    params = random_params(arch, num_classes=10, input_size=32, seed=0)
    return VGG(arch, params, num_classes=10, input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CASES), nargs="*", default=sorted(CASES))
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, numba threads {numba.get_num_threads()}, load average {os.getloadavg()}")
    map_layer(np.ones((3, 5)), CrossbarConfig(size=4), 0)  # compile / load the Numba code once
    head = ("case", "tiles", "total s", "solve s", "rest s", "cpu s", "target s", "/target")
    print(" ".join(f"{h:>8s}" for h in head))
    for case in args.only:
        arch, size, target = CASES[case]
        net, config = network(arch), CrossbarConfig(size=size)
        start, cpu = time.perf_counter(), time.process_time()
        mapped = map_model(net, config, cache=False)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        solve = sum(r["solve_s"] for r in mapped.report)
        tiles = sum(r["tiles"] for r in mapped.report)
        row = (f"{tiles:8d}", *(f"{v:8.2f}" for v in (total, solve, total - solve, cpu, target, total / target)))
        print(f"{case:>8s} " + " ".join(row))
    print(f"load average {os.getloadavg()}")

    net, config = network("vgg8"), CrossbarConfig(size=32)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        map_model(net, config, cache_dir=directory)
        stored = time.perf_counter() - start
        start = time.perf_counter()
        hit = map_model(net, config, cache_dir=directory)
        loaded = time.perf_counter() - start
    assert hit.cached
    print(f"cache, vgg8-32: map + store {stored:.2f} s, load {loaded:.3f} s, ratio {stored / loaded:.0f}x")


if __name__ == "__main__":
    main()
