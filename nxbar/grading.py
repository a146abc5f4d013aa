"""Autograder of the course assignments in docs/assignments/ (one list of cases per assignment).

`grade(assignment, student_file)` imports the student's file from its path, runs every case of the
assignment on seeded generated inputs, compares the student's results with nxbar's own functions and
returns a `Report`. Whatever the student's code does (raises, returns the wrong shape, dtype or type,
NaN), the case fails with a message naming the input, what was expected and what came back; the grader
itself never crashes on student code. Where a wrong answer matches a known typical mistake exactly,
the message names that mistake ("symptom: ...").

Comparison: |got - expected| <= atol + rtol |expected| elementwise, tolerances stated in each message.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from nxbar.attacks import fgsm, pgd, project
from nxbar.crossbar.circuit import nodal_system, node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.tiling import to_tiles
from nxbar.models import layers
from nxbar.models.vgg import VGG, random_params


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One graded case: its name, points earned (all or nothing), points possible, pass flag, message."""

    case: str
    points: int
    max_points: int
    passed: bool
    message: str


@dataclass(frozen=True)
class Report:
    """The graded cases of one assignment for one student file."""

    assignment: int
    student_file: str
    rows: tuple[Row, ...]

    @property
    def score(self) -> int:
        return sum(r.points for r in self.rows)

    @property
    def max_score(self) -> int:
        return sum(r.max_points for r in self.rows)

    def table(self) -> str:
        """Plain-text score table: one line per case, failure messages indented below it, total last."""
        width = max(len(r.case) for r in self.rows)
        lines = [f"assignment {self.assignment}: {self.student_file}", ""]
        for r in self.rows:
            mark = "ok  " if r.passed else "FAIL"
            lines.append(f"{mark} {r.case:<{width}}  {r.points:>2}/{r.max_points}")
            if not r.passed:
                lines.append(f"       {r.message}")
        lines += ["", f"score {self.score}/{self.max_score}"]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Cases and checks
# ----------------------------------------------------------------------------------------------
class CaseFailed(Exception):
    """A case's verdict: the student's result is wrong (the message says how)."""


@dataclass(frozen=True)
class Case:
    """`run(student_module)` returns None when the student passes, raises CaseFailed (or anything) if not.
    `inputs` describes the generated input; it starts every failure message."""

    name: str
    points: int
    inputs: str
    run: Callable


def _function(mod, name: str) -> Callable:
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise CaseFailed(f"function {name} is missing from the file")
    return fn


def _pair(value, what: str):
    if not isinstance(value, tuple) or len(value) != 2:
        raise CaseFailed(f"{what} must return a tuple of 2 values, got {type(value).__name__}")
    return value


def _check_array(what: str, got, expected: np.ndarray, rtol: float, atol: float, symptoms=(), nan_hint: str = ""):
    """Fail unless `got` is an ndarray of expected's shape and dtype, finite and close to `expected`.

    symptoms: (text, alternative) pairs, `alternative()` the array a known mistake produces; the first that
    matches `got` is named in the message.
    """
    if not isinstance(got, np.ndarray):
        raise CaseFailed(f"{what}: expected a numpy array, got {type(got).__name__}")
    if got.shape != expected.shape:
        raise CaseFailed(f"{what}: expected shape {expected.shape}, got shape {got.shape}")
    if got.dtype != expected.dtype:
        raise CaseFailed(f"{what}: expected dtype {expected.dtype} (the input's), got dtype {got.dtype}")
    finite = np.isfinite(got)
    if not finite.all():
        idx = tuple(int(k) for k in np.argwhere(~finite)[0])
        raise CaseFailed(
            f"{what}: {int((~finite).sum())} NaN/inf entries, first at index {idx}: expected {expected[idx]:.6g}, "
            f"got {got[idx]}" + (f"; {nan_hint}" if nan_hint else "")
        )
    excess = np.abs(got.astype(np.float64) - expected) - (atol + rtol * np.abs(expected.astype(np.float64)))
    if (excess > 0).any():
        idx = tuple(int(k) for k in np.unravel_index(np.argmax(excess), excess.shape))
        msg = (
            f"{what}: {int((excess > 0).sum())} of {excess.size} entries wrong; worst at index {idx}: "
            f"expected {expected[idx]:.6g}, got {got[idx]:.6g} (tolerance {atol:g} + {rtol:g} |expected|)"
        )
        for text, alternative in symptoms:
            alt = alternative()
            if alt.shape == got.shape and np.allclose(got, alt, rtol=rtol, atol=atol):
                msg += f"; symptom: {text}"
                break
        raise CaseFailed(msg)


