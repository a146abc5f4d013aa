"""Cases of assignment 2 (docs/assignments/assignment2_crossbar.md): one crossbar tile's circuit, against
nxbar.crossbar.circuit."""

from __future__ import annotations

import numpy as np

from nxbar.crossbar.circuit import nodal_system, node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.tiling import to_tiles
from nxbar.grading.core import Call, Case, Trial, check_array, check_scalar

RTOL_T = 1e-8  # the student's dense solve against nxbar's structured elimination (they agree to ~1e-12)
DEFAULTS = {"r_source_ohm": 100.0, "r_sink_ohm": 100.0, "r_wire_row_ohm": 1.0, "r_wire_col_ohm": 1.0}
G_MIN_S, G_MAX_S = 1 / 200e3, 1 / 20e3
NO_SINK = "matches the circuit with R_sink = 0 (column bottoms grounded directly): the sink resistor is missing"
NODAL_SIGN = ("the off-diagonal entries of A have the wrong sign: KCL puts +g on the diagonal and -g between two "
              "nodes that a conductance g joins")


def _ohm(res: dict) -> str:
    return ", ".join(f"{k[2:-4]} {v:g}" for k, v in res.items()) + " ohm"


def _worked(rng):
    """The 2x2 example of docs/physics.md 7 at a drawn scale: every G = g, every resistance = r, v = (v0, 0)."""
    g, r, v0 = rng.uniform(0.5e-3, 2e-3), rng.uniform(0.5e3, 2e3), rng.uniform(0.5, 1.5)
    return np.full((2, 2), g), np.array([v0, 0.0]), dict.fromkeys(DEFAULTS, r)


def _random(rng, shape):
    res = {"r_source_ohm": rng.uniform(20, 100), "r_sink_ohm": rng.uniform(20, 100),
           "r_wire_row_ohm": rng.uniform(1, 5), "r_wire_col_ohm": rng.uniform(1, 5)}
    return rng.uniform(G_MIN_S, G_MAX_S, shape), rng.uniform(0, 1, shape[0]), res


def _t_symptoms(G: np.ndarray, res: dict, rows: int, cols: int):
    """Transfer-matrix mistakes on the tile G, each cut to the graded (rows, cols) block."""
    T = lambda **change: transfer_matrix(G, **{**res, **change})[:rows, :cols]  # noqa: E731
    return [
        (NO_SINK, lambda: T(r_sink_ohm=0.0)),
        ("matches the circuit with R_source = 0: the source resistor is missing", lambda: T(r_source_ohm=0.0)),
        ("matches T transposed: T[i, j] is the current out of column j per volt on row i (I = V T)",
         lambda: transfer_matrix(G, **res).T[:rows, :cols]),
    ]


def _nodal(G, v, res):
    A, B, _ = nodal_system(G, **res)
    A = A.toarray()
    sink_nodes = G.size + np.arange(G.size - G.shape[1], G.size)  # c(R-1, j)
    no_sink = A.copy()
    no_sink[sink_nodes, sink_nodes] -= 1.0 / res["r_sink_ohm"]
    a_symptoms = [("the bottom column nodes c(R-1, j) lack the 1/R_sink term of the sink resistor", lambda: no_sink),
                  (NODAL_SIGN, lambda: 2 * np.diag(np.diag(A)) - A)]
    b = B @ v
    b_symptoms = [("b has the wrong sign: the source enters as +V_i / R_source on the right-hand side", lambda: -b)]

    def check(got):
        check_array("A", got["A"], A, 1e-9, 1e-15, a_symptoms)
        check_array("b", got["b"], b, 1e-9, 1e-15, b_symptoms)

    return Trial({"G": G, "v": v}, (Call("nodal_system", ("G", "v"), res, ("A", "b")),), ("A", "b"), check)


def _node_voltages(G, v, res):
    expected = node_voltages(G, v, **res)
    grounded = node_voltages(G, v, **{**res, "r_sink_ohm": 0.0})

    def check(got):
        for k, (name, what, atol) in enumerate((("v_row", "v_row (V)", 1e-12), ("v_col", "v_col (V)", 1e-12),
                                                ("i_out", "i_out (A)", 1e-18))):
            check_array(what, got[name], expected[k], RTOL_T, atol, [(NO_SINK, lambda: grounded[k])])

    names = ("v_row", "v_col", "i_out")
    return Trial({"G": G, "v": v}, (Call("node_voltages", ("G", "v"), res, names),), names, check)


