"""The robustness study: the parasitic scale, the points rule, the attack grid, and the whole quick study through
the command line (sweep, points, attacks with per-image outcomes, statistics, figures, report), resumed."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from nxbar.crossbar.circuit import transfer_matrix
from nxbar.crossbar.config import PARASITIC_FIELDS, CrossbarConfig
from nxbar.files import CsvLog
from nxbar.study import nonideality, robustness, robustness_report, verdicts
from nxbar.study.nonideality import FULL, QUICK, SWEEP_COLUMNS, choose_points, sweep_key


def test_parasitic_scale_multiplies_all_four_resistances():
    g = np.random.default_rng(0).uniform(5e-6, 5e-5, size=(2, 6, 6))
    base = CrossbarConfig(size=6, r_source_ohm=50.0, r_sink_ohm=30.0, r_wire_row_ohm=2.0, r_wire_col_ohm=3.0)
    scaled = base.replace(parasitic_scale=2.5)
    doubled = base.replace(**{f: 2.5 * getattr(base, f) for f in PARASITIC_FIELDS})
    assert scaled.parasitics_ohm == doubled.parasitics_ohm
    np.testing.assert_array_equal(transfer_matrix(g, **scaled.parasitics_ohm), transfer_matrix(g, **doubled.parasitics_ohm))
    assert not np.allclose(transfer_matrix(g, **scaled.parasitics_ohm), transfer_matrix(g, **base.parasitics_ohm))
    np.testing.assert_array_equal(transfer_matrix(g, **base.replace(parasitic_scale=0).parasitics_ohm), g)  # ideal
    assert scaled.as_dict()["parasitic_scale"] == 2.5
    with pytest.raises(ValueError, match="parasitic_scale"):
        CrossbarConfig(parasitic_scale=-1)


def test_cli_parasitic_scale_option():
    runner = CliRunner()
    zero = runner.invoke(cli.main, ["nf", "--xbar", "8", "--tiles", "2", "--parasitic-scale", "0"])
    assert zero.exit_code == 0, zero.output
    assert float(zero.output.split()[-1]) == 0.0
    twice = runner.invoke(cli.main, ["nf", "--xbar", "8", "--tiles", "2", "--parasitic-scale", "2"])
    by_hand = runner.invoke(cli.main, ["nf", "--xbar", "8", "--tiles", "2", "--r-source", "200", "--r-sink", "200",
                                       "--r-wire-row", "2", "--r-wire-col", "2"])
    assert twice.output.split()[-1] == by_hand.output.split()[-1]
    bad = runner.invoke(cli.main, ["nf", "--xbar", "8", "--parasitic-scale", "-2"])
    assert bad.exit_code != 0 and "parasitic_scale" in bad.output


def _rows(drop, sizes=(32,), scales=None, design=FULL):
    """Sweep rows of a synthetic network whose chip-mean CA drop at scale s is drop(size, s)."""
    rows = [{"xbar": "software", "CA": "90.0"}]
    for size in sizes:
        for s in scales or design.scales:
            for chip in design.chips:
                rows.append({**dict(zip(SWEEP_COLUMNS, sweep_key(size, design.point_sigma, s, chip))),
                             "CA": repr(90.0 - drop(size, s) + (chip - 1) * 0.1), "nf": "0.1"})
    return rows


def _search(drop, design):
    """Run the rule as the study does: measure what it asks for until it chooses."""
    sizes = sorted({design.technology_size, *dict(design.targets_pp)})
    rows, asked = _rows(drop, sizes, design=design), []
    while True:
        more, record = choose_points(rows, design)
        if record is not None:
            return record, asked
        asked.append(sorted({s for _, s in more}))
        for size, s in more:
            rows += _rows(drop, (size,), (s,), design)[1:]


def test_points_rule_refines_in_quarter_steps_around_the_crossing():
    design = replace(FULL, targets_pp=((32, 9.3),), sizes=(32,))
    record, asked = _search(lambda size, s: 3.0 * (s - 1), design)  # drops 0, 1.5, 3, 6, 12 on the grid
    assert asked == [[3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75]]  # between 3 (6 pp) and 5 (12 pp)
    assert record["chosen_scale"]["technology"] == 4.0  # 9.0 pp is closest to 9.3 (4.25: 9.75)
    assert record["points"]["technology"]["32"] == {"sigma": 0.1, "parasitic_scale": 4.0}
    assert record["points"]["default"]["32"] == {}
    assert "Clean accuracy only" in record["rule"]


def test_points_rule_extends_the_grid_upward_and_stops_at_max_scale():
    design = replace(FULL, targets_pp=((32, 9.3),), sizes=(32,))
    record, asked = _search(lambda size, s: 1.0 * (s - 1), design)  # 4 pp at s = 5
    assert asked == [[6.0], [7.0], [8.0], [9.0], [10.0]]
    assert record["chosen_scale"]["technology"] == 10.0  # no s reaches 9.3 pp up to max_scale: the closest


def test_matched_and_technology_points_per_size():
    design = replace(FULL, scales=(1.0, 2.0, 3.0, 4.0))
    record, _ = _search(lambda size, s: (s - 1) * size / 8, design)  # 2, 4, 8 pp per unit of s
    assert record["chosen_scale"] == {"technology": 3.25, "matched 16": 5.25, "matched 32": 3.25, "matched 64": 2.75}
    assert {k: v["parasitic_scale"] for k, v in record["points"]["matched"].items()} == {
        "16": 5.25, "32": 3.25, "64": 2.75}
    assert all(v["parasitic_scale"] == 3.25 for v in record["points"]["technology"].values())


def test_attack_grid_shares_cells_between_points_with_the_same_physics():
    points = {"default": {"16": {}, "32": {}}, "technology": {s: {"sigma": 0.1, "parasitic_scale": 2.0} for s in ("16", "32")},
              "matched": {"16": {"sigma": 0.1, "parasitic_scale": 1.0}, "32": {"sigma": 0.1, "parasitic_scale": 2.0}}}
    design = replace(FULL, sizes=(16, 32), chips=(0, 1))
    cells = robustness.attack_cells(design, points)
    keys = [c.key() for c in cells]
    assert len(keys) == len(set(keys)) and len({c.file_name() for c in cells}) == len(cells)
    by_points = {c.points for c in cells}
    assert ("technology", "matched") in by_points and ("matched", "default") in by_points  # same chip physics
    n_attacks, n_variant = len(design.attacks), len(design.variant_attacks)
    assert len(cells) == n_attacks + 2 * (4 * 2 * n_attacks + len(design.variants) * 2 * n_variant)
    assert cells[0].cell.mode == "SW" and cells[0].points == ("software",)


def test_csv_log_resumes_and_refuses_another_header(tmp_path):
    path = tmp_path / "a.csv"
    with CsvLog(path, ("x", "y")) as log:
        log.append({"x": 1, "y": 2})
    with open(path, "a") as f:
        f.write("3,")  # a row cut short by a stop
    torn = []
    with CsvLog(path, ("x", "y"), on_torn=torn.append) as log:
        assert log.rows == [{"x": "1", "y": "2"}] and torn == ["3,"]
        log.append({"x": 4})
    assert path.read_text().splitlines() == ["x,y", "1,2", "4,"]
    with pytest.raises(ValueError, match="columns x, y, not a, b"):
        CsvLog(path, ("a", "b"))


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    """The quick study run through `nxbar robustness --quick` with the shipped VGG8 weights."""
    out = tmp_path_factory.mktemp("robustness")
    env = {"NXBAR_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    result = CliRunner().invoke(cli.main, ["robustness", "--quick", "--out", str(out), "--resamples", "500"], env=env)
    assert result.exit_code == 0, result.output
    return out, env, result.output


def test_quick_study_writes_every_file_of_the_contract(quick_study):
    out, _, output = quick_study
    d = out / "robustness_quick"
    assert {p.name for p in d.iterdir()} >= {"sweep.csv", "points.json", "attacks.csv", "outcomes", "verdicts.csv",
                                             "ca_vs_nf.png", "frontier.png", "study.json"}
    sweep = list(csv.DictReader(open(d / "sweep.csv")))
    assert tuple(sweep[0]) == SWEEP_COLUMNS and sweep[0]["xbar"] == "software"
    assert len(sweep) == 1 + len(nonideality.sweep_grid(QUICK))
    record = json.loads((d / "points.json").read_text())
    assert set(record["points"]) == {"default", "technology", "matched"} and record["rule"]
    attacks = list(csv.DictReader(open(d / "attacks.csv")))
    assert len(attacks) == len(robustness.attack_cells(QUICK, record["points"]))
    for r in attacks:
        out_file = robustness.load_outcomes(d / "outcomes" / r["outcomes"])
        assert out_file["clean_correct"].dtype == bool and len(out_file["adv_correct"]) == int(r["n"]) == QUICK.n
        assert int(out_file["clean_correct"].sum()) == int(r["clean_correct"])
        assert int(out_file["adv_correct"].sum()) == int(r["adv_correct"])
        assert json.loads(str(out_file["key"]))["mode"] == r["mode"]
        assert float(r["AL"]) == pytest.approx(float(r["CA"]) - float(r["AA"]))
    # SW and SH evaluate the same adversarial images; SH and HH the same network, so the same clean outcomes
    sh = [r for r in attacks if r["mode"] == "SH"]
    hh = {(r["xbar"], r["parasitic_scale"], r["r_off_ohm"], r["attack"]): r for r in attacks if r["mode"] == "HH"}
    assert all(hh[(r["xbar"], r["parasitic_scale"], r["r_off_ohm"], r["attack"])]["clean_correct"] == r["clean_correct"]
               for r in sh)
    rows = list(csv.DictReader(open(d / "verdicts.csv")))
    assert tuple(rows[0]) == verdicts.VERDICT_COLUMNS
    assert {r["claim"] for r in rows} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert {r["point"] for r in rows} == {"default", "technology", "matched"}
    for r in rows:
        assert float(r["ci_low"]) <= float(r["diff"]) + 1e-9 and float(r["diff"]) <= float(r["ci_high"]) + 1e-9
        assert 0 <= float(r["p_mcnemar"]) <= float(r["p_holm"]) <= 1
        assert r["verdict"] in ("holds", "reversed", "not distinguishable")
    assert "operating points" in output


def test_quick_study_resumes_without_computing_again(quick_study):
    out, env, _ = quick_study
    d = out / "robustness_quick"
    before = (d / "attacks.csv").read_text()
    again = CliRunner().invoke(cli.main, ["robustness", "--quick", "--out", str(out), "--resamples", "500"], env=env)
    assert again.exit_code == 0, again.output
    assert "[1/" not in again.output  # no cell computed
    assert (d / "attacks.csv").read_text() == before


def test_quick_study_report_section_answers_at_each_point(quick_study):
    out, _, _ = quick_study
    text = "\n".join(robustness_report.section(out, QUICK))
    for point in ("default", "technology", "matched"):
        assert f"**{point}**" in text
    assert "Rule: Clean accuracy only" in text and "Claims with statistical verdicts" in text
    assert "frontier.png" in text and "ca_vs_nf.png" in text


def test_points_are_chosen_once(quick_study, tmp_path):
    out, env, _ = quick_study
    d = out / "robustness_quick"
    record = json.loads((d / "points.json").read_text())
    (d / "points.json").write_text(json.dumps({**record, "chosen_scale": {"technology": 99}}))
    try:
        bad = CliRunner().invoke(cli.main, ["robustness", "--quick", "--out", str(out)], env=env)
        assert bad.exit_code != 0 and "chosen once" in bad.output
    finally:
        (d / "points.json").write_text(json.dumps(record, indent=2) + "\n")


def test_quick_adaptive_attackers_at_the_chosen_points(quick_study):
    from nxbar.study import adaptive, adaptive_report
    from nxbar.reproducibility import from_bits

    out, env, _ = quick_study
    result = CliRunner().invoke(cli.main, ["adaptive", "--quick", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    design = adaptive.QUICK_ADAPTIVE
    points = json.loads((out / "robustness_quick" / "points.json").read_text())["points"]
    files = adaptive.threat_files(design, points, out)
    assert files and all(p.is_file() and p.parent == out / "threats" for p in files)
    report = json.loads(next(iter(files)).read_text())
    assert report["attack"]["alpha"] == pytest.approx(report["attack"]["eps"] / 4)
    per_seed = next(r for r in report["rows"] if r["victim"] == "chips")["per_seed"][0]
    assert len(from_bits(per_seed["outcomes"]["adv_correct"])) == design.n
    gains = adaptive_report.threat_gains(report)
    assert {g["attacker"] for g in gains} == {"white-box", "software", "nominal", "eot", "transfer"}
    apgd = list(csv.DictReader(open(out / "robustness_quick" / "adaptive.csv")))
    assert {r["mode"] for r in apgd} == {"SW", "HH"} and all(r["attack"] == "apgd" for r in apgd)
    stochastic = json.loads((out / "robustness_quick" / "stochastic.json").read_text())
    assert list(stochastic["cells"]) == ["SH", "HH one read", "HH EOT k=1", "HH EOT k=2"]
    assert all(c["n"] == design.n == len(c["outcomes"]["clean_correct"]) for c in stochastic["cells"].values())
    assert {c["verdict"] for c in stochastic["vs_SH"]} <= {"holds", "reversed", "not distinguishable"}
    text = "\n".join(adaptive_report.section(out, design))
    assert "Adaptive attackers" in text and "AA gained over SW" in text and "Stochastic hardware" in text
    again = CliRunner().invoke(cli.main, ["adaptive", "--quick", "--out", str(out)], env=env)
    assert again.exit_code == 0 and "[1/" not in again.output and "threat matrix" not in again.output
