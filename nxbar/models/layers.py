"""Layers of the VGG networks as forward/backward pairs (docs/protocol.md section 2), CS231n style.

Every `*_forward` returns `(out, cache)`; the matching `*_backward(dout, cache, ...)` returns the gradient
with respect to the layer input (and, where the layer has parameters and `param_grads=True`, with respect
to them). Activations are NHWC, shape (N, H, W, C). Every function preserves the dtype of its input
(float32 in normal use, float64 for finite-difference checks); parameters are cast to it.

Weights of the MVM layers enter as matrices, rows = inputs and columns = outputs, exactly the matrices a
crossbar holds (docs/protocol.md section 4.1). `conv_weight_to_matrix` / `fc_weight_to_matrix` are the single
definition of that unrolling: the crossbar mapper imports them. Weight gradients come back in PyTorch layouts.
"""

from __future__ import annotations

import numba
import numpy as np

# Size of the im2col column buffer in elements (rows = images * H * W, 9 * C_in columns): the batch is
# convolved in blocks of whole images that fill at most this much (at least one image per block).
_IM2COL_ELEMENTS = 1 << 24


# -------------------------------------------------------------- weight unrolling (docs/protocol.md section 4.1)
def conv_weight_to_matrix(w: np.ndarray) -> np.ndarray:
    """Unroll a 3x3 conv weight (C_out, C_in, 3, 3) into the matrix M (9*C_in, C_out) used as `cols @ M`.

    M[(ky*3 + kx)*C_in + c, o] = w[o, c, ky, kx]: row order (ky, kx, c_in), exactly the column order
    of `im2col_3x3`. Returns a C-contiguous array of the same dtype.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise ValueError(f"w must have shape (C_out, C_in, 3, 3), got {w.shape}")
    c_out, c_in = w.shape[:2]
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(9 * c_in, c_out))


def matrix_to_conv_weight(m: np.ndarray, c_in: int) -> np.ndarray:
    """Inverse of `conv_weight_to_matrix`: (9*c_in, C_out) -> (C_out, c_in, 3, 3), C-contiguous."""
    m = np.asarray(m)
    if m.ndim != 2 or m.shape[0] != 9 * c_in:
        raise ValueError(f"m must have shape (9*c_in, C_out) = ({9 * c_in}, C_out), got {m.shape}")
    return np.ascontiguousarray(m.reshape(3, 3, c_in, m.shape[1]).transpose(3, 2, 0, 1))


def fc_weight_to_matrix(w: np.ndarray) -> np.ndarray:
    """Unroll a linear weight (out, in) into the matrix M = w^T (in, out) used as `x @ M`; C-contiguous."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"w must have shape (out, in), got {w.shape}")
    return np.ascontiguousarray(w.T)


def matrix_to_fc_weight(m: np.ndarray) -> np.ndarray:
    """Inverse of `fc_weight_to_matrix`: (in, out) -> (out, in), C-contiguous."""
    m = np.asarray(m)
    if m.ndim != 2:
        raise ValueError(f"m must have shape (in, out), got {m.shape}")
    return np.ascontiguousarray(m.T)


