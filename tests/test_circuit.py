"""Exact circuit solve of a tile (docs/physics.md sections 1-5): closed forms, the 2x2 of docs/physics.md, Kirchhoff's
laws, power balance, zero resistances, agreement of the three methods, NF, and every input error."""

import numpy as np
import pytest

from nxbar.crossbar import node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.circuit import _row_port

METHODS = ("dense", "sparse", "fast")
NAMES = ("r_source_ohm", "r_sink_ohm", "r_wire_row_ohm", "r_wire_col_ohm")
PRESET = dict(r_source_ohm=100.0, r_sink_ohm=100.0, r_wire_row_ohm=1.0, r_wire_col_ohm=1.0)
G_MIN, G_MAX = 1 / 200e3, 1 / 20e3


def random_tiles(rng, *shape):
    return rng.uniform(G_MIN, G_MAX, shape)


def random_resistances(rng):
    """Resistances spread over 0.5..300 ohm so that every element matters."""
    return dict(zip(NAMES, rng.uniform(0.5, 300.0, 4)))


def rel_err(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


def parallel(*ohms):
    return 1.0 / sum(1.0 / r for r in ohms)


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rs, rk", [(100.0, 100.0), (0.0, 37.0), (12.0, 0.0), (0.0, 0.0)])
def test_one_by_one_is_three_resistors_in_series(method, rs, rk):
    g = 3.7e-5
    t = transfer_matrix([[g]], rs, rk, 5.0, 7.0, method=method)  # a 1x1 tile has no wire segment
    assert t.shape == (1, 1)
    assert rel_err(t[0, 0], 1.0 / (rs + 1.0 / g + rk)) < 1e-14


def ladder_row(g, rs, rk, rw):
    """1 x C: source -> rs -> r_0 -rw- r_1 ... ; rung j = device + sink to ground.  T[0, j] = v_j / rung_j."""
    rung = 1.0 / g + rk
    z = [0.0] * g.size  # z[j]: resistance to ground of everything right of and at r_j
    z[-1] = rung[-1]
    for j in range(g.size - 2, -1, -1):
        z[j] = parallel(rung[j], rw + z[j + 1])
    v = 1.0 * z[0] / (rs + z[0])
    out = []
    for j in range(g.size):
        out.append(v / rung[j])
        if j + 1 < g.size:
            v = v * z[j + 1] / (rw + z[j + 1])
    return np.array(out)


def ladder_column(g, rs, rk, rw):
    """R x 1: branch i = source + rs + device into c_i; column chain rw; c_{R-1} -> rk -> ground."""
    b = rs + 1.0 / g
    n = g.size
    down = [0.0] * n  # down[m]: resistance from c_m to ground looking down (sink side), own branch excluded
    node_down = [0.0] * n  # node_down[m] = b_m || down[m]
    down[n - 1] = rk
    node_down[n - 1] = parallel(b[n - 1], rk)
    for m in range(n - 2, -1, -1):
        down[m] = rw + node_down[m + 1]
        node_down[m] = parallel(b[m], down[m])
    up = [0.0] * n  # up[m]: resistance from c_m looking up, own branch excluded (inf at the top)
    node_up = b[0]
    up[0] = np.inf
    for m in range(1, n):
        up[m] = rw + node_up
        node_up = parallel(b[m], up[m])
    out = []
    for k in range(n):
        load = down[k] if k == 0 else parallel(down[k], up[k])
        v = load / (b[k] + load)  # voltage at c_k for 1 V on row k
        i = v / down[k]
        for m in range(k + 1, n):
            i = i * node_down[m] / down[m]
        out.append(i)
    return np.array(out)


@pytest.mark.parametrize("method", METHODS)
def test_single_row_is_a_ladder(method):
    rng = np.random.default_rng(1)
    g = random_tiles(rng, 9)
    res = random_resistances(rng)
    t = transfer_matrix(g[None, :], **res, method=method)
    expect = ladder_row(g, res["r_source_ohm"], res["r_sink_ohm"], res["r_wire_row_ohm"])
    assert rel_err(t[0], expect) < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_single_column_is_a_ladder(method):
    rng = np.random.default_rng(2)
    g = random_tiles(rng, 8)
    res = random_resistances(rng)
    t = transfer_matrix(g[:, None], **res, method=method)
    expect = ladder_column(g, res["r_source_ohm"], res["r_sink_ohm"], res["r_wire_col_ohm"])
    assert rel_err(t[:, 0], expect) < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_two_by_two_worked_by_hand_in_docs(method):
    """docs/physics.md: every device 1 kOhm, every resistance 1 kOhm; T in mS, node voltages in 1/44 V."""
    G = np.full((2, 2), 1e-3)
    t = transfer_matrix(G, 1e3, 1e3, 1e3, 1e3, method=method)
    np.testing.assert_allclose(t, np.array([[7 / 44, 3 / 22], [5 / 22, 7 / 44]]) * 1e-3, rtol=1e-14)
    v_row, v_col, i_out = node_voltages(G, [1.0, 0.0], 1e3, 1e3, 1e3, 1e3)
    np.testing.assert_allclose(v_row * 44, [[27, 20], [4, 5]], rtol=1e-14)
    np.testing.assert_allclose(v_col * 44, [[17, 13], [7, 6]], rtol=1e-14)
    np.testing.assert_allclose(i_out, t[0], rtol=1e-14)


def row_port(g, r_source, r_wire):
    K, beta = np.empty((g.size, g.size)), np.empty(g.size)
    _row_port(g, r_source, r_wire, K, beta)
    return K, beta


def test_row_port_of_the_worked_example_and_of_a_random_row():
    """K = D - D M^-1 D and beta = g_s D M^-1 e_0 (docs/physics.md 5.1) against a dense inverse of M."""
    K, beta = row_port(np.ones(2), 1.0, 1.0)
    np.testing.assert_allclose(K, [[3 / 5, -1 / 5], [-1 / 5, 2 / 5]], rtol=1e-15)
    np.testing.assert_allclose(beta, [2 / 5, 1 / 5], rtol=1e-15)
    rng = np.random.default_rng(9)
    g = random_tiles(rng, 7)
    rs, rw = 80.0, 2.5
    M = np.diag(g) + np.diag(np.r_[1 / rs + 1 / rw, np.full(5, 2 / rw), 1 / rw])
    M -= np.diag(np.full(6, 1 / rw), 1) + np.diag(np.full(6, 1 / rw), -1)
    D, Minv = np.diag(g), np.linalg.inv(M)
    K, beta = row_port(g, rs, rw)
    np.testing.assert_allclose(K, D - D @ Minv @ D, rtol=1e-12, atol=1e-12 * np.abs(K).max())
    np.testing.assert_allclose(beta, D @ Minv[:, 0] / rs, rtol=1e-12)
    K, beta = row_port(g, 0.0, 0.0)  # both zero: the row is held at V_i
    assert np.array_equal(K, D) and np.array_equal(beta, g)


# ----------------------------------------------------------------------------------------------
# Zero resistances: exact ideal connections
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_all_resistances_zero_give_G_bit_for_bit(method):
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (3, 5), (6, 2), (2, 4, 4)]:
        G = random_tiles(rng, *shape)
        G.flat[0] = 0.0  # an open cell too
        assert np.array_equal(transfer_matrix(G, 0, 0, 0, 0, method=method), G)