def _check_scalar(what: str, got, expected: float, rtol: float, nan_hint: str = "", symptoms=()):
    try:
        value = float(got)
    except (TypeError, ValueError):
        raise CaseFailed(f"{what}: expected a number, got {type(got).__name__}") from None
    if not np.isfinite(value):
        raise CaseFailed(f"{what}: expected {expected:.10g}, got {value}" + (f"; {nan_hint}" if nan_hint else ""))
    if abs(value - expected) > rtol * abs(expected):
        msg = f"{what}: expected {expected:.10g}, got {value:.10g} (tolerance {rtol:g} relative)"
        for text, alternative in symptoms:
            if abs(value - alternative()) <= rtol * abs(expected):
                msg += f"; symptom: {text}"
                break
        raise CaseFailed(msg)


# ----------------------------------------------------------------------------------------------
# Assignment 1: layers
# ----------------------------------------------------------------------------------------------
RTOL_64, ATOL_64 = 1e-9, 1e-12  # float64 cases: only rounding differences allowed
RTOL_32, ATOL_32 = 1e-4, 1e-6  # float32 cases

ORDER_SYMPTOM = "matches im2col columns in (c_in, ky, kx) order; the row order must be (ky, kx, c_in)"


def _wrong_order(cols: np.ndarray, c: int) -> np.ndarray:
    """Columns (M, 9C) in (ky, kx, c) order re-read as (c, ky, kx) order: the wrong-ordering mistake."""
    return np.ascontiguousarray(cols.reshape(-1, 9, c).transpose(0, 2, 1).reshape(-1, 9 * c))