# ----------------------------------------------------------------------------- input normalisation
def normalize_forward(x: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """Per-channel normalisation y = (x - mean_c) / std_c over the last (channel) axis."""
    mean = np.asarray(mean, dtype=x.dtype)
    std = np.asarray(std, dtype=x.dtype)
    return (x - mean) / std, std


def normalize_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout / std_c."""
    return dout / cache


# ----------------------------------------------------------------------------- 3x3 convolution
@numba.njit(parallel=True, cache=True)
def _im2col_3x3(x, cols):
    n_img, h, w, c = x.shape
    for p in numba.prange(n_img * h):
        n, i = p // h, p % h
        for j in range(w):
            row = p * w + j
            for ky in range(3):
                yy = i + ky - 1
                for kx in range(3):
                    xx = j + kx - 1
                    base = (ky * 3 + kx) * c
                    if 0 <= yy < h and 0 <= xx < w:
                        for ch in range(c):
                            cols[row, base + ch] = x[n, yy, xx, ch]
                    else:
                        for ch in range(c):
                            cols[row, base + ch] = 0


@numba.njit(parallel=True, cache=True)
def _col2im_3x3(dcols, dx):
    # Gather form (each dx pixel sums the 9 column entries that copied it): no write conflicts.
    n_img, h, w, c = dx.shape
    for p in numba.prange(n_img * h):
        n, i = p // h, p % h
        for j in range(w):
            for ch in range(c):
                dx[n, i, j, ch] = 0
            for ky in range(3):
                yy = i - ky + 1
                for kx in range(3):
                    xx = j - kx + 1
                    if 0 <= yy < h and 0 <= xx < w:
                        row = (n * h + yy) * w + xx
                        base = (ky * 3 + kx) * c
                        for ch in range(c):
                            dx[n, i, j, ch] += dcols[row, base + ch]


def im2col_3x3(x: np.ndarray) -> np.ndarray:
    """Columns of a 3x3, stride 1, zero-pad 1 convolution: x (N, H, W, C) -> cols (N*H*W, 9*C).

    cols[(n*H + i)*W + j, (ky*3 + kx)*C + c] = x[n, i + ky - 1, j + kx - 1, c], 0 outside the image.
    """
    n, h, w, c = x.shape
    cols = np.empty((n * h * w, 9 * c), dtype=x.dtype)
    _im2col_3x3(np.ascontiguousarray(x), cols)
    return cols


def col2im_3x3(dcols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of `im2col_3x3`: scatter-add column gradients back to an image of `shape` (N, H, W, C)."""
    dx = np.empty(shape, dtype=dcols.dtype)
    _col2im_3x3(np.ascontiguousarray(dcols), dx)
    return dx


def _row_blocks(x: np.ndarray):
    """Image slices of `x` whose im2col has at most _IM2COL_ELEMENTS entries (at least one image each),
    and an empty column buffer large enough for one slice."""
    n, h, w, c = x.shape
    step = max(1, min(n, _IM2COL_ELEMENTS // (h * w * 9 * c)))
    buf = np.empty((step * h * w, 9 * c), dtype=x.dtype)
    return [slice(s, s + step) for s in range(0, n, step)], buf


def conv3x3_forward(x: np.ndarray, w_mat: np.ndarray):
    """3x3 convolution, stride 1, zero padding 1, no bias: out = im2col_3x3(x) @ w_mat.

    x (N, H, W, C_in), w_mat (9*C_in, C_out) from `conv_weight_to_matrix`; out (N, H, W, C_out), i.e.
    out[n, i, j, o] = sum_{ky, kx, c} x[n, i+ky-1, j+kx-1, c] w[o, c, ky, kx] (cross-correlation, as
    PyTorch's Conv2d). The batch is processed in blocks so the column buffer stays small.
    """
    n, h, w, c_in = x.shape
    w_mat = np.asarray(w_mat, dtype=x.dtype)
    if w_mat.shape[0] != 9 * c_in:
        raise ValueError(f"w_mat must have 9*C_in = {9 * c_in} rows for x with C_in = {c_in}, got {w_mat.shape}")
    c_out = w_mat.shape[1]
    x = np.ascontiguousarray(x)
    out = np.empty((n, h, w, c_out), dtype=x.dtype)
    blocks, buf = _row_blocks(x)
    for blk in blocks:
        xb = x[blk]
        cols = buf[: xb.shape[0] * h * w]
        _im2col_3x3(xb, cols)
        np.matmul(cols, w_mat, out=out[blk].reshape(-1, c_out))
    return out, (x, w_mat)


def conv3x3_backward(dout: np.ndarray, cache, param_grads: bool = True):
    """Gradients of `conv3x3_forward`: dx = col2im(dout @ w_mat^T); dw = unroll^-1(cols^T @ dout).

    Returns (dx, dw) with dw in PyTorch layout (C_out, C_in, 3, 3), or (dx, None) when param_grads is
    False (no weight work at all: the input-gradient path of attacks).
    """
    x, w_mat = cache
    n, h, w, c_in = x.shape
    c_out = w_mat.shape[1]
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = np.empty_like(x)
    dw_mat = np.zeros_like(w_mat) if param_grads else None
    blocks, buf = _row_blocks(x)
    for blk in blocks:
        d2 = dout[blk].reshape(-1, c_out)
        cols = buf[: d2.shape[0]]
        np.matmul(d2, w_mat.T, out=cols)
        _col2im_3x3(cols, dx[blk])
        if param_grads:
            _im2col_3x3(x[blk], cols)
            dw_mat += cols.T @ d2
    return dx, (matrix_to_conv_weight(dw_mat, c_in) if param_grads else None)


# ----------------------------------------------------------------------------- batch normalisation
def batchnorm_affine(dt, gamma, beta, running_mean, running_var, eps):
    """mean, 1/sqrt(var + eps), scale = gamma/sqrt(var + eps), shift = beta - mean scale, in dtype dt."""
    mean = np.asarray(running_mean, dtype=dt)
    inv_std = 1.0 / np.sqrt(np.asarray(running_var, dtype=dt) + dt.type(eps))
    scale = np.asarray(gamma, dtype=dt) * inv_std
    return mean, inv_std, scale, np.asarray(beta, dtype=dt) - mean * scale


def batchnorm_forward(x: np.ndarray, gamma, beta, running_mean, running_var, eps: float):
    """BatchNorm, inference form, per channel c (last axis):

    x_hat = (x - running_mean_c) / sqrt(running_var_c + eps),   y = gamma_c x_hat + beta_c,
    evaluated as y = x scale_c + shift_c, scale_c = gamma_c / sqrt(running_var_c + eps),
    shift_c = beta_c - running_mean_c scale_c.
    """
    mean, inv_std, scale, shift = batchnorm_affine(x.dtype, gamma, beta, running_mean, running_var, eps)
    out = x * scale
    out += shift
    return out, (x, mean, inv_std, scale)


def batchnorm_backward(dout: np.ndarray, cache, param_grads: bool = True):
    """dx = dout scale_c; dgamma_c = sum dout x_hat; dbeta_c = sum dout (running statistics are constants).

    Sums run over every axis but the last. Returns (dx, dgamma, dbeta), the last two None when
    param_grads is False.
    """
    x, mean, inv_std, scale = cache
    dx = dout * scale
    if not param_grads:
        return dx, None, None
    axes = tuple(range(dout.ndim - 1))
    return dx, (dout * ((x - mean) * inv_std)).sum(axis=axes), dout.sum(axis=axes)


# ----------------------------------------------------------------------------- ReLU
def relu_forward(x: np.ndarray):
    """y = max(x, 0)."""
    out = np.maximum(x, 0)
    return out, out


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout where x > 0, else 0 (the subgradient at x = 0 is taken as 0, as PyTorch does)."""
    return np.where(cache > 0, dout, dout.dtype.type(0))


# ----------------------------------------------------------------------------- BatchNorm + ReLU in one pass
@numba.njit(parallel=True, cache=True)
def _scale_shift_relu(x, scale, shift, out):
    for r in numba.prange(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[r, c] * scale[c] + shift[c]
            out[r, c] = v if v > 0 else 0


@numba.njit(parallel=True, cache=True)
def _scale_where_positive(dout, y, scale, dx):
    for r in numba.prange(dout.shape[0]):
        for c in range(dout.shape[1]):
            dx[r, c] = dout[r, c] * scale[c] if y[r, c] > 0 else 0


def batchnorm_relu_forward(x: np.ndarray, gamma, beta, running_mean, running_var, eps: float):
    """relu(batchnorm(x)) in one pass over memory: y = max(x scale_c + shift_c, 0) with scale_c, shift_c of
    `batchnorm_forward`. Same result as relu_forward(batchnorm_forward(x, ...)[0])."""
    mean, inv_std, scale, shift = batchnorm_affine(x.dtype, gamma, beta, running_mean, running_var, eps)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    c = x.shape[-1]
    _scale_shift_relu(x.reshape(-1, c), scale, shift, out.reshape(-1, c))
    return out, ((x, mean, inv_std, scale), out)


def batchnorm_relu_backward(dout: np.ndarray, cache, param_grads: bool = True):
    """relu_backward then batchnorm_backward: dx = dout scale_c where y > 0, else 0 (one pass when
    param_grads is False). Returns (dx, dgamma, dbeta) as `batchnorm_backward`."""
    bn_cache, y = cache
    if param_grads:
        return batchnorm_backward(relu_backward(dout, y), bn_cache, True)
    dout = np.ascontiguousarray(dout)
    dx = np.empty_like(dout)
    c = dout.shape[-1]
    _scale_where_positive(dout.reshape(-1, c), y.reshape(-1, c), bn_cache[3], dx.reshape(-1, c))
    return dx, None, None


# ----------------------------------------------------------------------------- 2x2 max-pool
@numba.njit(parallel=True, cache=True)
def _maxpool2_fwd(x, out, arg):
    n_img, ho, wo, c = out.shape
    for p in numba.prange(n_img * ho):
        n, i = p // ho, p % ho
        for j in range(wo):
            for ch in range(c):
                best = x[n, 2 * i, 2 * j, ch]
                k_best = 0
                for k in range(1, 4):
                    v = x[n, 2 * i + k // 2, 2 * j + k % 2, ch]
                    if v > best:
                        best = v
                        k_best = k
                out[n, i, j, ch] = best
                arg[n, i, j, ch] = k_best


# The same loop nest over the 2x2 windows as _maxpool2_fwd, on purpose: each numba kernel is one flat loop of
# its own (a shared iterator with a callback would cost the inlining that makes these fast).
@numba.njit(parallel=True, cache=True)
def _maxpool2_bwd(dout, arg, dx):
    n_img, ho, wo, c = dout.shape
    for p in numba.prange(n_img * ho):
        n, i = p // ho, p % ho
        for j in range(wo):
            for ch in range(c):
                k_best = arg[n, i, j, ch]
                for k in range(4):
                    dx[n, 2 * i + k // 2, 2 * j + k % 2, ch] = dout[n, i, j, ch] if k == k_best else 0


def maxpool2_forward(x: np.ndarray):
    """2x2 max-pool, stride 2: y[n, i, j, c] = max_{a, b in {0, 1}} x[n, 2i+a, 2j+b, c]. H, W must be even.

    Ties: the first maximum in the scan order (a, b) = (0,0), (0,1), (1,0), (1,1) is the argmax and
    receives the whole gradient (PyTorch's CPU rule).
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"maxpool2 needs even H and W, got {h}x{w}")
    out = np.empty((n, h // 2, w // 2, c), dtype=x.dtype)
    arg = np.empty(out.shape, dtype=np.uint8)
    _maxpool2_fwd(np.ascontiguousarray(x), out, arg)
    return out, arg


def maxpool2_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout routed to the argmax of each 2x2 window, 0 elsewhere."""
    arg = cache
    n, ho, wo, c = arg.shape
    dx = np.empty((n, 2 * ho, 2 * wo, c), dtype=dout.dtype)
    _maxpool2_bwd(np.ascontiguousarray(dout), arg, dx)
    return dx


# ----------------------------------------------------------------------------- flatten
def flatten_forward(x: np.ndarray):
    """NHWC (N, H, W, C) -> (N, C*H*W) in PyTorch (C, H, W) order, so PyTorch FC weights apply as is."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1), x.shape


def flatten_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Inverse permutation of `flatten_forward`: (N, C*H*W) -> (N, H, W, C)."""
    n, h, w, c = cache
    return np.ascontiguousarray(dout.reshape(n, c, h, w).transpose(0, 2, 3, 1))


# ----------------------------------------------------------------------------- linear
def linear_forward(x: np.ndarray, w_mat: np.ndarray, b: np.ndarray):
    """y = x W^T + b = x @ w_mat + b, with x (N, in), w_mat = fc_weight_to_matrix(W) (in, out), b (out,).

    The products here are evaluated transposed, (w_mat^T x^T)^T: for a small batch OpenBLAS is up to 10x
    faster with the weight as the left operand.
    """
    w_mat = np.asarray(w_mat, dtype=x.dtype)
    if w_mat.shape[0] != x.shape[1]:
        raise ValueError(f"w_mat must have {x.shape[1]} rows (the input width), got {w_mat.shape}")
    out = np.ascontiguousarray((w_mat.T @ x.T).T)
    out += np.asarray(b, dtype=x.dtype)
    return out, (x, w_mat)


def linear_backward(dout: np.ndarray, cache, param_grads: bool = True):
    """dx = dout W = dout @ w_mat^T; dW = dout^T x (out, in); db = sum_n dout.

    Returns (dx, dW, db), the last two None when param_grads is False.
    """
    x, w_mat = cache
    dx = np.ascontiguousarray((w_mat @ dout.T).T)
    if not param_grads:
        return dx, None, None
    return dx, np.ascontiguousarray((x.T @ dout).T), dout.sum(axis=0)


# ----------------------------------------------------------------------------- loss
def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray):
    """Mean softmax cross-entropy and its gradient.

    L = (1/N) sum_n [ logsumexp(z_n) - z_n[y_n] ],  logsumexp(z) = m + log sum_k exp(z_k - m), m = max_k z_k;
    dL/dz_n = (softmax(z_n) - onehot(y_n)) / N. Returns (loss as float, dlogits in the logits' dtype).
    """
    n, k = logits.shape
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be {n} integer labels, got shape {y.shape} dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k - 1}], got range [{y.min()}, {y.max()}]")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_z
    rows = np.arange(n)
    loss = -float(log_p[rows, y].mean())
    dlogits = np.exp(log_p)
    dlogits[rows, y] -= 1
    dlogits /= n
    return loss, dlogits
