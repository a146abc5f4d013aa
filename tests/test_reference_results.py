"""The stored reference results (reference_results/): every stored table complete and internally consistent,
made by a full run with the shipped weights; a few cheap cells computed again give the stored numbers, exactly on
the BLAS kernel that made them and within the measured cross-kernel tolerance on any other (reproducibility.json);
README.md is the report generated from exactly these tables."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nxbar
from nxbar import reproducibility as rx
from nxbar.crossbar.config import CrossbarConfig
from nxbar.evaluation import AttackConfig
from nxbar.study import grid
from nxbar.study import report as study_report
from nxbar.study import results as study_results
from nxbar.study import runner as study_runner
from nxbar.threats import ATTACKERS
from nxbar.weights import file_sha256, weight_paths

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "reference_results"
STORED = [name for name in grid.EXPERIMENTS if (RESULTS / f"{name}.csv").is_file()]
# Cheap cells computed again on the stored number of images: FGSM needs one gradient per image; 16x16 maps fastest.
RECOMPUTED = [
    ("table1", {"mode": "SW", "eps": "0.1", "eps_space": "pixel"}),
    ("table1", {"mode": "HH", "xbar": "16", "eps": "0.1", "eps_space": "pixel", "chip_seed": "0"}),
    ("table3", {"model": "vgg8q", "mode": "HH", "xbar": "16", "eps": "0.1", "chip_seed": "0"}),
    ("fig10", {"model": "vgg16q", "attack": "fgsm", "eps": "0.1"}),
    ("fig4", {"model": "vgg8", "xbar": "64"}),  # the only stored cell recomputed on 64x64 crossbars
    ("nf", {"layer": "tiles", "xbar": "16"}),
    ("nf", {"layer": "conv3.weight", "xbar": "16"}),
]


def test_readme_is_the_report_of_the_stored_tables(tmp_path):
    copy = shutil.copytree(RESULTS, tmp_path / "results")  # report() writes README.md into the folder it reads
    assert study_report.write_report(copy).read_text() == (RESULTS / "README.md").read_text(), \
        "reference_results/README.md is stale: run `nxbar reproduce --report`"


@pytest.mark.parametrize("name", STORED)
def test_stored_table_is_complete_consistent_and_made_with_the_shipped_weights(name):
    rows = study_results.read_rows(RESULTS / f"{name}.csv")
    record = json.loads((RESULTS / f"{name}.json").read_text())
    assert record["experiment"] == name and record["finished"] and not record["quick"] and record["base_physics"] == {}
    # the tables were made before parasitic_scale existed, at no scaling (1.0)
    assert {"parasitic_scale": 1.0, **record["crossbar_defaults"]} == json.loads(json.dumps(CrossbarConfig().as_dict()))
    keys = [study_results.row_key(r) for r in rows]
    assert sorted(keys) == sorted(c.key() for c in grid.experiment_cells(name)), "grid incomplete or cells repeated"
    for model, w in record["weights"].items():
        shipped = weight_paths(study_runner.find_weights(model))[0]
        assert w["npz_sha256"] == file_sha256(shipped), f"{name} was made with other {model} weights"
    for r in rows:
        if r["mode"] == "nf":
            assert 0 < float(r["nf"]) < 1
            continue
        n = int(r["n"])
        assert n == record["data"]["n_images"] == 1000
        assert float(r["CA"]) == 100.0 * int(r["clean_correct"]) / n
        if r["mode"] != "clean":
            assert float(r["AA"]) == 100.0 * int(r["adv_correct"]) / n
            assert float(r["AL"]) == pytest.approx(float(r["CA"]) - float(r["AA"]), abs=1e-9)


DRIFT = json.loads((RESULTS / "reproducibility.json").read_text())
# Stored per-image outcomes of the cheap FGSM cells, made by the kernel that made the stored tables
OUTCOMES = {(c["experiment"], json.dumps(c["match"], sort_keys=True)): rx.from_record(c["outcomes"])
            for c in DRIFT["cells"]}


def _same_kernel_as_stored(kernel: str | None = None, config: str | None = None) -> bool:
    """Whether a process with this nxbar version (its engine) that runs BLAS `kernel` of OpenBLAS build `config`
    (default: this process's) computes as the one that stored the outcomes did: then a recomputed cell must match
    bit for bit, elsewhere within the measured tolerance."""
    here = rx.blas()
    return (nxbar.__version__ == DRIFT["versions"]["nxbar"]
            and (kernel or here["kernel"]) == DRIFT["reference_kernel"]
            and (config or here["config"]) == DRIFT["blas_config"])


def _stored(name, match):
    return next(r for r in study_results.read_rows(RESULTS / f"{name}.csv") if all(r[k] == v for k, v in match.items()))


@pytest.mark.parametrize("name,match", [(n, m) for n, m in RECOMPUTED if n in STORED])
def test_cheap_cells_computed_again_give_the_stored_numbers(name, match, tmp_path):
    row = _stored(name, match)
    cell, runner = study_runner.cell_runner(name, row, cache_dir=tmp_path)
    if name == "nf":
        assert float(runner.compute(cell)["nf"]) == pytest.approx(float(row["nf"]), rel=1e-12)
        return
    tolerance = 0 if _same_kernel_as_stored() else rx.TOLERANCE_IMAGES
    stored = OUTCOMES.get((name, json.dumps(match, sort_keys=True)))
    if stored is None:  # a clean-accuracy cell: counts only
        again = runner.compute(cell)
        assert abs(again["clean_correct"] - int(row["clean_correct"])) <= tolerance
        return
    assert [int(stored[k].sum()) for k in ("clean_correct", "adv_correct")] == [
        int(row["clean_correct"]), int(row["adv_correct"])]  # the stored outcomes are the table's cell
    here = rx.outcomes(runner, cell)
    for key in ("clean_correct", "adv_correct"):
        assert abs(int(here[key].sum()) - int(row[key])) <= tolerance, f"{key}: {int(here[key].sum())} vs {row[key]}"
    _assert_within_tolerance(stored, here, exact=tolerance == 0, kernel=rx.blas()["kernel"])


def _assert_within_tolerance(stored: dict, here: dict, exact: bool, kernel: str) -> None:
    """Outcomes of a recomputed cell against the stored ones: identical on the kernel that stored them; else at
    most TOLERANCE_IMAGES images change outcome and at most MARGIN_MOVED_FRACTION move their margin."""
    moved, margins = rx.moved(stored, here), rx.margin_moved(stored, here)
    where = f"on BLAS kernel {kernel}"
    if exact:
        first = {k: v[: len(here["adv_margin"])] for k, v in stored.items()}  # here may cover the first images only
        assert rx.to_record(here) == rx.to_record(first), f"outcomes or margins differ {where}"
        return
    assert len(moved) <= rx.TOLERANCE_IMAGES, (
        f"{len(moved)} images changed outcome {where} (indices {moved.tolist()}, stored margins "
        f"{stored['adv_margin'][moved]}, here {here['adv_margin'][moved]}); allowed {rx.TOLERANCE_IMAGES}")
    assert len(margins) <= rx.MARGIN_MOVED_FRACTION * len(here["adv_margin"]), (
        f"{len(margins)} of {len(here['adv_margin'])} adversarial margins moved by more than "
        f"{rx.MARGIN_TOLERANCE_LOGITS} logits {where}")


CROSS_KERNEL_CELL = ("table3", {"model": "vgg8q", "mode": "HH", "xbar": "16", "eps": "0.1", "chip_seed": "0"})
_OUTCOMES_IN_A_SUBPROCESS = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
import nxbar
from nxbar import reproducibility as rx
from nxbar.study import results as study_results
from nxbar.study import runner as study_runner
name, match = {cell!r}
row = next(r for r in study_results.read_rows(Path(sys.argv[1]) / "reference_results" / f"{{name}}.csv") if all(r[k] == v for k, v in match.items()))
cell, runner = study_runner.cell_runner(name, row, cache_dir=sys.argv[2], n=600)
np.savez(sys.argv[3], kernel=rx.blas()["kernel"], **rx.outcomes(runner, cell))
"""


@pytest.mark.parametrize("kernel", ["Haswell", "Sandybridge"])  # two kernels that every AVX2 CPU can run
def test_a_cell_on_another_blas_kernel_stays_within_the_tolerance(kernel, tmp_path):
    """The QUANOS HH cell, whose count moves on some kernels (its image 385), computed with OpenBLAS forced to
    `kernel` on the first 600 images: three whole batches of 200, as in the stored run (a GEMM's rounding
    depends on its shape too, so a shorter last batch would not be bit for bit the stored one)."""
    out = tmp_path / "outcomes.npz"
    code = _OUTCOMES_IN_A_SUBPROCESS.format(cell=CROSS_KERNEL_CELL)
    done = subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path), str(out)],
                          env={**os.environ, "OPENBLAS_CORETYPE": kernel}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with np.load(out) as f:
        here = {k: f[k] for k in f.files}
    assert str(here["kernel"]) == kernel, f"OpenBLAS ran {here['kernel']}, not {kernel}"
    stored = OUTCOMES[(CROSS_KERNEL_CELL[0], json.dumps(CROSS_KERNEL_CELL[1], sort_keys=True))]
    config = rx.blas()["config"].replace(rx.blas()["kernel"], kernel)  # the subprocess's build string
    _assert_within_tolerance(stored, here, exact=_same_kernel_as_stored(kernel, config), kernel=kernel)


