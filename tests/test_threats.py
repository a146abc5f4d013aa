"""Attackers beyond SW/SH/HH (nxbar.threats) on a linear softmax network mapped onto 16x16 crossbars."""

import contextlib
import json

import numpy as np
import pytest
from conftest import LinearNet

from nxbar.crossbar.config import CrossbarConfig
from nxbar.evaluation import AttackConfig, evaluate_modes, make_adversarial
from nxbar.reproducibility import from_bits
from nxbar.threats import (
    ATTACKERS,
    EOTModel,
    chip,
    format_report,
    nominal_chip,
    robustness,
    threat_matrix,
    threat_report,
    transfer,
)

SHAPE, CLASSES = (8, 8, 3), 4
CONFIG = CrossbarConfig(size=16, sigma=0.1)  # default parasitics and variation: every chip differs
ATTACK = AttackConfig(eps=8 / 255, steps=5, alpha=2 / 255, seed=1)


@pytest.fixture(scope="module")
def net():
    rng = np.random.default_rng(0)
    return LinearNet({"fc1.weight": rng.standard_normal((CLASSES, int(np.prod(SHAPE)))) * 0.1,
                      "fc1.bias": rng.standard_normal(CLASSES) * 0.1})


@pytest.fixture(scope="module")
def data(net):
    x = np.random.default_rng(1).uniform(0, 1, (30, *SHAPE))
    return x, net.predict(x)


def test_eot_over_one_chip_is_hh(net, data):
    x, y = data
    a = chip(net, CONFIG, 3, cache=False)
    hh = make_adversarial(a, x, y, ATTACK)
    assert np.array_equal(make_adversarial(EOTModel([a]), x, y, ATTACK), hh)
    assert not np.array_equal(make_adversarial(chip(net, CONFIG, 4, cache=False), x, y, ATTACK), hh)


def test_eot_loss_and_gradient_are_the_means_over_chips(net, data):
    x, y = data
    chips = [chip(net, CONFIG, s, cache=False) for s in (5, 6, 7)]
    loss, grad = EOTModel(chips).loss_and_input_grad(x, y)
    pairs = [c.loss_and_input_grad(x, y) for c in chips]
    assert np.isclose(loss, np.mean([p[0] for p in pairs]))
    assert np.allclose(grad, np.mean([p[1] for p in pairs], axis=0), rtol=1e-12, atol=0)
    assert not np.allclose(grad, pairs[0][1])  # the chips differ, so the mean is not any one of them
    with pytest.raises(ValueError, match="at least one model"):
        EOTModel([])


def test_transfer_from_a_chip_to_itself_is_hh(net, data):
    x, y = data
    a = chip(net, CONFIG, 3, cache=False)
    (hh,) = evaluate_modes(net, a, x, y, [ATTACK], modes=("hh",))
    same = transfer(chip(net, CONFIG, 3, cache=False), a, x, y, ATTACK)  # an independently mapped copy of chip 3
    assert {k: same[k] for k in ("CA", "AA", "AL")} == {k: hh[k] for k in ("CA", "AA", "AL")}
    assert hh["AL"] > 0


def test_nominal_attacker_without_variation_is_hh(net, data):
    x, y = data
    exact = CONFIG.replace(sigma=0.0, seed=9)
    nominal = nominal_chip(net, exact, cache=False)
    hh = chip(net, exact, 9, cache=False)
    assert np.array_equal(nominal.params["fc1.weight"], hh.params["fc1.weight"])
    assert np.array_equal(make_adversarial(nominal, x, y, ATTACK), make_adversarial(hh, x, y, ATTACK))
    # with variation the nominal model is not the chip
    assert not np.array_equal(nominal_chip(net, CONFIG, cache=False).params["fc1.weight"],
                              chip(net, CONFIG, 9, cache=False).params["fc1.weight"])


