"""Cells as tasks of a Dask cluster (nxbar.cluster): the same stored rows as the serial run, a worker killed or the
driver stopped mid-run, the options' errors, and a default install that never imports dask."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from nxbar import cluster
from nxbar.crossbar.config import PARASITIC_FIELDS
from nxbar.study import grid, nonideality, robustness
from nxbar.study import runner as study_runner
from nxbar.study.results import read_rows, row_key
from nxbar.weights import WeightFileError

REPO = Path(__file__).resolve().parents[1]
IDEAL = {**{f: 0.0 for f in PARASITIC_FIELDS}, "sigma": 0.0}  # T == G: no circuit solves, quick cells
# The robustness study at its smallest: one 8x8 size and chip, 4 images, a sweep of three strengths (and its
# refinement round when the target drop falls between s = 1 and 2), two attacks.
TINY = nonideality.Design(sizes=(8,), chips=(0,), n=4, sigmas=(0.0,), scales=(1.0, 2.0), max_scale=2.0,
                          targets_pp=((8, 8.5),), technology_size=8, attacks=nonideality.QUICK.attacks, variants=(),
                          variant_size=8, variant_attacks=(), quick=True)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, one thread each, and its client."""
    pytest.importorskip("distributed")
    with cluster.connect(workers=2) as c:
        yield c


def _sorted_rows(path):
    """The CSV rows of `path` as sorted JSON texts: the stored rows whatever order the cells finished in."""
    return sorted(json.dumps(r, sort_keys=True) for r in csv.DictReader(open(path)))


def test_a_grid_on_the_cluster_stores_the_rows_of_the_serial_run(tmp_path, client, weights):
    assert set(client.run(lambda: os.environ["OPENBLAS_NUM_THREADS"]).values()) == {"1"}
    kw = {"quick": True, "n": 4, "weights": {"vgg8": weights}, "base_physics": IDEAL}
    serial = study_runner.run("fig8b", tmp_path / "serial", cache_dir=tmp_path / "c1", **kw)
    finished = []
    spread = study_runner.run("fig8b", tmp_path / "dask", cache_dir=tmp_path / "c2", client=client,
                              progress=lambda i, total, cell: finished.append(cell), **kw)
    assert _sorted_rows(spread) == _sorted_rows(serial) and len(finished) == 5
    record = json.loads(spread.with_suffix(".json").read_text())
    assert record["finished"] and record["computed_this_run"] == 5 and "2 worker(s)" in record["engine"]

    # the robustness study: the sweep (round by round), the points, the attack cells with per-image outcomes
    def study(name, c):
        """The study's folder after a run in tmp_path/name, on client c or serially (None)."""
        robustness.Study(tmp_path / name, TINY, cache_dir=tmp_path / f"cache_{name}", echo=lambda _: None,
                         client=c).run()
        return robustness.folder(tmp_path / name, True)

    one, two = study("serial", None), study("dask", client)
    for name in ("sweep.csv", "attacks.csv"):
        assert _sorted_rows(one / name) == _sorted_rows(two / name)
    assert (one / "points.json").read_text() == (two / "points.json").read_text()
    files = sorted(p.name for p in (one / "outcomes").iterdir())
    assert files == sorted(p.name for p in (two / "outcomes").iterdir()) and len(files) >= 6
    for name in files:
        a, b = robustness.load_outcomes(one / "outcomes" / name), robustness.load_outcomes(two / "outcomes" / name)
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_killed_worker_and_a_stopped_driver_leave_every_cell_written_once(tmp_path, client, weights):
    kw = {"quick": True, "weights": {"vgg8": weights}, "base_physics": IDEAL, "cache_dir": tmp_path / "c",
          "client": client}
    killed = []

    async def exit_now():
        """End the worker's process at once; a coroutine, which client.run sends without waiting for an answer."""
        os._exit(1)

    def kill_a_busy_worker(i, total, cell):
        """After the first row: end the process of a worker that holds a cell (os._exit, no clean-up)."""
        if i == 1:
            busy = {w: keys for w, keys in client.processing().items() if keys}
            assert busy, "no cell was on a worker when the first one finished"
            worker = sorted(busy)[0]
            killed.extend(busy[worker])
            client.run(exit_now, workers=[worker], wait=False)

    path = study_runner.run("fig8b", tmp_path / "out", n=16, progress=kill_a_busy_worker, **kw)
    keys = [row_key(r) for r in read_rows(path)]
    assert killed and len(keys) == len(set(keys)) == len(grid.experiment_cells("fig8b", quick=True))

    def stop_the_driver(i, total, cell):
        """Ctrl-C after the first row."""
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        study_runner.run("table2", tmp_path / "out", n=4, progress=stop_the_driver, **kw)
    assert len(read_rows(tmp_path / "out" / "table2_quick.csv")) == 1
    computed = []
    path = study_runner.run("table2", tmp_path / "out", n=4, progress=lambda *a: computed.append(a[2]), **kw)
    keys = [row_key(r) for r in read_rows(path)]
    assert len(computed) == 2 and len(keys) == len(set(keys)) == len(grid.experiment_cells("table2", quick=True))


