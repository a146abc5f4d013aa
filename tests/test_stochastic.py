"""Stochastic hardware (nxbar.crossbar.stochastic): fresh device variation at every read, propagated to first order
around the nominal chip; and the --read-noise-seed and --attack apgd options of evaluate and threats."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import LinearNet

import cli
from nxbar.crossbar.circuit import transfer_matrix
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapping import apply_variation, conductance_pair, effective_weights
from nxbar.crossbar.stochastic import StochasticChip
from nxbar.evaluation import AttackConfig
from nxbar.threats import EOTModel, threat_matrix

CONFIG = CrossbarConfig(size=16)


@pytest.fixture(scope="module")
def software():
    rng = np.random.default_rng(0)
    return LinearNet({"fc1.weight": rng.standard_normal((4, 8 * 8 * 3)) * 0.1, "fc1.bias": rng.normal(size=4)})


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3))


def test_without_variation_every_read_is_the_nominal_chip(software, x, tmp_path):
    chip = StochasticChip(software, CONFIG.replace(sigma=0.0), read_seed=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(chip.forward(x), chip.nominal.forward(x))
    assert chip.reads == 1


def test_reads_differ_and_repeat_with_the_seed(software, x, tmp_path):
    a = StochasticChip(software, CONFIG, read_seed=1, cache_dir=tmp_path)
    b = StochasticChip(software, CONFIG, read_seed=1, cache_dir=tmp_path)
    other = StochasticChip(software, CONFIG, read_seed=1, stream=2, cache_dir=tmp_path)
    first, second = a.forward(x), a.forward(x)
    assert not np.array_equal(first, second)  # every read sees fresh variation
    np.testing.assert_array_equal(b.forward(x), first)  # the same stream gives the same reads
    assert not np.array_equal(other.forward(x), first)
    loss, grad = a.loss_and_input_grad(x, np.zeros(4, dtype=int))
    assert np.isfinite(loss) and grad.shape == x.shape and a.reads == 3
    # EOT over k references averages k fresh reads
    eot = EOTModel([a] * 4)
    eot.loss_and_input_grad(x, np.zeros(4, dtype=int))
    assert a.reads == 7


def test_read_fluctuation_has_the_variation_statistics(software, tmp_path):
    # W_read - W'_nominal = (dG+ - dG-) w_max / (G_max - G_min), dG = sigma G z: mean 0, variance
    # sigma^2 (G+^2 + G-^2) (w_max / (G_max - G_min))^2 per weight
    chip = StochasticChip(software, CONFIG.replace(sigma=0.2), read_seed=3, cache_dir=tmp_path)
    name = "fc1.weight"
    reads = np.stack([chip.read().params[name] - chip.nominal.params[name] for _ in range(400)]).astype(np.float64)
    w = software.params[name].T  # FC crossbar matrix (inputs, outputs)
    g_plus, g_minus, w_max = conductance_pair(w, CONFIG.g_min_s, CONFIG.g_max_s)
    expected_sd = 0.2 * np.sqrt(g_plus**2 + g_minus**2) * w_max / (CONFIG.g_max_s - CONFIG.g_min_s)
    z = reads / expected_sd.T[None]
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_first_order_read_is_close_to_solving_the_read_conductances_exactly():
    # one 32x32 tile at the default parasitics: the fluctuation through ideal wires against the exact solve
    rng = np.random.default_rng(4)
    c = CrossbarConfig(size=32)
    g_plus, g_minus, w_max = conductance_pair(rng.normal(size=(32, 32)), c.g_min_s, c.g_max_s)
    read = [apply_variation(g, 0.1, rng, c.g_min_s) for g in (g_plus, g_minus)]
    t_nom, t_read = (transfer_matrix(np.stack(g), **c.parasitics_ohm) for g in ((g_plus, g_minus), read))
    exact = effective_weights(*t_read, w_max, c.g_min_s, c.g_max_s) - effective_weights(*t_nom, w_max, c.g_min_s,
                                                                                          c.g_max_s)
    first = effective_weights(read[0] - g_plus, read[1] - g_minus, w_max, c.g_min_s, c.g_max_s)
    assert np.linalg.norm(first - exact) / np.linalg.norm(exact) < 0.1


def test_stochastic_chip_checks_its_seed(software):
    with pytest.raises(ValueError, match="read_seed -1"):
        StochasticChip(software, CONFIG, read_seed=-1)


def test_evaluate_with_apgd_on_stochastic_hardware(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("NXBAR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "e.json"
    args = ["evaluate", "--weights", weights, "--n", "4", "--xbar", "8", "--attack", "apgd", "--steps", "2",
            "--eps", "2/255", "--read-noise-seed", "7", "--json", str(out)]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "APGD, 2 steps" in result.output and "fresh variation sigma 0.1 at every read, read seed 7" in result.output
    record = json.loads(out.read_text())
    assert record["stochastic"]["read_seed"] == 7 and record["attacks"][0]["attack"] == "apgd"
    assert [r["mode"] for r in record["results"]] == ["SW", "SH", "HH"]
    again = CliRunner().invoke(cli.main, args[:-2])
    assert again.output.splitlines()[-5:-1] == result.output.splitlines()[-6:-2]  # the same reads, the same rows


def test_threats_with_apgd(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("NXBAR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "t.json"
    result = CliRunner().invoke(cli.main, [
        "threats", "--weights", weights, "--n", "4", "--xbar", "8", "--attack", "apgd", "--steps", "2",
        "--eps", "2/255", "--victims", "0", "--eot", "100", "--sanity-images", "2", "--queries", "4",
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["attack"]["attack"] == "apgd" and "read_seed" not in report
    assert {r["attacker"] for r in report["rows"]} == {"white-box", "software", "nominal", "eot", "transfer"}
    assert all(c["values"] for cs in report["checks"].values() for c in cs)  # checked with PGD at the same eps


def test_threat_matrix_on_stochastic_chips_is_reproducible(software, x, tmp_path):
    y = software.predict(x)
    attack = AttackConfig(eps=8 / 255, steps=3, alpha=2 / 255, seed=1)
    run = dict(victim_seeds=(0, 1), eot_seeds=(10,), transfer_seed=20, cache_dir=tmp_path)
    first = threat_matrix(software, CONFIG, x, y, attack, read_seed=5, **run)
    assert threat_matrix(software, CONFIG, x, y, attack, read_seed=5, **run) == first
    fixed = threat_matrix(software, CONFIG, x, y, attack, **run)
    assert [r["attacker"] for r in first] == [r["attacker"] for r in fixed]