def test_threat_matrix(net, data, tmp_path):
    x, y = data
    rows = threat_matrix(net, CONFIG, x, y, ATTACK, victim_seeds=(0, 1), eot_seeds=(10, 11), transfer_seed=20,
                         cache_dir=tmp_path)
    assert [(r["attacker"], r["victim"]) for r in rows] == [(a, v) for a in ATTACKERS for v in ("software", "chips")]
    by = {(r["attacker"], r["victim"]): r for r in rows}
    (sw,) = evaluate_modes(net, None, x, y, [ATTACK], modes=("sw",))
    for attacker in ("white-box", "software"):
        assert by[attacker, "software"]["AA"] == sw["AA"]
    for seed_index, seed in enumerate((0, 1)):
        v = chip(net, CONFIG, seed, cache=False)
        sh, hh = evaluate_modes(net, v, x, y, [ATTACK], modes=("sh", "hh"))
        per_seed = by["white-box", "chips"]["per_seed"][seed_index]
        assert {k: per_seed[k] for k in ("seed", "CA", "AA", "AL")} == {"seed": seed, "CA": hh["CA"], "AA": hh["AA"],
                                                                         "AL": hh["AL"]}
        outcomes = {k: from_bits(v) for k, v in per_seed["outcomes"].items()}
        assert 100 * outcomes["adv_correct"].mean() == pytest.approx(hh["AA"]) and len(outcomes["clean_correct"]) == len(y)
        assert by["software", "chips"]["per_seed"][seed_index]["AA"] == sh["AA"]
    chips = by["eot", "chips"]
    aa = [p["AA"] for p in chips["per_seed"]]
    assert chips["AA"] == pytest.approx(np.mean(aa)) and chips["AA_std"] == pytest.approx(np.std(aa))
    assert all(r["CA"] - r["AA"] == pytest.approx(r["AL"]) for r in rows)
    assert by["white-box", "chips"]["AA"] <= by["transfer", "chips"]["AA"]


def test_threat_matrix_rejects_bad_input(net, data):
    x, y = data
    with pytest.raises(ValueError, match="must differ from victim_seeds"):
        threat_matrix(net, CONFIG, x, y, ATTACK, victim_seeds=(0, 1), eot_seeds=(1, 2), cache=False)
    with pytest.raises(ValueError, match="attacker\\(s\\) oracle not allowed"):
        threat_matrix(net, CONFIG, x, y, ATTACK, attackers=("oracle",), cache=False)


def test_threat_report_carries_the_matrix_and_the_sanity_checks(net, data, tmp_path):
    x, y = data
    seeds = {"victim_seeds": (0, 1), "eot_seeds": (10,), "transfer_seed": 20}
    bars = []

    def progress(label, total):
        bars.append((label, total))
        return contextlib.nullcontext(type("Bar", (), {"update": lambda self, k: None})())

    report = threat_report(net, CONFIG, x, y, ATTACK, sanity_images=20, queries=50, cache_dir=tmp_path,
                           progress=progress, **seeds)
    n = len(y)
    assert bars == [("white-box on software", n), ("white-box on chip 0", n), ("white-box on chip 1", n),
                    *[(f"{a} attacker", n) for a in ATTACKERS[1:]],
                    ("sanity checks [software]", 4), ("sanity checks [chip 0]", 4)]
    assert report["rows"] == threat_matrix(net, CONFIG, x, y, ATTACK, cache_dir=tmp_path, **seeds)
    assert list(report["checks"]) == ["software", "chip 0"] and report["sanity_images"] == min(20, len(y))
    for checks in report["checks"].values():
        assert [c["name"] for c in checks] == ["eps_sweep", "steps_restarts", "gradient_free", "loss_increases"]
        assert all(c["passed"] for c in checks), checks  # a linear model, on or off the chip, masks nothing
    assert json.loads(json.dumps(report)) == json.loads(json.dumps(report, default=str))  # plain JSON types only
    text = format_report(report).splitlines()
    assert len(text) == 1 + 2 * len(ATTACKERS) + 8
    assert text[2].split()[:2] == ["white-box", "chips"] and "+-" in text[2] and "+-" not in text[1]


