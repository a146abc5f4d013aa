"""Determinism audit: the same `nxbar evaluate` twice gives the same JSON record byte for byte (timings and the
per-layer solve times aside), and a changed chip seed or attack seed changes what it should and nothing else."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from nxbar.data.load import load_dataset
from nxbar.evaluation import AttackConfig, make_adversarial
from nxbar.weights import load_model

TIMED = ("timings",)  # the only fields of the record that may differ between two identical runs


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder for the records, and the cache of mapped models all runs of this module share."""
    path = tmp_path_factory.mktemp("determinism")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NXBAR_CACHE_DIR", str(path / "cache"))
        yield path


@pytest.fixture(scope="module")
def first(folder, weights):
    """The reference run; it maps the chip and stores it in the cache."""
    return _evaluate(folder, weights)


def _evaluate(folder, weights, *extra) -> dict:
    """The JSON record of a small evaluate on 16x16 crossbars, without timings."""
    path = folder / "r.json"
    args = ["evaluate", "--weights", weights, "--n", "12", "--xbar", "16", "--steps", "2", "--eps", "4/255",
            "--json", str(path), *extra]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    record = json.loads(path.read_text())
    for key in TIMED:
        record.pop(key)
    for layer in record["mapping_report"]:
        layer.pop("solve_s")  # the wall time of each layer's circuit solves
    record.pop("command")  # the argument list itself, which the seed variants change on purpose
    return record


def _differing(a: dict, b: dict, prefix="") -> set[str]:
    """Dotted paths of the leaves where two JSON records differ."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return set().union(*(_differing(a[k], b[k], f"{prefix}{k}.") for k in a))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return set().union(*(_differing(x, y, f"{prefix}{i}.") for i, (x, y) in enumerate(zip(a, b))))
    return set() if a == b else {prefix.rstrip(".")}


def test_the_same_evaluate_twice_gives_the_same_record_byte_for_byte(folder, weights, first):
    again = _evaluate(folder, weights, "--no-cache")  # the chip mapped afresh, not read from the cache
    assert json.dumps(first, indent=2) == json.dumps(again, indent=2)


def test_a_chip_seed_changes_the_crossbars_and_nothing_on_software(folder, weights, first):
    chip0, chip1 = first, _evaluate(folder, weights, "--seed", "1")
    changed = _differing(chip0, chip1)
    assert "crossbar.seed" in changed
    # every layer's effective weights differ: another draw of the device variation
    assert {f"mapping_report.{i}.mean_abs_dw_over_wmax" for i in range(len(chip0["mapping_report"]))} <= changed
    allowed = {"crossbar.seed"} | {p for p in changed if p.startswith("mapping_report.")} | {
        f"results.{i}.{k}" for i, r in enumerate(chip0["results"]) if r["mode"] != "SW"
        for k in ("clean_correct", "adv_correct", "CA", "AA", "AL")}
    assert changed <= allowed, f"a chip seed changed {sorted(changed - allowed)}"
    assert not any(p.startswith("results.0.") for p in changed)  # SW is the software model's row
    assert chip0["results"][0]["mode"] == "SW"


def test_an_attack_seed_changes_the_random_start_and_nothing_else(folder, weights, first):
    seed0, seed1 = first, _evaluate(folder, weights, "--attack-seed", "1")
    changed = _differing(seed0, seed1)
    assert {"attacks.0.seed"} | {f"results.{i}.seed" for i in range(3)} <= changed
    counts = {f"results.{i}.{k}" for i in range(3) for k in ("adv_correct", "AA", "AL")}
    assert changed <= {"attacks.0.seed"} | {f"results.{i}.seed" for i in range(3)} | counts
    # the adversarial images themselves move with the seed (12 images may keep the same counts)
    net, _ = load_model(weights)
    ds = load_dataset("embedded")
    x, y = ds.images[:12], ds.labels[:12]
    cfg = AttackConfig(eps=4 / 255, steps=2)
    a0 = make_adversarial(net, x, y, cfg)
    assert np.array_equal(a0, make_adversarial(net, x, y, cfg))
    assert not np.array_equal(a0, make_adversarial(net, x, y, AttackConfig(eps=4 / 255, steps=2, seed=1)))

