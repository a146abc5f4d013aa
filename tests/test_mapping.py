"""Crossbar configuration, tiling and the weight <-> conductance mapping (docs/protocol.md sections 3 and 4)."""

import json
import math

import numpy as np
import pytest

from nxbar.crossbar.circuit import transfer_matrix
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_layer
from nxbar.crossbar.mapping import (
    G_FLOOR_FRACTION,
    NEGATIVE,
    POSITIVE,
    apply_variation,
    chip_rng,
    conductance_pair,
    effective_weights,
    quantize_levels,
    quantize_weights,
)
from nxbar.crossbar.tiling import from_tiles, tile_grid, to_tiles

G_MIN, G_MAX = 1 / 200e3, 1 / 20e3


# ---------------------------------------------------------------- configuration


def test_config_defaults_are_spec_section_3():
    c = CrossbarConfig()
    assert (c.size, c.r_on_ohm, c.r_off_ohm, c.sigma, c.bits, c.seed) == (32, 20e3, 200e3, 0.10, None, 0)
    assert c.parasitics_ohm == dict(r_source_ohm=100.0, r_sink_ohm=100.0, r_wire_row_ohm=1.0, r_wire_col_ohm=1.0)
    assert c.g_max_s == 1 / 20e3 and c.g_min_s == 1 / 200e3
    assert CrossbarConfig(**json.loads(json.dumps(c.as_dict()))) == c


def test_config_normalises_number_types_and_ideal_helper():
    a = CrossbarConfig(r_on_ohm=20000, sigma=np.float32(0.25), size=np.int64(16))
    assert type(a.r_on_ohm) is float and type(a.size) is int and a.as_dict()["sigma"] == 0.25
    assert a.as_dict() == CrossbarConfig(r_on_ohm=20e3, sigma=0.25, size=16).as_dict()
    ideal = CrossbarConfig.ideal(size=8, bits=3)
    assert set(ideal.parasitics_ohm.values()) == {0.0} and ideal.sigma == 0 and (ideal.size, ideal.bits) == (8, 3)
    assert ideal.replace(seed=4).seed == 4


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("size", 0, "size must be an integer >= 1, got 0"),
        ("size", 32.0, "size must be an integer >= 1, got 32.0"),
        ("size", True, "size must be an integer >= 1, got True"),
        ("r_on_ohm", 0.0, "r_on_ohm must be a finite number > 0, got 0.0"),
        ("r_on_ohm", math.inf, "r_on_ohm must be a finite number > 0, got inf"),
        ("r_off_ohm", 10e3, "r_off_ohm must be a finite number > r_on_ohm = 20000.0, got 10000.0"),
        ("r_source_ohm", -1.0, "r_source_ohm must be a finite number >= 0, got -1.0"),
        ("r_sink_ohm", math.nan, "r_sink_ohm must be a finite number >= 0, got nan"),
        ("r_wire_row_ohm", "1", "r_wire_row_ohm must be a finite number >= 0, got '1'"),
        ("r_wire_col_ohm", -0.5, "r_wire_col_ohm must be a finite number >= 0, got -0.5"),
        ("sigma", -0.1, "sigma must be a finite number >= 0, got -0.1"),
        ("bits", 0, "bits must be None (analog) or an integer in 1..16, got 0"),
        ("bits", 17, "bits must be None (analog) or an integer in 1..16, got 17"),
        ("seed", -1, "seed must be an integer >= 0, got -1"),
    ],
)
def test_config_validation_messages(field, value, allowed):
    with pytest.raises(ValueError) as e:
        CrossbarConfig(**{field: value})
    assert str(e.value) == allowed


# ---------------------------------------------------------------- tiling


@pytest.mark.parametrize("shape, size", [((1, 1), 1), ((27, 128), 32), ((64, 32), 32), ((70, 5), 16), ((3, 100), 8)])
def test_tiles_pad_with_given_value_and_round_trip(shape, size):
    m = np.random.default_rng(0).uniform(1.0, 2.0, shape)
    tiles, grid = to_tiles(m, size, pad_value=-7.0)
    assert grid == tile_grid(shape, size) == (math.ceil(shape[0] / size), math.ceil(shape[1] / size))
    assert tiles.shape == (grid[0] * grid[1], size, size)
    assert np.sum(tiles == -7.0) == tiles.size - m.size  # every padded cell, and only those
    np.testing.assert_array_equal(from_tiles(tiles, grid, shape), m)


def test_tile_order_is_row_major_over_the_grid():
    m = np.arange(6 * 9, dtype=float).reshape(6, 9)
    tiles, grid = to_tiles(m, 4, pad_value=np.nan)
    assert grid == (2, 3)
    for t in range(6):
        a, b = divmod(t, 3)
        block = m[4 * a : 4 * a + 4, 4 * b : 4 * b + 4]
        np.testing.assert_array_equal(tiles[t][: block.shape[0], : block.shape[1]], block)


