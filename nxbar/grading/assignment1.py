"""Cases of assignment 1 (docs/assignments/assignment1_layers.md): the layers, against nxbar.models.layers."""

from __future__ import annotations

import numpy as np

from nxbar.grading.core import Call, Case, Trial, check_array, check_scalar
from nxbar.models import layers

RTOL_64, ATOL_64 = 1e-9, 1e-12  # float64 cases: only rounding differences allowed
RTOL_32, ATOL_32 = 1e-4, 1e-6  # float32 cases

ORDER_SYMPTOM = "matches im2col columns in (c_in, ky, kx) order; the row order must be (ky, kx, c_in)"
DW_SYMPTOM = ("matches dw_mat.T reshaped to (C_out, C_in, 3, 3) as it is, but the rows of dw_mat are in "
              "(ky, kx, c_in) order: dw[o, c, ky, kx] = dw_mat[(ky*3 + kx)*C_in + c, o]")
OVERFLOW_HINT = "exp overflowed: subtract each row's maximum logit before exponentiating"
LOSS_HINT = ("exp overflowed (NaN) or a softmax probability underflowed to 0 and its log is -inf (inf): compute "
             "each row's loss as logsumexp(z) - z[y], with the row's maximum subtracted before exponentiating")


def _wrong_order(cols: np.ndarray, c: int) -> np.ndarray:
    """Columns (M, 9C) in (ky, kx, c) order re-read as (c, ky, kx) order: the wrong-ordering mistake."""
    return np.ascontiguousarray(cols.reshape(-1, 9, c).transpose(0, 2, 1).reshape(-1, 9 * c))