@pytest.mark.parametrize("name", NAMES)
def test_each_zero_resistance_is_the_limit_and_methods_agree(name):
    rng = np.random.default_rng(4)
    G = random_tiles(rng, 7, 6)
    res = random_resistances(rng)
    t = {m: transfer_matrix(G, **{**res, name: 0.0}, method=m) for m in METHODS}
    assert rel_err(t["dense"], t["fast"]) < 1e-12
    assert rel_err(t["sparse"], t["fast"]) < 1e-12
    tiny = transfer_matrix(G, **{**res, name: 1e-7}, method="fast")
    assert rel_err(tiny, t["fast"]) < 1e-6
    assert rel_err(transfer_matrix(G, **res), t["fast"]) > 1e-4  # the resistance did matter


def test_all_zero_but_one_resistance():
    """Only the sink: each column is its devices in parallel, driven at V, in series with R_sink."""
    rng = np.random.default_rng(5)
    G = random_tiles(rng, 5, 4)
    rk = 250.0
    for method in METHODS:
        t = transfer_matrix(G, 0, rk, 0, 0, method=method)
        # 1 V on row k, other rows at 0 V: column node v = G_kj / (sum_i G_ij + 1/rk), I = v / rk
        expect = G / (G.sum(axis=0) + 1 / rk) / rk
        assert rel_err(t, expect) < 1e-13


# ----------------------------------------------------------------------------------------------
# The three methods agree
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (2, 3), (5, 8), (11, 4), (16, 16), (24, 17)])
def test_dense_sparse_fast_agree(shape):
    rng = np.random.default_rng(sum(shape))
    G = random_tiles(rng, *shape)
    res = random_resistances(rng)
    t = {m: transfer_matrix(G, **res, method=m) for m in METHODS}
    assert rel_err(t["sparse"], t["dense"]) < 1e-10
    assert rel_err(t["fast"], t["dense"]) < 1e-10
    assert rel_err(t["fast"], G) > 1e-3  # not the ideal answer