def test_tiling_errors():
    with pytest.raises(ValueError, match=r"matrix must be 2-D \(rows, cols\), got shape \(3,\)"):
        to_tiles(np.zeros(3), 2, 0.0)
    with pytest.raises(ValueError, match=r"tiles must have shape \(4, size, size\) for grid \(2, 2\), got \(3, 2, 2\)"):
        from_tiles(np.zeros((3, 2, 2)), (2, 2), (4, 4))
    with pytest.raises(ValueError, match=r"shape \(5, 4\) does not fit grid \(2, 2\) of 2x2 tiles"):
        from_tiles(np.zeros((4, 2, 2)), (2, 2), (5, 4))


# ---------------------------------------------------------------- differential pair and bits


def test_conductance_pair_closed_form():
    w = np.array([[0.5, -1.0], [0.0, 0.25]])
    gp, gm, w_max = conductance_pair(w, G_MIN, G_MAX)
    span = G_MAX - G_MIN
    assert w_max == 1.0
    np.testing.assert_allclose(gp, G_MIN + span * np.array([[0.5, 0.0], [0.0, 0.25]]), rtol=1e-15)
    np.testing.assert_allclose(gm, G_MIN + span * np.array([[0.0, 1.0], [0.0, 0.0]]), rtol=1e-15)
    assert gm[0, 1] == G_MAX and gp[1, 0] == gm[1, 0] == G_MIN
    zero_p, zero_m, zero_max = conductance_pair(np.zeros((2, 3)), G_MIN, G_MAX)
    assert zero_max == 0.0 and np.all(zero_p == G_MIN) and np.all(zero_m == G_MIN)
    with pytest.raises(ValueError, match="matrix must hold finite weights"):
        conductance_pair(np.array([[np.nan]]), G_MIN, G_MAX)


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_bits_give_2b_levels_and_round_to_nearest(bits):
    w = np.random.default_rng(bits).uniform(-1, 1, size=(300, 40))  # every level populated
    gp, gm, w_max = conductance_pair(w, G_MIN, G_MAX, bits=bits)
    u_q = (gp + gm - 2 * G_MIN) / (G_MAX - G_MIN)  # |W|/w_max after quantisation (one of the pair is G_min)
    n = 2**bits - 1
    levels = np.arange(n + 1) / n
    k = np.rint(u_q * n)
    np.testing.assert_allclose(u_q, k / n, atol=1e-12)
    assert len(np.unique(k)) == 2**bits
    nearest = levels[np.argmin(np.abs(np.abs(w)[..., None] / w_max - levels), axis=-1)]  # brute force
    np.testing.assert_allclose(u_q, nearest, atol=1e-12)
    assert np.all(np.sign(gp - gm) == np.sign(w) * (k > 0))


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_quantized_weights_are_the_ideal_pair_and_map_without_further_rounding(bits):
    w = np.random.default_rng(10 + bits).normal(size=(4, 3, 3, 3)).astype(np.float32)
    wq = quantize_weights(w, bits)
    assert wq.dtype == np.float32 and wq.shape == w.shape
    gp, gm, w_max = conductance_pair(w.reshape(4, -1).T, G_MIN, G_MAX, bits=bits)
    ideal = effective_weights(gp, gm, w_max, G_MIN, G_MAX).T.reshape(w.shape)  # the pair read back, no parasitics
    np.testing.assert_allclose(wq, ideal, rtol=1e-6, atol=1e-7 * w_max)
    assert len(np.unique(np.abs(wq))) <= 2**bits and np.max(np.abs(wq)) == np.max(np.abs(w))
    np.testing.assert_array_equal(quantize_weights(wq, bits), wq)  # idempotent: W_q is on the grid
    analog = conductance_pair(wq.reshape(4, -1).T, G_MIN, G_MAX)  # mapping W_q needs no rounding at b bits
    np.testing.assert_allclose(conductance_pair(wq.reshape(4, -1).T, G_MIN, G_MAX, bits=bits)[:2], analog[:2],
                               rtol=1e-6, atol=0)
    assert quantize_weights(w, None) is w and not np.any(quantize_weights(np.zeros(3), 2))


def test_quantize_levels_analog_is_identity():
    u = np.linspace(0, 1, 11)
    assert quantize_levels(u, None) is u
    np.testing.assert_array_equal(quantize_levels(np.array([0.0, 0.49, 0.51, 1.0]), 1), [0, 0, 1, 1])


# ---------------------------------------------------------------- device variation


def test_variation_statistics():
    g = np.full((50, 32, 32), 3e-5)
    sigma = 0.1
    ratio = apply_variation(g, sigma, chip_rng(0, 0, POSITIVE), G_MIN) / g
    n = ratio.size
    assert abs(ratio.mean() - 1) < 5 * sigma / np.sqrt(n)
    assert abs(ratio.std() / sigma - 1) < 0.02
    # Gaussian: about 68.3% of devices within one sigma
    assert abs(np.mean(np.abs(ratio - 1) < sigma) - 0.6827) < 0.01


def test_variation_floor():
    g = np.full(100_000, G_MIN)
    varied = apply_variation(g, 1.0, chip_rng(3, 1, NEGATIVE), G_MIN)  # z <= -1 for ~16% of devices
    floor = G_FLOOR_FRACTION * G_MIN
    assert varied.min() == floor and np.all(varied > 0)
    assert 0.14 < np.mean(varied == floor) < 0.18
    np.testing.assert_array_equal(apply_variation(g, 0.0, chip_rng(3, 1, NEGATIVE), G_MIN), g)


