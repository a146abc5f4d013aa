"""nxbar.study: the experiment grids, a resumable quick run on random weights, the claim verdicts, the report."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import nxbar.evaluation as ex
from nxbar.attacks import eps_label
from nxbar.crossbar.config import PARASITIC_FIELDS
from nxbar.evaluation import AttackConfig, count_correct
from nxbar.models.vgg import random_params
from nxbar.study import claims, figures, grid
from nxbar.study import report as study_report
from nxbar.study import results as study_results
from nxbar.study import runner as study_runner
from nxbar.weights import WeightFileError, file_sha256, load_model, save_weights

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "reference_results" / "paper"  # the paper's tables, stored
IDEAL = {**{f: 0.0 for f in PARASITIC_FIELDS}, "sigma": 0.0}  # T == G: the mapped model equals the software one


def _paper_header(name):
    lines = (PAPER / study_results.PAPER_TABLES[name]).read_text().splitlines()
    return next(line for line in lines if not line.startswith("#")).split(",")[2:]


def test_grid_sizes():
    # table1: 2 eps spaces x (6 SW + 3 sizes x 2 modes x (5 eps x 1 chip + 1 eps x 3 chips)) = 108
    # table2: 5 SW + 3 x 2 x (4 + 3) = 47; fig8a: 5 + 2 R_on x 2 x (4 + 3) = 33; fig8b: 5 + 4 ratios x 14 = 61
    # fig4: 2 models x (SW + 3 sizes) = 8; nf: 3 sizes x (random tiles + 8 VGG8 layers) = 27
    # table3: 2 models x (6 SW + 2 modes x (5 + 3)) = 44; fig9: 4 input settings x 22 = 88
    # fig10: FGSM 6 eps x (SW, SH, 4-bit SW, QUANOS SW) + 2 more SH chips at 0.1 = 26; PGD 5 x 4 + 2 = 22
    counts = {"table1": 108, "table2": 47, "fig4": 8, "fig8a": 33, "fig8b": 61, "fig5": 108, "fig6": 47, "nf": 27,
              "table3": 44, "fig9": 88, "fig10": 48}
    assert {name: len(grid.experiment_cells(name)) for name in grid.EXPERIMENTS} == counts
    for name in grid.EXPERIMENTS:  # no cell twice
        cells = grid.experiment_cells(name)
        assert len({c.key() for c in cells}) == len(cells)
    with pytest.raises(ValueError, match="table9.*allowed: table1"):
        grid.experiment_cells("table9")


@pytest.mark.parametrize("name", ["table1", "table2", "table3"])
def test_eps_lists_match_paper_headers(name):
    cells = grid.experiment_cells(name)
    labels = list(dict.fromkeys(eps_label(c.attack.attack, c.attack.eps) for c in cells))
    assert labels == _paper_header(name)
    assert {c.attack.eps_space for c in cells} == ({"pixel", "normalized"} if name == "table1" else {"pixel"})


def test_chip_seeds_only_at_the_reference_eps():
    for name, eps in (("table1", 0.1), ("table2", 8 / 255)):
        for c in grid.experiment_cells(name):
            expected = {0, 1, 2} if c.size is not None and np.isclose(c.attack.eps, eps) else {0}
            assert c.seed in expected
        hw = [c for c in grid.experiment_cells(name) if c.size == 16 and c.mode == "HH" and np.isclose(c.attack.eps, eps)]
        assert sorted(c.seed for c in hw) == sorted([0, 1, 2] * (2 if name == "table1" else 1))  # x eps spaces


META = {"arch": "vgg8", "dataset": "cifar10", "num_classes": 10, "input_size": 32,
        "normalization": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}, "bn_eps": 1e-5,
        "class_names": [f"c{i}" for i in range(10)]}
BITS = [2, 4, 8, None, 2, 4, 8, 2]


@pytest.fixture(scope="module")
def vgg8_weights(tmp_path_factory):
    stem = tmp_path_factory.mktemp("w") / "vgg8_cifar10"
    save_weights(stem, random_params("vgg8", num_classes=10, input_size=32, seed=3), META)
    return stem


@pytest.fixture(scope="module")
def vgg8q_weights(tmp_path_factory):
    """A hybrid-precision VGG8 (random weights put on their per-layer grids, like a QUANOS export)."""
    from nxbar.crossbar.mapping import quantize_weights
    from nxbar.models.arch import mvm_names

    per_layer = dict(zip(mvm_names("vgg8"), BITS))
    params = random_params("vgg8", num_classes=10, input_size=32, seed=4)
    stem = tmp_path_factory.mktemp("w") / "vgg8q_cifar10"
    save_weights(stem, {k: quantize_weights(v, per_layer.get(k)) for k, v in params.items()},
                 {**META, "model": "vgg8q", "layer_bits": BITS})
    return stem


def _quick(tmp_path, weights, **kw):
    return study_runner.run("table1", quick=True, n=8, out=tmp_path / "out", weights={"vgg8": weights},
                            base_physics=IDEAL, cache_dir=tmp_path / "cache", draw=figures.draw, **kw)


def test_quick_run_rows_json_and_resume(tmp_path, vgg8_weights, monkeypatch):
    path = _quick(tmp_path, vgg8_weights)
    rows = study_results.read_rows(path)
    assert path.name == "table1_quick.csv" and [r["mode"] for r in rows] == ["SW", "SH", "HH"]
    for r in rows:
        ca, aa, al, n = (float(r[k]) for k in ("CA", "AA", "AL", "n"))
        assert n == 8 and r["eps"] == "0.1" and r["attack"] == "fgsm" and r["eps_space"] == "pixel"
        assert al == pytest.approx(ca - aa, abs=1e-12)
        assert ca == 100 * int(r["clean_correct"]) / 8 and aa == 100 * int(r["adv_correct"]) / 8
    # independent reference: the ideal crossbar maps W' == W, so SH and HH equal SW, and CA is the software count
    from nxbar.data.load import load_dataset

    ds = load_dataset("embedded")
    net, _ = load_model(vgg8_weights)
    assert int(rows[0]["clean_correct"]) == count_correct(net, ds.images[:8], ds.labels[:8])
    assert {(r["clean_correct"], r["adv_correct"]) for r in rows} == {(rows[0]["clean_correct"], rows[0]["adv_correct"])}
    assert rows[1]["xbar"] == "64" and rows[1]["sigma"] == "0.0" and rows[1]["chip_seed"] == "0"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["weights"]["vgg8"]["npz_sha256"] == file_sha256(str(vgg8_weights) + ".npz")
    assert record["data"]["n_images"] == 8 and record["computed_this_run"] == 3 and record["wall_s_total"] > 0
    assert record["timed_cells"] == 3 and record["wall_s_total"] == record["wall_s_this_run"]
    if importlib.util.find_spec("matplotlib"):  # the figure beside the CSV (the plot extra; CI installs it)
        assert record["figure"] == str(path.with_suffix(".png")) and path.with_suffix(".png").stat().st_size > 0
    else:
        assert record["figure"].startswith("not drawn:")

    # a stored cell computed again from its row alone (software cells carry no physics: the full grid's key)
    again = study_runner.recompute("table1", rows[0], weights={"vgg8": vgg8_weights})
    assert again == {k: rows[0][k] for k in again} and set(again) == {"n", "clean_correct", "CA", "adv_correct", "AA", "AL"}
    with pytest.raises(ValueError, match="no cell of experiment 'table2' has the key"):
        study_runner.recompute("table2", rows[0], weights={"vgg8": vgg8_weights})

    # resume: nothing left to compute, so no attack runs at all
    calls = []
    real = ex.make_adversarial
    monkeypatch.setattr(ex, "make_adversarial", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = path.read_text()
    _quick(tmp_path, vgg8_weights)
    assert calls == [] and path.read_text() == before
    again_record = json.loads(path.with_suffix(".json").read_text())
    assert again_record["computed_this_run"] == 0 and again_record["timed_cells"] == 3
    assert again_record["wall_s_total"] == pytest.approx(record["wall_s_total"] + again_record["wall_s_this_run"])
    # drop the HH row: only the HH attack runs again (SW and SH are stored), and the same row comes back
    lines = before.splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    _quick(tmp_path, vgg8_weights)
    assert len(calls) == 1 and path.read_text() == before
    assert json.loads(path.with_suffix(".json").read_text())["timed_cells"] == 3  # 2 kept + 1 made, not 3 + 1
    with pytest.raises(ValueError, match="holds cells on 8 images, not 4"):
        study_runner.run("table1", quick=True, n=4, out=tmp_path / "out", weights={"vgg8": vgg8_weights}, base_physics=IDEAL)


def test_a_run_stopped_midway_keeps_its_wall_time(tmp_path, vgg8_weights):
    """The json is rewritten after every cell, so a run killed midway (a session's end) leaves its time and cell
    count, and the resumed run adds to them; the report says when a record covers only part of its cells."""
    class Stop(Exception):
        pass

    def stop_after_two(i, total, cell):
        if i == 2:
            raise Stop

    with pytest.raises(Stop):
        _quick(tmp_path, vgg8_weights, progress=stop_after_two)
    stopped = json.loads((tmp_path / "out" / "table1_quick.json").read_text())
    assert not stopped["finished"] and stopped["computed_this_run"] == 2 and stopped["timed_cells"] == 2
    assert stopped["wall_s_total"] == stopped["wall_s_this_run"] > 0
    _quick(tmp_path, vgg8_weights)
    done = json.loads((tmp_path / "out" / "table1_quick.json").read_text())
    assert done["finished"] and done["computed_this_run"] == 1 and done["timed_cells"] == 3
    assert done["wall_s_total"] == pytest.approx(stopped["wall_s_total"] + done["wall_s_this_run"])
    assert study_report._wall_time_text(tmp_path / "out" / "table1_quick.json", 3) == f"; wall time {done['wall_s_total']:,.0f} s"
    # a record from before nxbar kept time per cell: its total is the last run's, over that run's cells
    old = {k: v for k, v in done.items() if k != "timed_cells"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert study_report._wall_time_text(tmp_path / "old.json", 3).endswith(
        "for 1 of these cells: the runs that made the other 2 stopped before they finished, and their time was not "
        "recorded")


def test_fgsm_gradients_are_computed_once_per_network_and_serve_every_eps(vgg8_weights, monkeypatch):
    """An FGSM eps sweep takes one input gradient per network (software, each chip, with and without an input
    transform), and every cell's adversarial inputs equal FGSM run afresh on that cell's attacker."""
    from nxbar.attacks import fgsm, pixel_budget
    from nxbar.data.load import load_dataset
    from nxbar.evaluation import as_float

    def chip(net, config, **_):  # a different network per chip seed, without circuit solves
        rng = np.random.default_rng(config.seed)
        return net.with_params({k: v * (1 + 0.5 * rng.standard_normal(v.shape)).astype(v.dtype)
                                for k, v in net.params.items() if v.ndim > 1})

    calls = []
    real = ex.gradient_signs
    monkeypatch.setattr(ex, "gradient_signs", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(study_runner, "map_model", chip)
    ds = load_dataset("embedded")
    x, y = ds.images[:3], ds.labels[:3]
    runner = study_runner.Runner(x, y, {"vgg8": vgg8_weights}, IDEAL, None)
    cells = [grid.Cell("vgg8", size, mode, AttackConfig(attack="fgsm", eps=eps, eps_space=space), seed=seed,
                     input_bits=bits)
             for space, eps in (("pixel", 0.05), ("normalized", 0.3)) for bits in (None, 4)
             for size, mode, seed in ((None, "SW", 0), (16, "SH", 0), (16, "HH", 0), (16, "HH", 1))]
    rows = [runner.compute(c) for c in cells]
    assert len(calls) == 6  # (software, chip 0, chip 1) x (no transform, 4-bit inputs), for 16 cells
    for cell, row in zip(cells, rows):
        software = runner.defended(runner.model("vgg8")[0], cell)
        attacker = software if cell.mode in ("SW", "SH") else runner.defended(runner.hardware(cell), cell)
        eps = pixel_budget(cell.attack.eps, cell.attack.eps_space, software.std)
        expected = fgsm(attacker, as_float(x, np.float32), y, eps)
        made = runner.sw_adversarial(cell) if cell.mode != "HH" else runner.adversarial(
            attacker, runner.net_key(cell), cell.attack)
        assert np.array_equal(made, expected)
        victim = software if cell.mode == "SW" else attacker if cell.mode == "HH" else runner.defended(
            runner.hardware(cell), cell)
        assert row["adv_correct"] == count_correct(victim, expected, y)
    assert len(calls) == 6


def test_quick_table3_and_fig9_on_ideal_crossbars(tmp_path, vgg8_weights, vgg8q_weights):
    """Ideal crossbars represent W_q exactly at each layer's own bits and discretized inputs pass through the
    same transform on every side, so SH and HH equal SW cell by cell; the counts are checked independently."""
    from nxbar.data.load import load_dataset
    from nxbar.defences import InputDiscretization

    kw = dict(quick=True, n=8, out=tmp_path, weights={"vgg8": vgg8_weights, "vgg8q": vgg8q_weights},
              base_physics=IDEAL, cache_dir=tmp_path / "cache")
    rows = study_results.read_rows(study_runner.run("table3", **kw))
    assert [(r["model"], r["mode"]) for r in rows] == [(m, mode) for m in ("vgg8", "vgg8q") for mode in ("SW", "SH", "HH")]
    assert [r["layer_bits"] for r in rows] == ["", "", "", "", "2/4/8/None/2/4/8/2", "2/4/8/None/2/4/8/2"]
    ds = load_dataset("embedded")
    for model, stem in (("vgg8", vgg8_weights), ("vgg8q", vgg8q_weights)):
        mine = [(r["clean_correct"], r["adv_correct"]) for r in rows if r["model"] == model]
        assert len(set(mine)) == 1
        assert int(mine[0][0]) == count_correct(load_model(stem)[0], ds.images[:8], ds.labels[:8])
    rows = study_results.read_rows(study_runner.run("fig9", **kw))
    assert [(r["input_bits"], r["mode"]) for r in rows] == [(b, m) for b in ("", "4") for m in ("SW", "SH", "HH")]
    four = [(r["clean_correct"], r["adv_correct"]) for r in rows if r["input_bits"] == "4"]
    assert len(set(four)) == 1
    defended = InputDiscretization(load_model(vgg8_weights)[0], 4)
    assert int(four[0][0]) == count_correct(defended, ds.images[:8], ds.labels[:8])


def test_missing_weights_error(tmp_path):
    with pytest.raises(WeightFileError, match=r"vgg8_none\.json: weight file not found; the vgg8 weights must be "
                                              r"trained first \(tools/train_export\.py --model vgg8\)"):
        study_runner.run("table1", quick=True, n=8, out=tmp_path, weights={"vgg8": tmp_path / "vgg8_none"})
    assert not (tmp_path / "table1_quick.csv").exists()
    with pytest.raises(WeightFileError, match=r"train_export\.py --model vgg8 --quanos-from weights/vgg8_cifar10\)"):
        study_runner.find_weights("vgg8q", {"vgg8q": tmp_path / "vgg8q_none"})


def _write(path, cells, al_of, ca_of=lambda c: 90.0):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=grid.COLUMNS)
        w.writeheader()
        for c in cells:
            al, ca = al_of(c), ca_of(c)
            w.writerow({**dict(zip(grid.KEY_COLUMNS, c.key())), "n": "100", "clean_correct": repr(ca), "adv_correct": "",
                        "CA": repr(ca), "AA": repr(ca - al), "AL": repr(al), "nf": ""})


def test_verdicts_on_hand_made_results(tmp_path):
    sizes = {None: 80.0, 16: 75.0, 32: 74.0, 64: 70.0}
    good = lambda c: sizes[c.size] - (2.0 if c.mode == "HH" else 0.0)  # HH < SH, larger xbar lower, all < SW
    cells = grid.experiment_cells("table2")
    _write(tmp_path / "table2.csv", cells, good)
    v = claims.verdicts(study_results.load_results(tmp_path))
    assert v["C1"][0] == v["C3"][0] == v["C4"][0] == "holds"
    assert v["C4"][1].startswith("15/15 comparisons hold")  # 3 sizes x 5 eps, chip seeds averaged
    assert v["C5"] == ("not run", "no stored results for it") and v["C8"][0] == "not run"
    _write(tmp_path / "fig6.csv", grid.experiment_cells("fig6"), good)  # VGG16 PGD: C9's fig6 part
    assert claims.verdicts(study_results.load_results(tmp_path))["C9"][1].startswith("36/36 comparisons hold")  # 30 vs SW, 6 rises
    # CA is 90 in every cell, so the AL comparisons are AA comparisons too
    in_aa = claims.verdicts_in_aa(study_results.load_results(tmp_path))
    assert in_aa == {"C1": "holds (30/30)", "C3": "holds (20/20)", "C4": "holds (15/15)", "C5": "not run",
                     "C6": "not run", "C8": "not run", "C9": "holds (36/36)", "C10": "not run"}
    assert set(claims.saturated_failures(study_results.load_results(tmp_path)).values()) == {(0, 0, 0, 0)}

    # AA 0 everywhere, CA (= AL) lower on larger crossbars: C1 and C3 hold in AL from clean accuracy alone
    for name in ("table2", "fig6"):
        _write(tmp_path / f"{name}.csv", grid.experiment_cells(name), lambda c: sizes[c.size], lambda c: sizes[c.size])
    v, in_aa = claims.verdicts(study_results.load_results(tmp_path)), claims.verdicts_in_aa(study_results.load_results(tmp_path))
    assert (v["C1"][0], v["C3"][0], v["C4"][0], v["C9"][0]) == ("holds", "holds", "does not hold", "holds")
    assert (in_aa["C1"], in_aa["C3"], in_aa["C4"]) == ("does not hold (0/30)", "does not hold (0/20)",
                                                       "does not hold (0/15)")
    assert in_aa["C9"] == "does not hold (6/36)"  # AA 0 at every eps: no fall left (6 rises of 0), 30 ties with SW
    # every failure there compares clean accuracies only: saturated, in both views
    saturated = claims.saturated_failures(study_results.load_results(tmp_path))
    assert (saturated["C1"], saturated["C3"], saturated["C4"], saturated["C9"]) == (
        (0, 0, 30, 30), (0, 0, 20, 20), (15, 15, 15, 15), (0, 0, 30, 30))
    (tmp_path / "fig6.csv").unlink()

    # AA 1.0% in every cell (the threshold) is saturated, AA 1.1% is not; HH = SH fails C4 either way
    for al, count in ((89.0, 15), (88.9, 0)):
        _write(tmp_path / "table2.csv", cells, lambda c: al)
        assert claims.saturated_failures(study_results.load_results(tmp_path))["C4"] == (count, 15, count, 15)

    # one HH cell (64x64, eps 2/255, all chips) above its SH cell: C4 fails there, with the numbers
    bad = lambda c: 71.5 if (c.size == 64 and c.mode == "HH" and c.attack.eps == 2 / 255) else good(c)
    _write(tmp_path / "table2.csv", cells, bad)
    study_results.copy_paper_tables(PAPER, tmp_path)
    v = claims.verdicts(study_results.load_results(tmp_path))
    assert v["C4"] == ("does not hold", "14/15 comparisons hold; fails: table2 xbar64 eps 2/255 AL HH vs SH: 71.50 vs 70.00")
    assert claims.saturated_failures(study_results.load_results(tmp_path))["C4"] == (0, 1, 0, 1)  # AA 18.5 vs 20: not saturated
    text = study_report.write_report(tmp_path).read_text()
    assert "| C4 | PGD: AL(HH) < AL(SH) (Table II) | does not hold | 14/15" in text
    assert "| does not hold (14/15) | 0 of 1 (AA view: 0 of 1) |" in text
    assert "| vgg8 | - | - | software | SW | 80.00 / 83.66 |" in text  # ours beside the paper's Table II
    assert "Not run: no `table1.csv` yet" in text


def test_defence_verdicts_on_hand_made_results(tmp_path):
    # table3: QUANOS below full precision on 16x16 everywhere -> C8 holds; paper's (F)/(Q) rows beside ours
    _write(tmp_path / "table3.csv", grid.experiment_cells("table3"),
           lambda c: {None: 60.0, 16: 50.0}[c.size] - (25.0 if c.model == "vgg8q" and c.size else 0.0))
    # fig9: flat discretized crossbar rows, 4-bit the lowest at high eps, 2-bit: lower CA, higher AL -> C7 holds
    offset = {None: 10.0, 8: 5.0, 4: 0.0, 2: 2.0}
    fig9 = grid.experiment_cells("fig9")
    al9 = lambda c: (70.0 if c.size is None else 30.0) + offset[c.input_bits] + (c.attack.eps if c.input_bits else 0)
    _write(tmp_path / "fig9.csv", fig9, al9, lambda c: 85.0 if c.input_bits == 2 else 90.0)
    # fig10: FGSM SH 20 < QUANOS 30 < 4-bit 40; PGD QUANOS 10 < SH 20 < 4-bit 40 -> C10 holds
    al10 = lambda c: (40.0 if c.input_bits else 20.0 if c.size else 70.0 if c.model == "vgg16"
                      else 30.0 if c.attack.attack == "fgsm" else 10.0)
    _write(tmp_path / "fig10.csv", grid.experiment_cells("fig10"), al10)
    study_results.copy_paper_tables(PAPER, tmp_path)
    v = claims.verdicts(study_results.load_results(tmp_path))
    assert v["C8"] == ("holds", "12/12 comparisons hold, e.g. table3 xbar16 SH eps 0.05 AL vgg8q vs vgg8: 25.00 vs 50.00")
    # flat: 2 modes x 3 widths; 4-bit vs none/8/2-bit at 2 eps x 2 modes; CA and mean AL for SW, SH, HH
    assert v["C7"] == ("holds", "24/24 comparisons hold, e.g. fig9 xbar32 SH 8-bit input AL spread eps 0.1..0.3 "
                                "vs 5 pp: 0.20 vs 5.00")
    flat_2bit = lambda c: al9(c) + (30 * c.attack.eps if c.input_bits == 2 and c.mode == "HH" else 0)
    _write(tmp_path / "fig9.csv", fig9, flat_2bit, lambda c: 85.0 if c.input_bits == 2 else 90.0)
    assert claims.verdicts(study_results.load_results(tmp_path))["C7"] == (
        "does not hold", "23/24 comparisons hold; fails: fig9 xbar32 HH 2-bit input AL spread eps 0.1..0.3 vs "
                         "5 pp: 6.20 vs 5.00")
    high_4bit = lambda c: al9(c) + (12 if c.input_bits == 4 and c.mode == "SH" and c.attack.eps == 0.3 else 0)
    _write(tmp_path / "fig9.csv", fig9, high_4bit, lambda c: 85.0 if c.input_bits == 2 else 90.0)
    numbers = claims.verdicts(study_results.load_results(tmp_path))["C7"][1]  # the spike also breaks 4-bit SH's flatness
    assert numbers.startswith("19/24 comparisons hold; fails: fig9 xbar32 SH 4-bit input AL spread eps 0.1..0.3")
    assert ("fig9 xbar32 SH eps 0.3 AL 4-bit input vs no discretization: 42.30 vs 40.00; "
            "fig9 xbar32 SH eps 0.3 AL 4-bit input vs 8-bit input: 42.30 vs 35.30; ... (2 more)") in numbers
    assert v["C10"] == ("holds", "22/22 comparisons hold, e.g. fig10 fgsm eps 0.05 AL SH vs 4-bit input: 20.00 vs 40.00")
    text = study_report.write_report(tmp_path).read_text()
    assert "| vgg8q | R_on 20k ON/OFF 10 | - | xbar16 | HH | 25.00 / 23.85 |" in text  # Table III's "HH (Q)" row
    assert "| vgg8 | R_on 20k ON/OFF 10 | 4-bit input | xbar32 | SH |" in text


def test_cli(tmp_path):
    from click.testing import CliRunner

    from cli import main

    def invoke(*args):
        return CliRunner().invoke(main, ["reproduce", *map(str, args)])

    listed = invoke("--list", "--out", tmp_path)
    assert listed.exit_code == 0 and "table1   108 cells    0 stored  FGSM" in listed.output
    assert "nf        27 cells    0 stored  NF" in listed.output
    result = invoke("--report", "--out", tmp_path)  # without --paper: no paper tables beside ours
    assert result.exit_code == 0 and not (tmp_path / "paper").exists()
    result = invoke("--report", "--out", tmp_path, "--paper", PAPER)
    assert result.exit_code == 0 and (tmp_path / "paper" / "table2_pgd_vgg8_cifar10_AL.csv").is_file()
    assert (tmp_path / "README.md").read_text().count("| not run |") == 11 + 8  # C1..C11, the AA view of 8 (AA_VIEW)
    _write(tmp_path / "table2.csv", grid.experiment_cells("table2"), lambda c: 10.0)
    assert "table2    47 cells   47 stored  PGD" in invoke("--list", "--out", tmp_path).output
    result = invoke("--figures", "--out", tmp_path)
    if importlib.util.find_spec("matplotlib"):
        assert result.exit_code == 0 and result.output == f"wrote {tmp_path / 'table2.png'}\n", result.output
        assert "![table2](table2.png)" not in (tmp_path / "README.md").read_text()
        invoke("--report", "--out", tmp_path)  # the report shows the figure below its table
        text = (tmp_path / "README.md").read_text()
        assert "|\n\n![table2](table2.png)\n\n## fig4" in text and text.count("](") == 1
    else:
        assert result.exit_code == 2 and "nxbar[plot]" in result.output
    for args, message in (((), "give an experiment NAME"), (("table9",), "experiment 'table9' unknown")):
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output


def test_clean_accuracy_verdict_and_table_on_hand_made_results(tmp_path):
    ca = {None: 91.0, 16: 90.0, 32: 89.5, 64: 88.0}  # software > 16 > 32 > 64 for both models -> C2 holds
    cells = grid.experiment_cells("fig4")
    _write(tmp_path / "fig4.csv", cells, lambda c: 0.0, lambda c: ca[c.size] - (1.0 if c.model == "vgg16" else 0.0))
    v = claims.verdicts(study_results.load_results(tmp_path))
    assert v["C2"] == ("holds", "10/10 comparisons hold, e.g. fig4 vgg8 CA xbar16 vs software: 90.00 vs 91.00")
    assert "| vgg16 | 90.00 | 89.00 | 88.50 | 87.00 |" in study_report.write_report(tmp_path).read_text()

    ca[64] = 89.75  # 64x64 above 32x32: fails for both models, with the numbers
    _write(tmp_path / "fig4.csv", cells, lambda c: 0.0, lambda c: ca[c.size] - (1.0 if c.model == "vgg16" else 0.0))
    assert claims.verdicts(study_results.load_results(tmp_path))["C2"] == (
        "does not hold", "8/10 comparisons hold; fails: fig4 vgg8 CA xbar64 vs xbar32: 89.75 vs 89.50; "
                         "fig4 vgg16 CA xbar64 vs xbar32: 88.75 vs 88.50")


def _threats_json(model, failing_check=None):
    def row(attacker, victim, al, aa, std=None):
        extra = {} if std is None else {"CA_std": 0.0, "AA_std": 0.0, "AL_std": std,
                                         "per_seed": [{"seed": s, "CA": al + aa, "AA": aa, "AL": al} for s in (0, 1, 2)]}
        return {"attacker": attacker, "victim": victim, "attack": "pgd", "eps": 8 / 255, "eps_space": "pixel",
                "steps": 10, "n": 500, "CA": al + aa, "AA": aa, "AL": al, **extra}

    rows = [row("white-box", "software", 85.0, 5.0), row("white-box", "chips", 60.0, 25.0, 1.5),
            row("software", "software", 85.0, 5.0), row("software", "chips", 40.0, 45.0, 2.0),
            row("eot", "software", 50.0, 40.0), row("eot", "chips", 84.6, 0.4, 0.5)]
    check = {"name": "loss_increases", "values": {"loss_path": [0.3, 2.5]}, "passed": True}
    checks = {"software": [check], "chip 0": [{**check, "passed": check["name"] != failing_check}]}
    attack = {"attack": "pgd", "eps": 8 / 255, "eps_space": "pixel", "steps": 10}
    return {"model": model, "config": {"size": 32}, "attack": attack, "rows": rows, "checks": checks,
            "sanity_images": 100, "n_images": 500}


def test_report_threat_section_from_stored_matrices(tmp_path):
    text = study_report.write_report(tmp_path).read_text()
    assert "of the white-box PGD behind these claims: not run yet" in text
    assert "Not run: no `threats/*.json` yet" in text

    (tmp_path / "threats").mkdir()
    (tmp_path / "threats" / "vgg8_xbar32.json").write_text(json.dumps(_threats_json("vgg8", "loss_increases")))
    text = study_report.write_report(tmp_path).read_text()
    assert "behind these claims: 1/2 pass; failing: vgg8_xbar32 chip 0 loss_increases (section" in text
    assert ("### vgg8_xbar32: vgg8 on 32x32 crossbars, PGD eps 8/255 (pixel), 10 steps, 500 images, "
            "victim chips 0, 1, 2") in text
    # SW CA 90, AA 5, AL 85; chips CA 85: white-box AL 60 (AA 25%, 125 of 500: kept 20 > noise
    # 200 sqrt(p (1 - p) / 504) = 3.87 with p = 127/504), software AL 40 (kept 40), eot AL 84.6 (AA 0.4%,
    # 2 images: kept -4.6 < noise 0.79 with p = 4/504); every gap includes the 5 pp of clean accuracy lost
    assert ("| white-box | the victim itself (SW on software, HH on a chip) | 85.00 | 60.00 ± 1.50 | "
            "+25.00 | +5.00 | +20.00 (noise 3.87) | yes |") in text
    assert ("| eot | the design and the chip distribution (EOT over sampled chips) | 50.00 | 84.60 ± 0.50 | "
            "+0.40 | +5.00 | -4.60 (noise 0.79) | no |") in text
    assert ("The study's gaps: SH 45.00 pp (CA lost 5.00, AA kept 40.00), HH 25.00 pp (CA lost 5.00, AA kept "
            "20.00). Strongest attacker on the chips: eot (AL 84.60), gap +0.40 pp: the robustness does not "
            "survive it.") in text
    assert "| chip 0 | loss_increases | FAIL | mean loss 0.300 at the start, 2.500 after the last step |" in text

    def chips_at(ca):  # a network the chips do not protect: AA 5% everywhere, the chips' clean accuracy `ca`
        flat = _threats_json("vgg8")
        for r in flat["rows"]:
            r.update(CA=90.0 if r["victim"] == "software" else ca, AA=5.0)
            r["AL"] = r["CA"] - r["AA"]
        (tmp_path / "threats" / "vgg8_xbar32.json").write_text(json.dumps(flat))
        return study_report.write_report(tmp_path).read_text()

    assert ("The study's gaps: SH 0.00 pp (CA lost 0.00, AA kept 0.00), HH 0.00 pp (CA lost 0.00, AA kept 0.00). "
            "Strongest attacker on the chips: white-box (AL 85.00), gap +0.00 pp. There is no robustness to lose "
            "here: the study's own attacks (SH, HH) leave gaps within noise.") in chips_at(90.0)
    # a lower AL from clean accuracy alone is not robustness
    assert ("The study's gaps: SH 10.00 pp (CA lost 10.00, AA kept 0.00), HH 10.00 pp (CA lost 10.00, AA kept "
            "0.00). Strongest attacker on the chips: white-box (AL 75.00), gap +10.00 pp. There is no robustness "
            "to lose here: under the study's own attacks (SH, HH) the chips keep no more adversarial images than "
            "software beyond noise; their lower AL is clean accuracy lost.") in chips_at(80.0)


def test_cells_shared_between_experiments_are_copied_not_recomputed(tmp_path, vgg8_weights, monkeypatch):
    kw = {"quick": True, "n": 2, "weights": {"vgg8": vgg8_weights}, "base_physics": IDEAL,
          "cache_dir": tmp_path / "c"}
    monkeypatch.setattr(study_runner, "map_model", lambda net, config, **_: net)  # the ideal chip is the network; no solves
    study_runner.run("fig8a", out=tmp_path / "a", **kw)
    calls = []
    real = ex.make_adversarial
    monkeypatch.setattr(ex, "make_adversarial", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = study_runner.run("fig8b", out=tmp_path / "a", **kw)
    # fig8b quick: SW + (ON/OFF 10, 2000) x (SH, HH) on 32x32; SW and the ON/OFF 10 pair are fig8a's R_on 20k rows
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["copied_this_run"] == {"fig8a": 3} and record["computed_this_run"] == 2 and record["finished"]
    # the ON/OFF 2000 HH attack only: its SH cell takes the SW inputs that fig8a left in the disk cache (PGD)
    assert len(calls) == 1
    monkeypatch.setattr(ex, "make_adversarial", real)
    entries = sorted(p.name for p in (tmp_path / "c").glob("adversarial-*"))
    assert len(entries) == 2  # one entry (.npz + .json): the SW PGD inputs of the one quick eps
    fresh = study_runner.run("fig8b", out=tmp_path / "b", **{**kw, "cache_dir": tmp_path / "d"})  # nothing stored: all computed
    assert json.loads(fresh.with_suffix(".json").read_text())["copied_this_run"] == {}
    assert path.read_text() == fresh.read_text()
    from nxbar import cache as disk_cache

    key = entries[0].split("-", 1)[1].removesuffix(".json")
    x_adv = {"x_adv": ((2, 32, 32, 3), np.float32)}
    assert np.array_equal(disk_cache.load(key, tmp_path / "c", "adversarial", expect=x_adv)[0]["x_adv"],
                          disk_cache.load(key, tmp_path / "d", "adversarial", expect=x_adv)[0]["x_adv"])
    # what the entry depends on, besides the images and labels hashed into its key
    fields = json.loads((tmp_path / "c" / entries[0]).read_text())
    assert fields["weights_sha256"] == [file_sha256(str(vgg8_weights) + s) for s in (".npz", ".json")]
    assert fields["software adversarial inputs"]["seed"] == 0 and fields["input_bits"] is None

    # other weights, n or physics: nothing is taken from fig8a
    hashes = {"vgg8": file_sha256(str(vgg8_weights) + ".npz")}
    assert len(study_results.stored_elsewhere(tmp_path / "a", "fig8b", True, 2, IDEAL, hashes)) == 5  # fig8a's rows only
    assert study_results.stored_elsewhere(tmp_path / "a", "fig8b", True, 2, IDEAL, {"vgg8": "0" * 64}) == {}
    assert study_results.stored_elsewhere(tmp_path / "a", "fig8b", True, 4, IDEAL, hashes) == {}
    assert study_results.stored_elsewhere(tmp_path / "a", "fig8b", True, 2, None, hashes) == {}

    # resuming a table with other weights than its json records is refused
    other = tmp_path / "w" / "vgg8_cifar10"
    save_weights(other, random_params("vgg8", num_classes=10, input_size=32, seed=5), META)
    (tmp_path / "b" / "fig8b_quick.csv").write_text("".join(fresh.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"fig8b_quick\.csv holds cells made with other vgg8 weights than "
                                         r".*w/vgg8_cifar10\.npz"):
        study_runner.run("fig8b", out=tmp_path / "b", **{**kw, "weights": {"vgg8": other}})


def test_report_lists_the_shipped_networks_with_quanos_ans_and_bits(tmp_path):
    def acc(correct, total):
        return {"correct": correct, "total": total, "accuracy": correct / total}

    full = {"arch": "vgg8", "training": {"epochs": 15, "final_train_loss": 0.12345},  # tools/train_export.py's layout
            "accuracy": {"embedded_lossless_test": acc(912, 1000), "jpeg_test": acc(9050, 10000)}}
    plan = {"ans": {"conv1": 0.5, "fc1": 0.25}, "bits": {"conv1": 2, "fc1": 4},
            "attack": {"attack": "fgsm", "eps": 0.1},
            "ans_images": "first 512 training images", "rule": "Rule: the more sensitive\n    half gets 2 bits.",
            "from": {"weights": "weights/vgg8_cifar10.npz", "accuracy": full["accuracy"]}}
    quanos = {**full, "model": "vgg8q", "training": {"epochs": 3, "final_train_loss": 0.12345}, "quanos": plan,
              "accuracy": {"embedded_lossless_test": acc(897, 1000), "jpeg_test": acc(8900, 10000)}}
    weights = tmp_path / "w"
    weights.mkdir()
    text = study_report.write_report(tmp_path, weights_dir=weights).read_text()
    assert "None yet: `tools/train_export.py` trains and exports them" in text
    (weights / "vgg8_cifar10.json").write_text(json.dumps(full))
    (weights / "vgg8q_cifar10.json").write_text(json.dumps(quanos))
    (weights / "README.md").write_text("not a weight file")
    text = study_report.write_report(tmp_path, weights_dir=weights).read_text()
    assert "| vgg8_cifar10 | vgg8 | 15 | 0.1235 | 91.20 (912/1000) | 90.50 (9050/10000) |" in text
    assert "| vgg8q_cifar10 | vgg8q | 3 | 0.1235 | 89.70 (897/1000) | 89.00 (8900/10000) |" in text
    assert ("vgg8q_cifar10 (QUANOS, docs/protocol.md section 6.2): ANS under FGSM eps 0.1 on the first 512 training "
            "images, measured on `weights/vgg8_cifar10.npz`. Rule: the more sensitive half gets 2 bits.") in text
    assert "| conv1 | 0.5000 | 2 |\n| fc1 | 0.2500 | 4 |" in text
    assert "Clean accuracy on the 1,000 embedded images: 89.70% against 91.20% in full precision (-1.50 pp)." in text


def test_report_shows_the_stored_main_command(tmp_path):
    assert "Not run: no `evaluate_*.json` yet" in study_report.write_report(tmp_path, weights_dir=tmp_path).read_text()
    rows = [{"mode": m, "attack": "pgd", "eps": e, "eps_space": "pixel", "CA": 90.0, "AA": aa, "AL": 90.0 - aa}
            for m, e, aa in (("SW", 8 / 255, 1.0), ("HH", 8 / 255, 30.5), ("HH", 0.03, 31.0))]
    record = {"command": "nxbar evaluate --model vgg8 --xbar 32 --attack pgd", "model": {"name": "vgg8"},
              "data": {"n_images": 1000, "source": "embedded"}, "results": rows,
              "timings": {"load_s": 1.0, "map_s": 12.4, "attack_s": 700.2, "total_s": 713.6},
              "versions": {"nxbar": "0.1.0"}}
    (tmp_path / "evaluate_vgg8_xbar32_pgd.json").write_text(json.dumps(record))
    text = study_report.write_report(tmp_path, weights_dir=tmp_path).read_text()
    assert ("`nxbar evaluate --model vgg8 --xbar 32 --attack pgd` (evaluate_vgg8_xbar32_pgd.json): vgg8 on 1000 "
            "images of embedded; wall time 714 s (mapping 12 s, attacks and evaluation 700 s), nxbar 0.1.0.") in text
    assert "| SW | 8/255 (pixel) | 90.00 | 1.00 | 89.00 |\n| HH | 8/255 (pixel) | 90.00 | 30.50 | 59.50 |" in text
    assert "| HH | 0.03 (pixel) | 90.00 | 31.00 | 59.00 |" in text  # not a whole number of 1/255 steps


def _stub_run(tmp_path, weights, monkeypatch):
    """A table1 quick run on 2 images whose cells get made-up results, so that only its CSV and json handling
    runs: (run(), the modes of the cells computed so far)."""
    computed = []

    def compute(self, cell):
        computed.append(cell.mode)
        return {"n": 2, "clean_correct": 1, "CA": 50.0, "adv_correct": 0, "AA": 0.0, "AL": 50.0}

    monkeypatch.setattr(study_runner.Runner, "compute", compute)
    return (lambda: study_runner.run("table1", quick=True, n=2, out=tmp_path, weights={"vgg8": weights}, base_physics=IDEAL,
                           cache_dir=tmp_path / "cache")), computed


def test_a_torn_last_csv_row_is_dropped_and_computed_again(tmp_path, vgg8_weights, monkeypatch):
    """A run killed while appending a row leaves it cut short; the next run drops it (with a warning naming the
    file and the text) and computes that cell again, instead of appending to it."""
    import re

    run, computed = _stub_run(tmp_path, vgg8_weights, monkeypatch)
    path = run()
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    assert computed == ["SW", "SH", "HH"] and len(lines) == 4
    for torn in (whole[:-9], whole[:-9] + lines[-1]):  # cut inside the HH row; then a row appended to the cut one
        path.write_bytes(torn)
        computed.clear()
        with pytest.warns(UserWarning, match=re.escape(f"{path}: dropped its last row")) as caught:
            run()
        assert repr(torn[len(b"".join(lines[:-1])):].decode()) in str(caught[0].message)
        assert computed == ["HH"] and path.read_bytes() == whole
    path.write_bytes(lines[0])  # a run stopped after the header, before its first row
    computed.clear()
    run()
    assert computed == ["SW", "SH", "HH"] and path.read_bytes() == whole


def test_the_run_record_is_replaced_whole_and_a_torn_one_is_named(tmp_path, vgg8_weights, monkeypatch):
    import os
    import re

    run, computed = _stub_run(tmp_path, vgg8_weights, monkeypatch)
    path = run()
    record = path.with_suffix(".json")
    before = record.read_bytes()
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))  # one cell left to compute

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError, match="No space left on device"):
            run()
    assert record.read_bytes() == before  # the old record, whole; no temporary file left beside it
    assert {p.name for p in tmp_path.iterdir()} - {"table1_quick.png"} == {"table1_quick.csv", "table1_quick.json"}
    record.write_bytes(before[:len(before) // 2])  # a torn record, as a plain rewrite cut short leaves it
    with pytest.raises(ValueError, match=rf"^{re.escape(str(record))} cannot be read \(.+\); delete it to start a "
                                         "fresh record"):
        run()
    record.unlink()
    computed.clear()
    run()
    assert computed == ["HH"] and json.loads(record.read_text())["computed_this_run"] == 1


def test_a_stored_pgd_entry_of_other_arrays_is_made_again(tmp_path, vgg8_weights):
    from nxbar.data.load import load_dataset

    ds = load_dataset("embedded")
    cell = next(c for c in grid.experiment_cells("fig8a", quick=True) if c.mode == "SH")
    assert cell.attack.attack == "pgd"
    made = []

    def make():
        made.append(np.full((2, 32, 32, 3), len(made), np.float32))
        return made[-1]

    runner = study_runner.Runner(ds.images[:2], ds.labels[:2], {"vgg8": vgg8_weights}, IDEAL, tmp_path)

    def stored():  # stored_pgd memoises nothing: every call reads the disk cache
        return runner.stored_pgd(cell, make)

    assert stored() is made[0]
    (npz,) = tmp_path.glob("adversarial-*.npz")
    x = made[0]
    for i, damage in enumerate((lambda: npz.write_bytes(b""), lambda: np.savez(npz, x_adv=x.astype(np.float64)),
                                lambda: np.savez(npz, x_adv=x[:1]), lambda: np.savez(npz, x=x))):
        hit = stored()  # the entry stored last: read, not made
        assert len(made) == i + 1 and hit.dtype == np.float32 and np.array_equal(hit, made[-1])
        damage()
        assert stored() is made[-1] and len(made) == i + 2  # made again (and stored again)


def test_report_prints_absolute_paths_as_file_names():
    data = "/somewhere/shared/data/x.zip"  # a weight file's json records where it was trained
    assert study_report._file_names(f"image folder {data}, split 'train'") == "image folder x.zip, split 'train'"
    assert study_report._file_names(f"(`{data}`).") == "(`x.zip`)."
    assert study_report._file_names("eps 8/255 on 16/32/64, weights/vgg8.npz") == "eps 8/255 on 16/32/64, weights/vgg8.npz"