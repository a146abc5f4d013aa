"""nxbar.reproduce: the experiment grids, a resumable quick run on random weights, the claim verdicts."""

import csv
import json

import numpy as np
import pytest

import nxbar.reproduce as rp
from nxbar.crossbar.config import PARASITIC_FIELDS
from nxbar.experiments import count_correct
from nxbar.models.vgg import random_params
from nxbar.weights import WeightFileError, file_sha256, load_model, save_weights

IDEAL = {**{f: 0.0 for f in PARASITIC_FIELDS}, "sigma": 0.0}  # T == G: the mapped model equals the software one


def _paper_header(name):
    lines = (rp.PAPER_SOURCE / rp.PAPER_TABLES[name]).read_text().splitlines()
    return next(line for line in lines if not line.startswith("#")).split(",")[2:]


def test_grid_sizes():
    # table1: 2 eps spaces x (6 SW + 3 sizes x 2 modes x (5 eps x 1 chip + 1 eps x 3 chips)) = 108
    # table2: 5 SW + 3 x 2 x (4 + 3) = 47; fig8a: 5 + 2 R_on x 2 x (4 + 3) = 33; fig8b: 5 + 4 ratios x 14 = 61
    # fig4: 2 models x (SW + 3 sizes) = 8; nf: 3 sizes x (random tiles + 8 VGG8 layers) = 27
    counts = {"table1": 108, "table2": 47, "fig4": 8, "fig8a": 33, "fig8b": 61, "fig5": 108, "fig6": 47, "nf": 27}
    assert {name: len(rp.experiment_cells(name)) for name in rp.EXPERIMENTS} == counts
    for name in rp.EXPERIMENTS:  # no cell twice
        cells = rp.experiment_cells(name)
        assert len({c.key() for c in cells}) == len(cells)
    with pytest.raises(ValueError, match="table9.*allowed: table1"):
        rp.experiment_cells("table9")


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_eps_lists_match_paper_headers(name):
    cells = rp.experiment_cells(name)
    labels = list(dict.fromkeys(rp.eps_label(c.attack.attack, c.attack.eps) for c in cells))
    assert labels == _paper_header(name)
    assert {c.attack.eps_space for c in cells} == ({"pixel", "normalized"} if name == "table1" else {"pixel"})


def test_chip_seeds_only_at_the_reference_eps():
    for name, eps in (("table1", 0.1), ("table2", 8 / 255)):
        for c in rp.experiment_cells(name):
            expected = {0, 1, 2} if c.size is not None and np.isclose(c.attack.eps, eps) else {0}
            assert c.seed in expected
        hw = [c for c in rp.experiment_cells(name) if c.size == 16 and c.mode == "HH" and np.isclose(c.attack.eps, eps)]
        assert sorted(c.seed for c in hw) == sorted([0, 1, 2] * (2 if name == "table1" else 1))  # x eps spaces


@pytest.fixture(scope="module")
def vgg8_weights(tmp_path_factory):
    meta = {"arch": "vgg8", "dataset": "cifar10", "num_classes": 10, "input_size": 32,
            "normalization": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}, "bn_eps": 1e-5,
            "class_names": [f"c{i}" for i in range(10)]}
    stem = tmp_path_factory.mktemp("w") / "vgg8_cifar10"
    save_weights(stem, random_params("vgg8", num_classes=10, input_size=32, seed=3), meta)
    return stem


def _quick(tmp_path, weights, **kw):
    return rp.run("table1", quick=True, n=8, out=tmp_path / "out", weights={"vgg8": weights},
                  base_physics=IDEAL, cache_dir=tmp_path / "cache", **kw)