@pytest.mark.parametrize("shape", [(64, 64), (33, 64), (64, 20)])
def test_sparse_and_fast_agree_on_large_tiles(shape):
    rng = np.random.default_rng(shape[0] + 7 * shape[1])
    G = random_tiles(rng, *shape)
    t_sparse = transfer_matrix(G, **PRESET, method="sparse")
    assert rel_err(transfer_matrix(G, **PRESET, method="fast"), t_sparse) < 1e-10
    assert rel_err(transfer_matrix(G, **PRESET), t_sparse) < 1e-10  # "auto" is "fast"


def test_stack_is_solved_tile_by_tile():
    rng = np.random.default_rng(6)
    G = random_tiles(rng, 5, 6, 7)
    t = transfer_matrix(G, **PRESET)
    assert t.shape == G.shape and t.dtype == np.float64
    for n in range(5):
        assert rel_err(t[n], transfer_matrix(G[n], **PRESET, method="dense")) < 1e-12


# ----------------------------------------------------------------------------------------------
# Kirchhoff's current law and power balance on the solved node voltages
# ----------------------------------------------------------------------------------------------
def solved_tile():
    rng = np.random.default_rng(7)
    G = random_tiles(rng, 6, 5)
    res = random_resistances(rng)
    v = rng.uniform(0.0, 1.0, 6)
    return G, res, v, node_voltages(G, v, **res)


def test_kirchhoff_current_law_at_every_node():
    """Componentwise relative residual |sum of currents out| / sum of g (|v_a| + |v_b|) at every node."""
    G, res, v, (vr, vc, i_out) = solved_tile()
    gs, gk, gr, gc = (1 / res[n] for n in NAMES)
    out_r, out_c = np.zeros_like(G), np.zeros_like(G)
    scale_r, scale_c = np.zeros_like(G), np.zeros_like(G)

    def element(out, scale, index, g, v_here, v_there):  # current g (v_here - v_there) leaves the node
        out[index] += g * (v_here - v_there)
        scale[index] += g * (np.abs(v_here) + np.abs(v_there))

    element(out_r, scale_r, np.s_[:, :], G, vr, vc)  # devices
    element(out_c, scale_c, np.s_[:, :], G, vc, vr)
    element(out_r, scale_r, np.s_[:, :-1], gr, vr[:, :-1], vr[:, 1:])  # row wires
    element(out_r, scale_r, np.s_[:, 1:], gr, vr[:, 1:], vr[:, :-1])
    element(out_r, scale_r, np.s_[:, 0], gs, vr[:, 0], v)  # sources
    element(out_c, scale_c, np.s_[:-1, :], gc, vc[:-1, :], vc[1:, :])  # column wires
    element(out_c, scale_c, np.s_[1:, :], gc, vc[1:, :], vc[:-1, :])
    element(out_c, scale_c, np.s_[-1, :], gk, vc[-1, :], 0.0)  # sinks
    assert np.max(np.abs(out_r) / scale_r) < 1e-12
    assert np.max(np.abs(out_c) / scale_c) < 1e-12
    # I_j is the current through R_sink, which equation (1) (sum of device currents) reproduces
    assert rel_err(i_out, gk * vc[-1, :]) < 1e-12
    assert rel_err(i_out, v @ transfer_matrix(G, **res)) < 1e-12


def test_power_from_sources_is_dissipated_in_resistors_and_devices():
    G, res, v, (vr, vc, i_out) = solved_tile()
    i_source = (v - vr[:, 0]) / res["r_source_ohm"]
    p_in = float(v @ i_source)
    p_out = (
        np.sum(i_source**2) * res["r_source_ohm"]
        + np.sum(np.diff(vr, axis=1) ** 2) / res["r_wire_row_ohm"]
        + np.sum(np.diff(vc, axis=0) ** 2) / res["r_wire_col_ohm"]
        + np.sum(vc[-1] ** 2) / res["r_sink_ohm"]
        + np.sum(G * (vr - vc) ** 2)
    )
    assert abs(p_in - p_out) / p_in < 1e-12