def _transfer(G, res):
    expected, symptoms = transfer_matrix(G, **res), _t_symptoms(G, res, *G.shape)
    return Trial({"G": G}, (Call("transfer_matrix", ("G",), res, "T"),), ("T",),
                 lambda got: check_array("T (S)", got["T"], expected, RTOL_T, 1e-18, symptoms))


def _padded(rng):
    block, size = rng.uniform(G_MIN_S, G_MAX_S, (3, 2)), 5
    tile = to_tiles(block, size, G_MIN_S)[0][0]
    expected = transfer_matrix(tile, **DEFAULTS)[:3, :2]
    symptoms = [
        ("matches padding with 0 S: the unused cells of the tile are OFF devices (G = g_off_s), not absent",
         lambda: transfer_matrix(to_tiles(block, size, 0.0)[0][0], **DEFAULTS)[:3, :2]),
        ("matches the 3x2 block solved alone: it sits in a full size x size tile of OFF devices",
         lambda: transfer_matrix(block, **DEFAULTS)),
        *_t_symptoms(tile, DEFAULTS, 3, 2),
    ]
    call = Call("padded_tile_transfer", ("block", size, G_MIN_S), DEFAULTS, "T")
    return Trial({"block": block}, (call,), ("T",),
                 lambda got: check_array("T of the block (S)", got["T"], expected, RTOL_T, 1e-18, symptoms))


def _nf(rng):
    G, seed = rng.uniform(G_MIN_S, G_MAX_S, (4, 6)), int(rng.integers(2**31))
    T = transfer_matrix(G, **DEFAULTS)
    expected = nonideality_factor(G, T, n_inputs=16, seed=seed)
    symptoms = [("NF has the wrong sign: NF = (I_ideal - I) / I_ideal", lambda: -expected)]
    call = Call("nonideality_factor", ("G", "T"), {"n_inputs": 16, "seed": seed}, "NF")
    return Trial({"G": G, "T": T}, (call,), ("NF",),
                 lambda got: check_scalar("NF", got["NF"], expected, 1e-9, symptoms=symptoms))


_WORKED = "2x2, every G = g ~ U[0.5, 2] mS, every resistance r ~ U[0.5, 2] kOhm, v = (v0 ~ U[0.5, 1.5], 0) V"
_RANDOM = "G uniform [5, 50] uS, v ~ U[0, 1], R_source, R_sink ~ U[20, 100] ohm, wires ~ U[1, 5] ohm"

CASES = (
    Case("nodal_system 2x2 worked example", 3, f"{_WORKED} (docs/physics.md 7)", lambda rng: _nodal(*_worked(rng))),
    Case("nodal_system 3x4 random", 2, f"(3, 4), {_RANDOM}", lambda rng: _nodal(*_random(rng, (3, 4)))),
    Case("node_voltages 2x2 worked example", 2, f"{_WORKED} (docs/physics.md 7)",
         lambda rng: _node_voltages(*_worked(rng))),
    Case("node_voltages 3x4 random", 2, f"(3, 4), {_RANDOM}", lambda rng: _node_voltages(*_random(rng, (3, 4)))),
    Case("transfer_matrix 2x2 worked example", 3, f"{_WORKED} (docs/physics.md 7)",
         lambda rng: _transfer(*_worked(rng)[::2])),
    Case("transfer_matrix 3x5 random", 3, f"(3, 5), {_RANDOM}", lambda rng: _transfer(*_random(rng, (3, 5))[::2])),
    Case("transfer_matrix 8x8 default resistances", 2, f"G (8, 8) uniform [5, 50] uS, {_ohm(DEFAULTS)}",
         lambda rng: _transfer(rng.uniform(G_MIN_S, G_MAX_S, (8, 8)), DEFAULTS)),
    Case("padded_tile_transfer", 3, f"block (3, 2) uniform [5, 50] uS in a 5x5 tile, g_off 5 uS, {_ohm(DEFAULTS)}",
         _padded),
    Case("nonideality_factor", 2, "G (4, 6) uniform [5, 50] uS, T at the default resistances, n_inputs 16, "
         "a drawn seed", _nf),
)