def test_quick_run_rows_json_and_resume(tmp_path, vgg8_weights, monkeypatch):
    path = _quick(tmp_path, vgg8_weights)
    rows = rp.read_rows(path)
    assert path.name == "table1_quick.csv" and [r["mode"] for r in rows] == ["SW", "SH", "HH"]
    for r in rows:
        ca, aa, al, n = (float(r[k]) for k in ("CA", "AA", "AL", "n"))
        assert n == 8 and r["eps"] == "0.1" and r["attack"] == "fgsm" and r["eps_space"] == "pixel"
        assert al == pytest.approx(ca - aa, abs=1e-12)
        assert ca == 100 * int(r["clean_correct"]) / 8 and aa == 100 * int(r["adv_correct"]) / 8
    # independent reference: the ideal crossbar maps W' == W, so SH and HH equal SW, and CA is the software count
    from nxbar.data import load_dataset

    ds = load_dataset("embedded")
    net, _ = load_model(vgg8_weights)
    assert int(rows[0]["clean_correct"]) == count_correct(net, ds.images[:8], ds.labels[:8])
    assert {(r["clean_correct"], r["adv_correct"]) for r in rows} == {(rows[0]["clean_correct"], rows[0]["adv_correct"])}
    assert rows[1]["xbar"] == "64" and rows[1]["sigma"] == "0.0" and rows[1]["chip_seed"] == "0"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["weights"]["vgg8"]["npz_sha256"] == file_sha256(str(vgg8_weights) + ".npz")
    assert record["data"]["n_images"] == 8 and record["computed_this_run"] == 3 and record["wall_s_total"] > 0

    # resume: nothing left to compute, so no attack runs at all
    calls = []
    real = rp.make_adversarial
    monkeypatch.setattr(rp, "make_adversarial", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = path.read_text()
    _quick(tmp_path, vgg8_weights)
    assert calls == [] and path.read_text() == before
    assert json.loads(path.with_suffix(".json").read_text())["computed_this_run"] == 0
    # drop the HH row: only the HH attack runs again (SW and SH are stored), and the same row comes back
    lines = before.splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    _quick(tmp_path, vgg8_weights)
    assert len(calls) == 1 and path.read_text() == before
    with pytest.raises(ValueError, match="holds cells on 8 images, not 4"):
        rp.run("table1", quick=True, n=4, out=tmp_path / "out", weights={"vgg8": vgg8_weights}, base_physics=IDEAL)


def test_missing_weights_error(tmp_path):
    with pytest.raises(WeightFileError, match=r"vgg8_none\.json: weight file not found; the vgg8 weights must be "
                                              r"trained first \(tools/train_export\.py --model vgg8\)"):
        rp.run("table1", quick=True, n=8, out=tmp_path, weights={"vgg8": tmp_path / "vgg8_none"})
    assert not (tmp_path / "table1_quick.csv").exists()


def _write(path, cells, al_of):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=rp.COLUMNS)
        w.writeheader()
        for c in cells:
            al = al_of(c)
            w.writerow({**dict(zip(rp.KEY_COLUMNS, c.key())), "n": "100", "clean_correct": "90", "adv_correct": "",
                        "CA": "90.0", "AA": repr(90.0 - al), "AL": repr(al), "nf": ""})


def test_verdicts_on_hand_made_results(tmp_path):
    sizes = {None: 80.0, 16: 75.0, 32: 74.0, 64: 70.0}
    good = lambda c: sizes[c.size] - (2.0 if c.mode == "HH" else 0.0)  # HH < SH, larger xbar lower, all < SW
    cells = rp.experiment_cells("table2")
    _write(tmp_path / "table2.csv", cells, good)
    v = rp.verdicts(rp.load_results(tmp_path))
    assert v["C1"][0] == v["C3"][0] == v["C4"][0] == "holds"
    assert v["C4"][1].startswith("15/15 comparisons hold")  # 3 sizes x 5 eps, chip seeds averaged
    assert v["C5"] == ("not run", "no stored results for it") and v["C8"][0] == "not run"

    # one HH cell (64x64, eps 2/255, all chips) above its SH cell: C4 fails there, with the numbers
    bad = lambda c: 71.5 if (c.size == 64 and c.mode == "HH" and c.attack.eps == 2 / 255) else good(c)
    _write(tmp_path / "table2.csv", cells, bad)
    rp.copy_paper_tables(out=tmp_path)
    v = rp.verdicts(rp.load_results(tmp_path))
    assert v["C4"] == ("does not hold", "14/15 comparisons hold; fails: table2 xbar64 eps 2/255 AL HH vs SH: 71.50 vs 70.00")
    text = rp.report(tmp_path).read_text()
    assert "| C4 | PGD: AL(HH) < AL(SH) (Table II) | does not hold | 14/15" in text
    assert "| vgg8 | - | software | SW | 80.00 / 83.66 |" in text  # ours beside the paper's Table II
    assert "Not run: no `table1.csv` yet" in text


def test_cli(tmp_path):
    from click.testing import CliRunner

    from cli import main

    def invoke(*args):
        return CliRunner().invoke(main, ["reproduce", *map(str, args)])

    listed = invoke("--list")
    assert listed.exit_code == 0 and "table1   108 cells  FGSM" in listed.output and "nf        27 cells  NF" in listed.output
    result = invoke("--report", "--out", tmp_path)
    assert result.exit_code == 0 and (tmp_path / "paper" / "table2_pgd_vgg8_cifar10_AL.csv").is_file()
    assert (tmp_path / "README.md").read_text().count("| not run |") == 11
    for args, message in (((), "give an experiment NAME"), (("table9",), "experiment 'table9' unknown")):
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output