# ----------------------------------------------------------------------------------------------
# Non-ideality factor
# ----------------------------------------------------------------------------------------------
def test_nf_closed_forms():
    g = 4e-5
    t = transfer_matrix([[g]], 100.0, 100.0, 1.0, 1.0)
    assert nonideality_factor([[g]], t) == pytest.approx(g * 200.0 / (1 + g * 200.0), rel=1e-12)
    G = random_tiles(np.random.default_rng(8), 3, 4, 5)
    assert nonideality_factor(G, G / 2, n_inputs=7, seed=3) == pytest.approx(0.5, rel=1e-14)
    assert nonideality_factor(G, transfer_matrix(G, 0, 0, 0, 0)) == 0.0


def test_nf_with_spec_defaults_grows_with_crossbar_size():
    """docs/protocol.md section 3: about 0.09 / 0.16 / 0.30 for 16 / 32 / 64; these 2 tiles per size give
    0.089 / 0.160 / 0.299."""
    rng = np.random.default_rng(0)
    nf = {}
    for n in (16, 32, 64):
        G = random_tiles(rng, 2, n, n)
        nf[n] = nonideality_factor(G, transfer_matrix(G, **PRESET))
    assert 0.0 < nf[16] < nf[32] < nf[64] < 1.0
    assert nf[16] == pytest.approx(0.09, abs=0.02)
    assert nf[32] == pytest.approx(0.16, abs=0.02)
    assert nf[64] == pytest.approx(0.30, abs=0.02)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
GOOD = np.full((2, 3), 1e-5)


@pytest.mark.parametrize(
    "G, message",
    [
        (np.full(3, 1e-5), r"G must have shape \(R, C\) or \(N, R, C\), got shape \(3,\)"),
        (np.full((1, 1, 1, 1), 1e-5), r"G must have shape \(R, C\) or \(N, R, C\), got shape \(1, 1, 1, 1\)"),
        (np.zeros((0, 4)), r"G must be non-empty, got shape \(0, 4\)"),
        (np.zeros((2, 0, 4)), r"G must be non-empty, got shape \(2, 0, 4\)"),
        ([[1e-5, np.nan]], r"G must be finite and >= 0 siemens, got nan at index \(0, 1\)"),
        ([[1e-5], [np.inf]], r"G must be finite and >= 0 siemens, got inf at index \(1, 0\)"),
        ([[1e-5, -2e-5]], r"G must be finite and >= 0 siemens, got -2e-05 at index \(0, 1\)"),
        ([["a"]], r"G must be an array of conductances in siemens, got list"),
    ],
)
def test_bad_conductances(G, message):
    with pytest.raises(ValueError, match=message):
        transfer_matrix(G, **PRESET)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [-1.0, np.nan, np.inf, "100", None, True])
def test_bad_resistance(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0 \(ohm\), got {value!r}"):
        transfer_matrix(GOOD, **{**PRESET, name: value})
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0 \(ohm\)"):
        node_voltages(GOOD, [1.0, 1.0], **{**PRESET, name: value})


def test_bad_method():
    with pytest.raises(ValueError, match=r"method must be one of 'auto', 'dense', 'sparse', 'fast', got 'lu'"):
        transfer_matrix(GOOD, **PRESET, method="lu")


def test_bad_node_voltage_inputs():
    with pytest.raises(ValueError, match=r"G must be one tile of shape \(R, C\), got shape \(1, 2, 3\)"):
        node_voltages(GOOD[None], [1.0, 1.0], **PRESET)
    with pytest.raises(ValueError, match=r"v must be 2 finite voltages \(shape \(2,\)\), got shape \(3,\)"):
        node_voltages(GOOD, [1.0, 1.0, 1.0], **PRESET)
    with pytest.raises(ValueError, match=r"v must be 2 finite voltages \(shape \(2,\)\), got shape \(2,\)"):
        node_voltages(GOOD, [1.0, np.nan], **PRESET)


def test_bad_nf_inputs():
    with pytest.raises(ValueError, match=r"T must be finite with the shape of G \(2, 3\), got shape \(3, 2\)"):
        nonideality_factor(GOOD, GOOD.T)
    with pytest.raises(ValueError, match=r"T must be finite with the shape of G \(2, 3\), got shape \(2, 3\)"):
        nonideality_factor(GOOD, GOOD * np.nan)
    for n in (0, 2.5, True):
        with pytest.raises(ValueError, match=rf"n_inputs must be an integer >= 1, got {n!r}"):
            nonideality_factor(GOOD, GOOD, n_inputs=n)
    G = np.stack([GOOD, GOOD])
    G[1, :, 2] = 0.0
    with pytest.raises(ValueError, match=r"G has a column of zero conductance \(tile, column\) = \(1, 2\)"):
        nonideality_factor(G, G)