def test_chip_streams_same_seed_same_chip_and_independent_streams():
    draw = lambda *k: chip_rng(*k).standard_normal(20_000)  # noqa: E731
    np.testing.assert_array_equal(draw(7, 2, POSITIVE), draw(7, 2, POSITIVE))
    base = draw(7, 2, POSITIVE)
    for other in [(8, 2, POSITIVE), (7, 3, POSITIVE), (7, 2, NEGATIVE), (7, 1, POSITIVE)]:
        assert abs(np.corrcoef(base, draw(*other))[0, 1]) < 0.03  # 4 / sqrt(20000) = 0.028


# ---------------------------------------------------------------- effective weights


@pytest.mark.parametrize("bits", [None, 3])
def test_effective_weights_of_ideal_crossbars_are_the_quantised_weights(bits):
    w = np.random.default_rng(1).normal(size=(20, 7))
    gp, gm, w_max = conductance_pair(w, G_MIN, G_MAX, bits)
    w_eff = effective_weights(gp, gm, w_max, G_MIN, G_MAX)  # T = G
    expected = np.sign(w) * w_max * quantize_levels(np.abs(w) / w_max, bits)
    np.testing.assert_allclose(w_eff, expected, rtol=0, atol=1e-14 * w_max)


@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (10, 40)])
def test_map_layer_ideal_gives_back_the_weights(shape):
    w = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    w_eff, report = map_layer(w, CrossbarConfig.ideal(size=16), layer_index=0)
    assert w_eff.dtype == np.float32 and w_eff.shape == w.shape
    np.testing.assert_allclose(w_eff, w, rtol=2**-23, atol=0)
    assert report["nf"] == 0.0 and report["mean_abs_dw_over_wmax"] < 1e-7
    rows = 27 if len(shape) == 4 else 40
    assert report["matrix_shape"] == [rows, shape[0]]
    assert report["tiles"] == 2 * math.prod(report["grid"]) == 2 * math.ceil(rows / 16)


def test_padded_devices_are_off_and_load_the_wires_but_do_not_leak():
    """A 5x3 layer on one 8x8 tile equals the hand-built tile (G_min everywhere else) solved and cut."""
    config = CrossbarConfig(size=8, sigma=0.0)
    w = np.random.default_rng(4).normal(size=(3, 5))  # FC (out, in): matrix (5, 3)
    w_eff, report = map_layer(w, config, layer_index=0)
    gp, gm, w_max = conductance_pair(w.T, G_MIN, G_MAX)
    tiles = np.full((2, 8, 8), G_MIN)
    tiles[0, :5, :3], tiles[1, :5, :3] = gp, gm
    t = transfer_matrix(tiles, **config.parasitics_ohm)
    expected = effective_weights(t[0], t[1], w_max, G_MIN, G_MAX)[:5, :3]
    np.testing.assert_allclose(w_eff, expected.T, rtol=1e-12)
    # the padded OFF devices draw current from the shared wires: a 5x3 tile alone would differ
    t_small = transfer_matrix(np.stack([gp, gm]), **config.parasitics_ohm)
    assert np.max(np.abs(effective_weights(t_small[0], t_small[1], w_max, G_MIN, G_MAX).T - w_eff)) > 1e-4 * w_max
    assert report["grid"] == [1, 1] and report["tiles"] == 2


def test_parasitics_shrink_the_effective_weights():
    """Default physics (sigma 0.1) on a 64x48 layer: wire and source/sink drops reduce every current."""
    w = np.random.default_rng(5).normal(size=(48, 64))
    w_eff, report = map_layer(w, CrossbarConfig(size=32), layer_index=3)
    shrink = np.mean(np.sign(w) * (w_eff - w)) / report["w_max"]
    assert shrink < -0.01
    assert np.sum(np.abs(w_eff)) < np.sum(np.abs(w))
    assert 0.05 < report["nf"] < 0.5 and report["mean_abs_dw_over_wmax"] > 0.01


def test_layer_draw_depends_only_on_seed_and_layer_index():
    w = np.random.default_rng(6).normal(size=(4, 2, 3, 3))
    config = CrossbarConfig.ideal(size=8, sigma=0.2)
    a, _ = map_layer(w, config, layer_index=2)
    np.testing.assert_array_equal(map_layer(w, config, layer_index=2)[0], a)
    assert not np.array_equal(map_layer(w, config, layer_index=1)[0], a)
    assert not np.array_equal(map_layer(w, config.replace(seed=1), layer_index=2)[0], a)


def test_map_layer_errors():
    with pytest.raises(ValueError, match=r"or FC \(out, in\) weight, got shape \(2, 3, 4\)"):
        map_layer(np.zeros((2, 3, 4)), CrossbarConfig(), 0)
    with pytest.raises(ValueError, match="layer_index must be an integer >= 0, got -1"):
        map_layer(np.zeros((2, 3)), CrossbarConfig(), -1)