def test_threats_through_a_running_scheduler_give_the_serial_report(tmp_path, client, weights, monkeypatch):
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("NXBAR_CACHE_DIR", cache)
    client.run(lambda: os.environ.update(NXBAR_CACHE_DIR=cache))  # the workers' own disk cache, here the same
    args = ["threats", "--weights", weights, "--n", "2", "--xbar", "64", "--r-source", "0", "--r-sink", "0",
            "--r-wire-row", "0", "--r-wire-col", "0", "--sigma", "0.1", "--steps", "1", "--victims", "0",
            "--eot", "3", "--transfer-seed", "4", "--sanity-images", "2", "--queries", "5"]
    reports = {}
    for name, extra in (("serial", []), ("dask", ["--scheduler", client.scheduler.address])):
        out = CliRunner().invoke(cli.main, [*args, "--json", str(tmp_path / f"{name}.json"), *extra])
        assert out.exit_code == 0, out.output
        assert ("[7/7] attackers 5, sanity targets 2" in out.output) == (name == "dask")  # progress from the driver
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for key in ("rows", "checks", "config", "attack"):
        assert reports["dask"][key] == reports["serial"][key]
    assert len(reports["dask"]["rows"]) == 10 and list(reports["dask"]["checks"]) == ["software", "chip 0"]


def test_cluster_options_are_checked_before_any_cell(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"--workers 0: allowed: an integer >= 1"):
        with cluster.connect(workers=0):
            pass
    with pytest.raises(ValueError, match=r"--scheduler tcp://h:8786 and --workers 2 were both given; allowed: one"):
        with cluster.connect("tcp://h:8786", 2):
            pass
    with cluster.connect() as none:
        assert none is None
    monkeypatch.setitem(sys.modules, "distributed", None)  # dask not installed
    with pytest.raises(ValueError, match=r"not installed: pip install 'nxbar\[cluster\]'"):
        with cluster.connect(workers=2):
            pass
    out = CliRunner().invoke(cli.main, ["reproduce", "table1", "--quick", "--out", str(tmp_path), "--workers", "2"])
    assert out.exit_code == 2 and "pip install 'nxbar[cluster]'" in out.output and not list(tmp_path.iterdir())
    out = CliRunner().invoke(cli.main, ["reproduce", "--list", "--workers", "2"])
    assert out.exit_code == 2 and "--workers 2: no cell is computed with --list, --report or --figures" in out.output
    out = CliRunner().invoke(cli.main, ["robustness", "--from-stored", "--scheduler", "tcp://h:8786"])
    assert out.exit_code == 2 and "--scheduler tcp://h:8786: no cell is computed with --from-stored" in out.output


def test_a_worker_refuses_other_weights_and_another_blas_kernel(tmp_path, weights):
    spec = study_runner.RunnerSpec.of({"vgg8": weights}, 4, IDEAL, tmp_path)
    assert study_runner.RunnerSpec.of({"vgg8": weights}, 4, IDEAL, tmp_path) == spec  # the same task key each run
    assert len(spec.build().labels) == 4
    other = replace(spec, weights=(("vgg8", weights, ("0" * 64, spec.weights[0][2][1])),))
    with pytest.raises(WeightFileError, match=r"vgg8_random: this vgg8 weight file .* is not the one the run "
                                              r"started with \(000000000000, "):
        other.build()
    with pytest.raises(ValueError, match=r"OpenBLAS kernel is .*, the run's Prescott: .* set OPENBLAS_CORETYPE"):
        replace(spec, blas_kernel="Prescott").build()


def test_thread_counts_split_the_cores_between_local_workers():
    assert cluster.thread_env(2, cores=2) == dict.fromkeys(cluster.THREAD_VARIABLES, "1")
    assert cluster.thread_env(3, cores=16)["NUMBA_NUM_THREADS"] == "5"
    assert cluster.thread_env(4, cores=2)["OPENBLAS_NUM_THREADS"] == "1"


def test_the_default_install_never_imports_dask():
    code = ("import sys, cli, nxbar.cluster, nxbar.study.runner, nxbar.study.robustness\n"
            "from click.testing import CliRunner\n"
            "assert CliRunner().invoke(cli.main, ['reproduce', '--help']).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    setup = (REPO / "setup.py").read_text()
    requires = setup.split("install_requires=")[1].split("]")[0]
    assert "dask" not in requires and '"cluster": ["dask[distributed]' in setup