def _conv_input(rng, shape, c_out: int, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((c_out, shape[3], 3, 3)).astype(dtype)
    dout = rng.standard_normal(shape[:3] + (c_out,)).astype(dtype)
    return x, layers.conv_weight_to_matrix(w), dout


def _im2col(rng, shape=(2, 5, 4, 3)):
    x = rng.standard_normal(shape)
    expected = layers.im2col_3x3(x)
    symptoms = [(ORDER_SYMPTOM, lambda: _wrong_order(expected, shape[3]))]
    return Trial({"x": x}, (Call("im2col_3x3", ("x",), returns="cols"),), ("cols",),
                 lambda got: check_array("cols", got["cols"], expected, RTOL_64, ATOL_64, symptoms))


_FORWARD = Call("conv3x3_forward", ("x", "w_mat"), returns=("out", "cache"))


def _conv_forward(rng, shape, c_out, dtype):
    x, w_mat, _ = _conv_input(rng, shape, c_out, dtype)
    expected, _ = layers.conv3x3_forward(x, w_mat)
    tol = (RTOL_64, ATOL_64) if dtype == np.float64 else (RTOL_32, ATOL_32)
    wrong = lambda: (_wrong_order(layers.im2col_3x3(x), shape[3]) @ w_mat).reshape(expected.shape)  # noqa: E731
    return Trial({"x": x, "w_mat": w_mat}, (_FORWARD,), ("out",),
                 lambda got: check_array("out", got["out"], expected, *tol, [(ORDER_SYMPTOM, wrong)]))


def _conv_backward(rng, which: str):
    shape, c_out = (2, 4, 5, 3), 4
    x, w_mat, dout = _conv_input(rng, shape, c_out, np.float64)
    _, cache = layers.conv3x3_forward(x, w_mat)
    dx, dw = layers.conv3x3_backward(dout, cache)
    calls = (_FORWARD, Call("conv3x3_backward", ("dout", "cache"), returns=("dx", "dw")))
    arrays = {"x": x, "w_mat": w_mat, "dout": dout}
    if which == "dx":
        dcols = (dout.reshape(-1, c_out) @ w_mat.T).reshape(-1, shape[3], 9).transpose(0, 2, 1).reshape(-1, 9 * 3)
        wrong = lambda: layers.col2im_3x3(np.ascontiguousarray(dcols), shape)  # noqa: E731
        return Trial(arrays, calls, ("dx",),
                     lambda got: check_array("dx", got["dx"], dx, RTOL_64, ATOL_64, [(ORDER_SYMPTOM, wrong)]))
    layout = lambda: layers.conv_weight_to_matrix(dw).T.reshape(dw.shape)  # noqa: E731
    return Trial(arrays, calls, ("dw",), lambda got: check_array("dw (C_out, C_in, 3, 3)", got["dw"], dw, RTOL_64,
                                                                 ATOL_64, [(DW_SYMPTOM, layout)]))


def _pool_input(rng, ties: bool):
    shape = (2, 4, 6, 3)
    x = rng.integers(0, 2, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    return x, rng.standard_normal((2, 2, 3, 3))


def _upsample(a: np.ndarray) -> np.ndarray:
    return a.repeat(2, axis=1).repeat(2, axis=2)


def _pool_forward(rng):
    x, _ = _pool_input(rng, ties=False)
    expected, _ = layers.maxpool2_forward(x)
    return Trial({"x": x}, (Call("maxpool2_forward", ("x",), returns=("out", "cache")),), ("out",),
                 lambda got: check_array("out", got["out"], expected, RTOL_64, ATOL_64))


def _pool_backward(rng, ties: bool):
    x, dout = _pool_input(rng, ties)
    out, cache = layers.maxpool2_forward(x)
    expected = layers.maxpool2_backward(dout, cache)
    symptoms = [
        ("the gradient went to every cell of each 2x2 window, not only to its maximum", lambda: _upsample(dout)),
        (
            "the gradient went to every tied maximum of a window; only the first maximum in scan order "
            "(0,0), (0,1), (1,0), (1,1) may receive it",
            lambda: _upsample(dout) * (x == _upsample(out)),
        ),
    ]
    calls = (Call("maxpool2_forward", ("x",), returns=("out", "cache")),
             Call("maxpool2_backward", ("dout", "cache"), returns="dx"))
    return Trial({"x": x, "dout": dout}, calls, ("dx",),
                 lambda got: check_array("dx", got["dx"], expected, RTOL_64, ATOL_64, symptoms))


def _softmax(rng, which: str, scale: float):
    logits, y = scale * rng.standard_normal((5, 7)), rng.integers(0, 7, 5)
    loss, dlogits = layers.softmax_cross_entropy(logits, y)
    grad_symptoms = [("the gradient is not divided by N (L is the mean over the batch)", lambda: dlogits * len(y))]

    def check(got):
        if which in ("grad", "both"):
            check_array("dlogits", got["dlogits"], dlogits, RTOL_64, ATOL_64, grad_symptoms, OVERFLOW_HINT)
        if which in ("loss", "both"):
            check_scalar("loss", got["loss"], loss, RTOL_64, LOSS_HINT)

    call = Call("softmax_cross_entropy", ("logits", "y"), returns=("loss", "dlogits"))
    return Trial({"logits": logits, "y": y}, (call,), ("loss", "dlogits"), check)


CASES = (
    Case("im2col_3x3 values", 3, "x (2, 5, 4, 3) ~ N(0, 1), float64", _im2col),
    Case("conv3x3_forward", 3, "x (2, 5, 4, 3) -> C_out 4, float64",
         lambda rng: _conv_forward(rng, (2, 5, 4, 3), 4, np.float64)),
    Case("conv3x3_forward float32", 1, "x (1, 6, 6, 2) -> C_out 5, float32",
         lambda rng: _conv_forward(rng, (1, 6, 6, 2), 5, np.float32)),
    Case("conv3x3_backward dx", 3, "x (2, 4, 5, 3) -> C_out 4, float64", lambda rng: _conv_backward(rng, "dx")),
    Case("conv3x3_backward dw", 3, "x (2, 4, 5, 3) -> C_out 4, float64", lambda rng: _conv_backward(rng, "dw")),
    Case("maxpool2_forward", 2, "x (2, 4, 6, 3) ~ N(0, 1), float64", _pool_forward),
    Case("maxpool2_backward", 3, "x (2, 4, 6, 3) ~ N(0, 1), float64", lambda rng: _pool_backward(rng, False)),
    Case("maxpool2_backward ties", 2, "x (2, 4, 6, 3) of 0s and 1s (tied maxima)",
         lambda rng: _pool_backward(rng, True)),
    Case("softmax_cross_entropy loss", 2, "logits (5, 7) ~ N(0, 1)", lambda rng: _softmax(rng, "loss", 1.0)),
    Case("softmax_cross_entropy dlogits", 2, "logits (5, 7) ~ N(0, 1)", lambda rng: _softmax(rng, "grad", 1.0)),
    Case("softmax_cross_entropy large logits", 2, "logits (5, 7) ~ 1000 N(0, 1), loss and dlogits",
         lambda rng: _softmax(rng, "both", 1000.0)),
)