# A real change of the cell (its eps, chip, model, physics or attack) moves the adversarial margins of more
# images than another kernel may, on the first 200 images already.
CHANGES = {
    "eps 0.1 -> 0.09": lambda c: dataclasses.replace(c, attack=dataclasses.replace(c.attack, eps=0.09)),
    "chip 0 -> 1": lambda c: dataclasses.replace(c, seed=1),
    "model vgg8 -> vgg8q": lambda c: dataclasses.replace(c, model="vgg8q"),
    "r_wire_row 1 -> 1.5 ohm": lambda c: dataclasses.replace(c, physics=(("r_wire_row_ohm", 1.5),)),
    "FGSM -> PGD, 2 steps of 0.05": lambda c: dataclasses.replace(
        c, attack=AttackConfig(attack="pgd", eps=0.1, steps=2, alpha=0.05, random_start=False)),
}


@pytest.fixture(scope="module")
def hh_cell(tmp_path_factory):
    """table1's HH 16x16 FGSM 0.1 chip 0 cell on the first 200 images: (cell, runner, stored outcomes)."""
    name, match = RECOMPUTED[1]
    cell, runner = study_runner.cell_runner(name, _stored(name, match), cache_dir=tmp_path_factory.mktemp("cache"), n=200,
                                  models=("vgg8q",))
    stored = OUTCOMES[(name, json.dumps(match, sort_keys=True))]
    assert len(rx.margin_moved(stored, rx.outcomes(runner, cell))) <= rx.MARGIN_MOVED_FRACTION * 200  # unchanged
    return cell, runner, stored