def test_threat_report_resumed_from_any_part_equals_the_uninterrupted_report(net, data, tmp_path):
    x, y = data
    kwargs = {"victim_seeds": (0, 1), "eot_seeds": (10,), "transfer_seed": 20, "sanity_images": 10, "queries": 20,
              "cache_dir": tmp_path}
    parts = []
    whole = threat_report(net, CONFIG, x, y, ATTACK, on_part=lambda p: parts.append(json.loads(json.dumps(p))),
                          **kwargs)
    # one part after each attacker, then one after each sanity target; each part holds all finished so far
    assert len(parts) == len(ATTACKERS) + 2
    assert [len(p["rows"]) for p in parts] == [2 * k for k in range(1, len(ATTACKERS) + 1)] + [2 * len(ATTACKERS)] * 2
    assert [len(p["checks"]) for p in parts] == [0] * len(ATTACKERS) + [1, 2]
    for part in (parts[0], parts[2], parts[-2]):  # stopped after 1 attacker, 3 attackers, the first sanity target
        later = []
        resumed = threat_report(net, CONFIG, x, y, ATTACK, done=part, on_part=later.append, **kwargs)
        assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(whole))
        assert len(later) == len(parts) - parts.index(part) - 1  # only the missing parts were computed
    other = AttackConfig(eps=8 / 255, steps=3, alpha=2 / 255, seed=1)  # ATTACK with 3 steps, not 5
    with pytest.raises(ValueError, match="rows_done holds a 'white-box' row of another attack"):
        threat_report(net, CONFIG, x, y, other, done=parts[0], **kwargs)


def _row(attacker, victim, al, aa, al_std=None, ca=90.0):
    return {"attacker": attacker, "victim": victim, "n": 500, "CA": ca, "AA": aa, "AL": al,
            **({} if al_std is None else {"CA_std": 0.0, "AA_std": 0.0, "AL_std": al_std})}


def test_robustness_on_a_hand_made_report():
    rows = [_row("white-box", "software", 50.0, 40.0), _row("white-box", "chips", 20.0, 70.0, 1.0),
            _row("software", "software", 50.0, 40.0), _row("software", "chips", 10.0, 80.0, 0.5),
            _row("eot", "software", 30.0, 60.0), _row("eot", "chips", 48.0, 42.0, 2.0),
            _row("nominal", "software", 50.0, 40.0), _row("nominal", "chips", 30.0, 40.0, 1.0, ca=70.0)]
    left = {r["attacker"]: r for r in robustness({"rows": rows})}
    assert list(left) == ["white-box", "software", "eot", "nominal"]
    # noise = 200 sqrt(p (1 - p) / 504), p = (k + 2) / 504 with k = AA * 500 correct:
    # AA 70% -> p = 352/504, 4.0886 pp; 80% -> 402/504, 3.5793 pp; 42% -> 212/504, 4.3979 pp
    assert left["white-box"]["gap_pp"] == 30.0 and left["white-box"]["noise_pp"] == pytest.approx(4.0886, abs=1e-4)
    assert left["software"]["gap_pp"] == 40.0 and left["software"]["noise_pp"] == pytest.approx(3.5793, abs=1e-4)
    assert left["eot"]["gap_pp"] == 2.0 and left["eot"]["noise_pp"] == pytest.approx(4.3979, abs=1e-4)
    # the gap is CA lost + AA kept; only the kept AA is robustness: nominal's 20 pp gap is all clean accuracy
    assert [(r["ca_lost_pp"], r["aa_kept_pp"]) for r in left.values()] == [(0, 30), (0, 40), (0, 2), (20, 0)]
    assert left["nominal"]["gap_pp"] == 20.0
    assert [r["survives"] for r in left.values()] == [True, True, False, False]
    assert left["eot"]["AL_std"] == 2.0
    with pytest.raises(ValueError, match="needs the white-box attacker's row.*attackers software, eot"):
        robustness({"rows": rows[2:]})