def _conv_input(seed: int, shape, c_out: int, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((c_out, shape[3], 3, 3)).astype(dtype)
    dout = rng.standard_normal(shape[:3] + (c_out,)).astype(dtype)
    return x, layers.conv_weight_to_matrix(w), dout


def _case_im2col(mod, shape=(2, 5, 4, 3), seed=1):
    x = np.random.default_rng(seed).standard_normal(shape)
    expected = layers.im2col_3x3(x)
    got = _function(mod, "im2col_3x3")(x.copy())
    _check_array("cols", got, expected, RTOL_64, ATOL_64, [(ORDER_SYMPTOM, lambda: _wrong_order(expected, shape[3]))])


def _case_conv_forward(mod, shape, c_out, dtype, seed):
    x, w_mat, _ = _conv_input(seed, shape, c_out, dtype)
    expected, _ = layers.conv3x3_forward(x, w_mat)
    out, _ = _pair(_function(mod, "conv3x3_forward")(x.copy(), w_mat.copy()), "conv3x3_forward")
    tol = (RTOL_64, ATOL_64) if dtype == np.float64 else (RTOL_32, ATOL_32)
    wrong = lambda: (_wrong_order(layers.im2col_3x3(x), shape[3]) @ w_mat).reshape(expected.shape)  # noqa: E731
    _check_array("out", out, expected, *tol, [(ORDER_SYMPTOM, wrong)])


def _case_conv_backward(mod, which: str, seed=3):
    shape, c_out = (2, 4, 5, 3), 4
    x, w_mat, dout = _conv_input(seed, shape, c_out, np.float64)
    _, cache = layers.conv3x3_forward(x, w_mat)
    dx, dw = layers.conv3x3_backward(dout, cache)
    _, student_cache = _pair(_function(mod, "conv3x3_forward")(x.copy(), w_mat.copy()), "conv3x3_forward")
    got = _pair(_function(mod, "conv3x3_backward")(dout.copy(), student_cache), "conv3x3_backward")
    if which == "dx":
        dcols = (dout.reshape(-1, c_out) @ w_mat.T).reshape(-1, shape[3], 9).transpose(0, 2, 1).reshape(-1, 9 * 3)
        wrong = lambda: layers.col2im_3x3(np.ascontiguousarray(dcols), shape)  # noqa: E731
        _check_array("dx", got[0], dx, RTOL_64, ATOL_64, [(ORDER_SYMPTOM, wrong)])
    else:
        _check_array("dw (C_out, C_in, 3, 3)", got[1], dw, RTOL_64, ATOL_64)


def _pool_input(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    shape = (2, 4, 6, 3)
    x = rng.integers(0, 2, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    return x, rng.standard_normal((2, 2, 3, 3))


def _upsample(a: np.ndarray) -> np.ndarray:
    return a.repeat(2, axis=1).repeat(2, axis=2)


def _case_pool_forward(mod, seed=4):
    x, _ = _pool_input(seed, ties=False)
    expected, _ = layers.maxpool2_forward(x)
    out, _ = _pair(_function(mod, "maxpool2_forward")(x.copy()), "maxpool2_forward")
    _check_array("out", out, expected, RTOL_64, ATOL_64)


def _case_pool_backward(mod, ties: bool, seed=5):
    x, dout = _pool_input(seed, ties)
    out, cache = layers.maxpool2_forward(x)
    expected = layers.maxpool2_backward(dout, cache)
    _, student_cache = _pair(_function(mod, "maxpool2_forward")(x.copy()), "maxpool2_forward")
    got = _function(mod, "maxpool2_backward")(dout.copy(), student_cache)
    symptoms = [
        ("the gradient went to every cell of each 2x2 window, not only to its maximum", lambda: _upsample(dout)),
        (
            "the gradient went to every tied maximum of a window; only the first maximum in scan order "
            "(0,0), (0,1), (1,0), (1,1) may receive it",
            lambda: _upsample(dout) * (x == _upsample(out)),
        ),
    ]
    _check_array("dx", got, expected, RTOL_64, ATOL_64, symptoms)


def _softmax_input(seed: int, scale: float):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((5, 7)), rng.integers(0, 7, 5)


OVERFLOW_HINT = "exp overflowed: subtract each row's maximum logit before exponentiating"


def _case_softmax(mod, which: str, scale: float, seed=6):
    logits, y = _softmax_input(seed, scale)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    got = _pair(_function(mod, "softmax_cross_entropy")(logits.copy(), y.copy()), "softmax_cross_entropy")
    if which == "loss":
        _check_scalar("loss", got[0], loss, RTOL_64, OVERFLOW_HINT)
    else:
        symptoms = [("the gradient is not divided by N (L is the mean over the batch)", lambda: dlogits * len(y))]
        _check_array("dlogits", got[1], dlogits, RTOL_64, ATOL_64, symptoms, OVERFLOW_HINT)


ASSIGNMENT_1 = (
    Case("im2col_3x3 values", 3, "x (2, 5, 4, 3) float64, seed 1", _case_im2col),
    Case("conv3x3_forward", 3, "x (2, 5, 4, 3) -> C_out 4, float64, seed 2",
         lambda m: _case_conv_forward(m, (2, 5, 4, 3), 4, np.float64, 2)),
    Case("conv3x3_forward float32", 1, "x (1, 6, 6, 2) -> C_out 5, float32, seed 7",
         lambda m: _case_conv_forward(m, (1, 6, 6, 2), 5, np.float32, 7)),
    Case("conv3x3_backward dx", 3, "x (2, 4, 5, 3) -> C_out 4, float64, dout seed 3",
         lambda m: _case_conv_backward(m, "dx")),
    Case("conv3x3_backward dw", 3, "x (2, 4, 5, 3) -> C_out 4, float64, dout seed 3",
         lambda m: _case_conv_backward(m, "dw")),
    Case("maxpool2_forward", 2, "x (2, 4, 6, 3) float64, seed 4", _case_pool_forward),
    Case("maxpool2_backward", 3, "x (2, 4, 6, 3) float64, seed 5", lambda m: _case_pool_backward(m, False)),
    Case("maxpool2_backward ties", 2, "x (2, 4, 6, 3) of 0s and 1s (tied maxima), seed 5",
         lambda m: _case_pool_backward(m, True)),
    Case("softmax_cross_entropy loss", 2, "logits (5, 7) ~ N(0, 1), seed 6", lambda m: _case_softmax(m, "loss", 1.0)),
    Case("softmax_cross_entropy dlogits", 2, "logits (5, 7) ~ N(0, 1), seed 6",
         lambda m: _case_softmax(m, "grad", 1.0)),
    Case("softmax_cross_entropy large logits", 2, "logits (5, 7) ~ 1000 N(0, 1), seed 6",
         lambda m: _case_softmax(m, "grad", 1000.0)),
)



# ----------------------------------------------------------------------------------------------
# Assignment 2: crossbar
# ----------------------------------------------------------------------------------------------
RTOL_T = 1e-8  # the student's dense solve against nxbar's structured elimination (they agree to ~1e-12)
WORKED = {"r_source_ohm": 1e3, "r_sink_ohm": 1e3, "r_wire_row_ohm": 1e3, "r_wire_col_ohm": 1e3}  # physics.md 7
RANDOM = {"r_source_ohm": 50.0, "r_sink_ohm": 80.0, "r_wire_row_ohm": 2.0, "r_wire_col_ohm": 3.0}
SPEC = {"r_source_ohm": 100.0, "r_sink_ohm": 100.0, "r_wire_row_ohm": 1.0, "r_wire_col_ohm": 1.0}
G_MIN_S, G_MAX_S = 1 / 200e3, 1 / 20e3


def _ohm(res: dict) -> str:
    return ", ".join(f"{k[2:-4]} {v:g}" for k, v in res.items()) + " ohm"


def _tile(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).uniform(G_MIN_S, G_MAX_S, shape)


def _t_symptoms(G: np.ndarray, res: dict, rows: int, cols: int):
    """Transfer-matrix mistakes on the tile G, each cut to the graded (rows, cols) block."""
    T = lambda **change: transfer_matrix(G, **{**res, **change})[:rows, :cols]  # noqa: E731
    return [
        ("matches the circuit with R_sink = 0 (column bottoms grounded directly): the sink resistor is missing",
         lambda: T(r_sink_ohm=0.0)),
        ("matches the circuit with R_source = 0: the source resistor is missing", lambda: T(r_source_ohm=0.0)),
        ("matches T transposed: T[i, j] is the current out of column j per volt on row i (I = V T)",
         lambda: transfer_matrix(G, **res).T[:rows, :cols]),
    ]


def _case_nodal(mod, G, v, res):
    A, B, _ = nodal_system(G, **res)
    A = A.toarray()
    sink_nodes = G.size + np.arange(G.size - G.shape[1], G.size)  # c(R-1, j)
    no_sink = A.copy()
    no_sink[sink_nodes, sink_nodes] -= 1.0 / res["r_sink_ohm"]
    got = _pair(_function(mod, "nodal_system")(G.copy(), v.copy(), **res), "nodal_system")
    symptom = "the bottom column nodes c(R-1, j) lack the 1/R_sink term of the sink resistor"
    _check_array("A", got[0], A, 1e-9, 1e-15, [(symptom, lambda: no_sink)])
    _check_array("b", got[1], B @ v, 1e-9, 1e-15)


def _case_node_voltages(mod, G, v, res):
    expected = node_voltages(G, v, **res)
    got = _function(mod, "node_voltages")(G.copy(), v.copy(), **res)
    if not isinstance(got, tuple) or len(got) != 3:
        raise CaseFailed(f"node_voltages must return a tuple (v_row, v_col, i_out), got {type(got).__name__}")
    sink = lambda k: (lambda: node_voltages(G, v, **{**res, "r_sink_ohm": 0.0})[k])  # noqa: E731
    text = "matches the circuit with R_sink = 0 (column bottoms grounded directly): the sink resistor is missing"
    for k, (what, atol) in enumerate((("v_row (V)", 1e-12), ("v_col (V)", 1e-12), ("i_out (A)", 1e-18))):
        _check_array(what, got[k], expected[k], RTOL_T, atol, [(text, sink(k))])


def _case_transfer(mod, G, res):
    got = _function(mod, "transfer_matrix")(G.copy(), **res)
    _check_array("T (S)", got, transfer_matrix(G, **res), RTOL_T, 1e-18, _t_symptoms(G, res, *G.shape))


def _case_padded(mod, seed=13):
    block, size = _tile(seed, (3, 2)), 5
    tile = to_tiles(block, size, G_MIN_S)[0][0]
    expected = transfer_matrix(tile, **SPEC)[:3, :2]
    got = _function(mod, "padded_tile_transfer")(block.copy(), size, G_MIN_S, **SPEC)
    symptoms = [
        ("matches padding with 0 S: the unused cells of the tile are OFF devices (G = g_off_s), not absent",
         lambda: transfer_matrix(to_tiles(block, size, 0.0)[0][0], **SPEC)[:3, :2]),
        ("matches the 3x2 block solved alone: it sits in a full size x size tile of OFF devices",
         lambda: transfer_matrix(block, **SPEC)),
        *_t_symptoms(tile, SPEC, 3, 2),
    ]
    _check_array("T of the block (S)", got, expected, RTOL_T, 1e-18, symptoms)


def _case_nf(mod, seed=14):
    G = _tile(seed, (4, 6))
    T = transfer_matrix(G, **SPEC)
    expected = nonideality_factor(G, T, n_inputs=16, seed=3)
    got = _function(mod, "nonideality_factor")(G.copy(), T.copy(), n_inputs=16, seed=3)
    symptoms = [("NF has the wrong sign: NF = (I_ideal - I) / I_ideal", lambda: -expected)]
    _check_scalar("NF", got, expected, 1e-9, symptoms=symptoms)


_G22, _V10 = np.full((2, 2), 1e-3), np.array([1.0, 0.0])
_G34, _V34 = _tile(10, (3, 4)), np.random.default_rng(10).uniform(0, 1, 3)

ASSIGNMENT_2 = (
    Case("nodal_system 2x2 worked example", 3, "G = 1 mS, all resistances 1 kOhm, v = (1, 0) V (physics.md 7)",
         lambda m: _case_nodal(m, _G22, _V10, WORKED)),
    Case("nodal_system 3x4 random", 2, f"G (3, 4) uniform [5, 50] uS seed 10, v ~ U[0, 1] seed 10, {_ohm(RANDOM)}",
         lambda m: _case_nodal(m, _G34, _V34, RANDOM)),
    Case("node_voltages 2x2 worked example", 2, "G = 1 mS, all resistances 1 kOhm, v = (1, 0) V (physics.md 7)",
         lambda m: _case_node_voltages(m, _G22, _V10, WORKED)),
    Case("node_voltages 3x4 random", 2, f"G (3, 4) uniform [5, 50] uS seed 10, v ~ U[0, 1] seed 10, {_ohm(RANDOM)}",
         lambda m: _case_node_voltages(m, _G34, _V34, RANDOM)),
    Case("transfer_matrix 2x2 worked example", 3, "G = 1 mS, all resistances 1 kOhm (physics.md 7)",
         lambda m: _case_transfer(m, _G22, WORKED)),
    Case("transfer_matrix 3x5 random", 3, f"G (3, 5) uniform [5, 50] uS seed 11, {_ohm(RANDOM)}",
         lambda m: _case_transfer(m, _tile(11, (3, 5)), RANDOM)),
    Case("transfer_matrix 8x8 SPEC defaults", 2, f"G (8, 8) uniform [5, 50] uS seed 12, {_ohm(SPEC)}",
         lambda m: _case_transfer(m, _tile(12, (8, 8)), SPEC)),
    Case("padded_tile_transfer", 3, f"block (3, 2) uniform [5, 50] uS seed 13 in a 5x5 tile, g_off 5 uS, {_ohm(SPEC)}",
         _case_padded),
    Case("nonideality_factor", 2, "G (4, 6) uniform [5, 50] uS seed 14, T at SPEC defaults, n_inputs 16, seed 3",
         _case_nf),
)



# ----------------------------------------------------------------------------------------------
# Assignment 3: attacks
# ----------------------------------------------------------------------------------------------
class LinearSoftmax:
    """A tiny model for grading attacks: logits = flatten(x) @ W + b, mean softmax cross-entropy loss."""

    def __init__(self, seed: int, shape, num_classes: int, dtype):
        rng = np.random.default_rng(seed)
        self.w = rng.standard_normal((int(np.prod(shape)), num_classes)).astype(dtype)
        self.b = rng.standard_normal(num_classes).astype(dtype)

    def loss_and_input_grad(self, x, y):
        loss, dlogits = layers.softmax_cross_entropy(x.reshape(len(x), -1) @ self.w + self.b, y)
        return loss, (dlogits @ self.w.T).reshape(x.shape)


def _attack_input(seed: int, shape, num_classes: int, dtype, edges: bool):
    """Images in [0.1, 0.9] (no clipping at eps <= 0.1), or with half their pixels exactly 0 or 1 (edges)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.9, shape)
    if edges:
        x = np.where(rng.uniform(size=shape) < 0.5, rng.integers(0, 2, shape), x)
    return x.astype(dtype), rng.integers(0, num_classes, shape[0])


@functools.lru_cache(maxsize=1)
def _small_vgg():
    params = random_params("vgg8", num_classes=10, input_size=32, seed=0)
    return VGG("vgg8", params, num_classes=10, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)


def _attack_mistake(model, x, y, eps, steps, alpha, start, sign=1.0, ball=True, box=True):
    """PGD (FGSM: steps 1, alpha eps, start x) with one of the typical mistakes switched on."""
    x_adv = start
    for _ in range(steps):
        x_adv = x_adv + sign * alpha * np.sign(model.loss_and_input_grad(x_adv, y)[1])
        x_adv = np.clip(x_adv, x - eps, x + eps) if ball else x_adv
        x_adv = np.clip(x_adv, 0.0, 1.0) if box else x_adv
    return x_adv.astype(x.dtype)


def _attack_symptoms(model, x, y, eps, steps, alpha, start):
    run = lambda **mistake: lambda: _attack_mistake(model, x, y, eps, steps, alpha, start, **mistake)  # noqa: E731
    return [
        ("the step goes down the gradient (x - eps sign(grad)): the sign of the step is flipped", run(sign=-1.0)),
        ("the result is not clipped to the image box [0, 1]", run(box=False)),
        ("the iterates are not projected back onto the eps-ball |x_adv - x|_inf <= eps", run(ball=False)),
    ]


def _tolerance(dtype):
    return (0.0, 1e-12) if dtype == np.float64 else (0.0, 1e-6)


def _case_fgsm(mod, model, x, y, eps):
    expected = fgsm(model, x, y, eps)
    got = _function(mod, "fgsm")(model, x.copy(), y.copy(), eps)
    e = np.asarray(eps, dtype=x.dtype)
    _check_array("x_adv", got, expected, *_tolerance(x.dtype), _attack_symptoms(model, x, y, e, 1, e, x))


def _case_pgd(mod, model, x, y, eps, steps, alpha, random_start, seed=5):
    expected = pgd(model, x, y, eps, steps=steps, alpha=alpha, random_start=random_start,
                   rng=np.random.default_rng(seed))
    got = _function(mod, "pgd")(model, x.copy(), y.copy(), eps, steps=steps, alpha=alpha,
                                random_start=random_start, rng=np.random.default_rng(seed))
    e, a = np.asarray(eps, dtype=x.dtype), np.asarray(alpha, dtype=x.dtype)
    start = x
    if random_start:
        noise = np.random.default_rng(seed).uniform(-1.0, 1.0, size=x.shape).astype(x.dtype) * e
        start = project(x + noise, x, e)
    _check_array("x_adv", got, expected, *_tolerance(x.dtype), _attack_symptoms(model, x, y, e, steps, a, start))


_LIN = lambda dtype: LinearSoftmax(20, (4, 4, 3), 5, dtype)  # noqa: E731
_IMAGES = "6 images (4, 4, 3) in [0.1, 0.9], labels of 5 classes, seed 21"
_EDGES = "6 images (4, 4, 3), half the pixels exactly 0 or 1, seed 22"
_LIN_TEXT = "linear softmax model (48 -> 5, seed 20)"
_VGG_TEXT = "random VGG8 (seed 0), 1 image (32, 32, 3) in [0.1, 0.9], seed 23, float32"
_EPS = 8 / 255
_PER_CHANNEL = np.array([4, 8, 12]) / 255

ASSIGNMENT_3 = (
    Case("fgsm", 3, f"{_LIN_TEXT}, float64, {_IMAGES}, eps 8/255",
         lambda m: _case_fgsm(m, _LIN(np.float64), *_attack_input(21, (6, 4, 4, 3), 5, np.float64, False), _EPS)),
    Case("fgsm clips to [0, 1]", 2, f"{_LIN_TEXT}, float64, {_EDGES}, eps 8/255",
         lambda m: _case_fgsm(m, _LIN(np.float64), *_attack_input(22, (6, 4, 4, 3), 5, np.float64, True), _EPS)),
    Case("fgsm per-channel eps, float32", 2, f"{_LIN_TEXT}, float32, {_IMAGES}, eps (4, 8, 12)/255",
         lambda m: _case_fgsm(m, _LIN(np.float32), *_attack_input(21, (6, 4, 4, 3), 5, np.float32, False),
                              _PER_CHANNEL)),
    Case("fgsm on VGG8", 2, f"{_VGG_TEXT}, eps 8/255",
         lambda m: _case_fgsm(m, _small_vgg(), *_attack_input(23, (1, 32, 32, 3), 10, np.float32, False), _EPS)),
    Case("pgd", 3, f"{_LIN_TEXT}, float64, {_IMAGES}, eps 8/255, 5 steps, alpha 2/255, no random start",
         lambda m: _case_pgd(m, _LIN(np.float64), *_attack_input(21, (6, 4, 4, 3), 5, np.float64, False),
                             _EPS, 5, 2 / 255, False)),
    Case("pgd random start", 3, f"{_LIN_TEXT}, float64, {_IMAGES}, eps 8/255, 3 steps, alpha 2/255, rng seed 5",
         lambda m: _case_pgd(m, _LIN(np.float64), *_attack_input(21, (6, 4, 4, 3), 5, np.float64, False),
                             _EPS, 3, 2 / 255, True)),
    Case("pgd clips to [0, 1]", 2, f"{_LIN_TEXT}, float64, {_EDGES}, eps 8/255, 3 steps, alpha 2/255",
         lambda m: _case_pgd(m, _LIN(np.float64), *_attack_input(22, (6, 4, 4, 3), 5, np.float64, True),
                             _EPS, 3, 2 / 255, False)),
)

ASSIGNMENTS = {1: ASSIGNMENT_1, 2: ASSIGNMENT_2, 3: ASSIGNMENT_3}


# ----------------------------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------------------------
def _load(student_file: Path):
    spec = importlib.util.spec_from_file_location(f"nxbar_student_{student_file.stem}", student_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(case: Case, module) -> Row:
    try:
        case.run(module)
    except CaseFailed as fail:
        return Row(case.name, 0, case.points, False, f"input {case.inputs}: {fail}")
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- any error in student code is a failed case, never a crash
        return Row(case.name, 0, case.points, False, f"input {case.inputs}: raised {type(err).__name__}: {err}")
    return Row(case.name, case.points, case.points, True, "")


def grade(assignment: int, student_file: str) -> Report:
    """Grade `student_file` (a .py file) on assignment 1, 2 or 3; returns the Report of every case."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment!r}")
    path = Path(student_file)
    if not path.is_file():
        raise ValueError(f"student_file {student_file!r} is not a file")
    cases = ASSIGNMENTS[assignment]
    try:
        module = _load(path)
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- a file that does not import fails every case
        msg = f"the file could not be imported: {type(err).__name__}: {err}"
        return Report(assignment, str(path), tuple(Row(c.name, 0, c.points, False, msg) for c in cases))
    return Report(assignment, str(path), tuple(_run(c, module) for c in cases))