@pytest.mark.parametrize("change", CHANGES)
def test_a_real_change_of_a_cell_moves_more_margins_than_another_kernel_may(change, hh_cell):
    cell, runner, stored = hh_cell
    moved = rx.margin_moved(stored, rx.outcomes(runner, CHANGES[change](cell)))
    assert len(moved) > rx.MARGIN_MOVED_FRACTION * 200


def _shipped_sha256(model: str) -> str:
    return file_sha256(weight_paths(study_runner.find_weights(model))[0])


@pytest.mark.parametrize("path", sorted(RESULTS.glob("evaluate_*.json")), ids=lambda p: p.name)
def test_stored_main_command_is_consistent_and_made_with_the_shipped_weights(path):
    record = json.loads(path.read_text())
    assert record["model"]["npz_sha256"] == _shipped_sha256(record["model"]["name"])
    for r in record["results"]:
        assert r["n"] == record["data"]["n_images"]
        assert r["CA"] == 100.0 * r["clean_correct"] / r["n"] and r["AA"] == 100.0 * r["adv_correct"] / r["n"]
        assert r["AL"] == pytest.approx(r["CA"] - r["AA"], abs=1e-9)
    assert record["timings"]["total_s"] >= record["timings"]["attack_s"] > 0


@pytest.mark.parametrize("path", sorted((RESULTS / "threats").glob("*.json")), ids=lambda p: p.name)
def test_stored_threat_matrix_is_consistent_and_made_with_the_shipped_weights(path):
    record = json.loads(path.read_text())
    assert record["npz_sha256"] == _shipped_sha256(record["model"])
    assert path.stem == f"{record['model']}_xbar{record['config']['size']}"
    for r in record["rows"]:
        assert r["n"] == record["n_images"] and r["AL"] == pytest.approx(r["CA"] - r["AA"], abs=1e-9)
        if r["victim"] == "chips":  # mean and spread over the chips, each chip's own numbers consistent too
            for key in ("CA", "AA", "AL"):
                values = [p[key] for p in r["per_seed"]]
                assert r[key] == pytest.approx(sum(values) / len(values), abs=1e-9)
            assert all(p["AL"] == pytest.approx(p["CA"] - p["AA"], abs=1e-9) for p in r["per_seed"])
    assert {r["attacker"] for r in record["rows"]} == set(ATTACKERS)
