"""The engine's 3x3 convolution: Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016), forward and gradients (docs/protocol.md section 2).

It computes exactly the convolution of `layers.conv3x3_forward` (stride 1, zero padding 1, cross-correlation as
PyTorch's Conv2d) in exact arithmetic, with 16 multiplications per 2x2 output tile and input channel instead of
36, so 2.25x fewer multiply-adds in the products. In float32 the sums run in another order, so results differ
from the im2col form by float rounding. Per 2x2 output tile t with its 4x4 input patch d (padded coordinates
2 t_i .. 2 t_i + 3) and filter g (3x3) of input channel c and output channel o:

    U = G g G^T,   V = B^T d B,   M_f = sum_c V_f[c] U_f[c, o] (f: the 16 entries of the 4x4),   Y = A^T M A

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

The sums over c are 16 matrix products (tiles x C_in) @ (C_in x C_out). The input gradient is the adjoint of
each step in reverse: dM = A dY A^T, dV_f = dM_f U_f^T, dd = B dV B^T per tile, and each pixel sums the dd
entries of the tile patches that hold it; the weight gradient is dU_f = V_f^T dM_f, dg = G^T dU G.

A VGG block (conv, BatchNorm, ReLU and, where one follows, the 2x2 max-pool) runs as one pass over memory:
the output transform applies BatchNorm and ReLU and, since a 2x2 output tile is a pool window, pools, so no
full-resolution activation is written; its adjoint starts from the pooled gradient. Value for value it is the
layers applied one by one (tests/test_winograd.py). H and W must be even (every VGG layer's are);
`layers.conv3x3_forward` is the general definition and the reference in tests.
"""
from __future__ import annotations

import threading

import numba
import numpy as np

from nxbar.models.layers import (batchnorm_affine, batchnorm_relu_backward, batchnorm_relu_forward,
                                  matrix_to_conv_weight, maxpool2_backward)

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

# Elements of the transformed input V (16 x tiles x C) of one block of images: the batch is convolved in blocks
# of whole images (at least one per block). Larger blocks make longer matrix products, which OpenBLAS runs
# faster on 2 threads: measured on VGG8, forward + input gradient 18% faster with 2^25 than with 2^24.
_BLOCK_ELEMENTS = 1 << 25
_scratch = threading.local()


def _buffer(slot: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape` for the temporary `slot`, reused from call to call within a thread:
    fresh memory for temporaries this large costs a page fault per 4 KiB on every call. Each thread keeps at most
    one buffer per slot and dtype, as large as the largest block it has convolved: at most _BLOCK_ELEMENTS
    entries each, about 0.6 GB in all for float32 (V, M, the padded input, dM, dV)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    size, key = int(np.prod(shape)), (slot, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def weight_transform(w_mat: np.ndarray, dtype) -> np.ndarray:
    """U (16, C_in, C_out) in `dtype` from w_mat (9*C_in, C_out) of `layers.conv_weight_to_matrix`:
    U[4a + b, c, o] = (G g G^T)[a, b] with g[ky, kx] = w_mat[(ky*3 + kx)*C_in + c, o], computed in float64."""
    w_mat = np.asarray(w_mat, dtype=np.float64)
    c_in = w_mat.shape[0] // 9
    g = w_mat.reshape(3, 3, c_in, -1)
    u = np.einsum("ak,klco,bl->abco", G, g, G)
    return np.ascontiguousarray(u.reshape(16, c_in, -1), dtype=dtype)


@numba.njit(parallel=True, cache=True)
def _input_transform(xp, v):
    # xp: zero-padded images (n, h+2, w+2, c); v: (16, n * th * tw, c), V = B^T d B per tile
    n_img, hp, wp, c = xp.shape
    th, tw = (hp - 2) // 2, (wp - 2) // 2
    for p in numba.prange(n_img * th):
        n, ti = p // th, p % th
        r = 2 * ti
        for tj in range(tw):
            t = p * tw + tj
            s = 2 * tj
            for ch in range(c):
                # rows of B^T d, one column (j) at a time
                d00, d01, d02, d03 = xp[n, r, s, ch], xp[n, r, s + 1, ch], xp[n, r, s + 2, ch], xp[n, r, s + 3, ch]
                d10, d11, d12, d13 = (xp[n, r + 1, s, ch], xp[n, r + 1, s + 1, ch], xp[n, r + 1, s + 2, ch],
                                      xp[n, r + 1, s + 3, ch])
                d20, d21, d22, d23 = (xp[n, r + 2, s, ch], xp[n, r + 2, s + 1, ch], xp[n, r + 2, s + 2, ch],
                                      xp[n, r + 2, s + 3, ch])
                d30, d31, d32, d33 = (xp[n, r + 3, s, ch], xp[n, r + 3, s + 1, ch], xp[n, r + 3, s + 2, ch],
                                      xp[n, r + 3, s + 3, ch])
                a0, a1, a2, a3 = d00 - d20, d01 - d21, d02 - d22, d03 - d23
                b0, b1, b2, b3 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
                e0, e1, e2, e3 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
                f0, f1, f2, f3 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
                # then (B^T d) B, row by row
                v[0, t, ch], v[1, t, ch], v[2, t, ch], v[3, t, ch] = a0 - a2, a1 + a2, a2 - a1, a1 - a3
                v[4, t, ch], v[5, t, ch], v[6, t, ch], v[7, t, ch] = b0 - b2, b1 + b2, b2 - b1, b1 - b3
                v[8, t, ch], v[9, t, ch], v[10, t, ch], v[11, t, ch] = e0 - e2, e1 + e2, e2 - e1, e1 - e3
                v[12, t, ch], v[13, t, ch], v[14, t, ch], v[15, t, ch] = f0 - f2, f1 + f2, f2 - f1, f1 - f3


@numba.njit(inline="always")
def _tile_output(m, t, o):
    # Y = A^T M A of tile t, output channel o: A^T M has rows M0 + M1 + M2 and M1 - M2 - M3 (rows of the 4x4 M)
    p0 = m[0, t, o] + m[4, t, o] + m[8, t, o]
    p1 = m[1, t, o] + m[5, t, o] + m[9, t, o]
    p2 = m[2, t, o] + m[6, t, o] + m[10, t, o]
    p3 = m[3, t, o] + m[7, t, o] + m[11, t, o]
    q0 = m[4, t, o] - m[8, t, o] - m[12, t, o]
    q1 = m[5, t, o] - m[9, t, o] - m[13, t, o]
    q2 = m[6, t, o] - m[10, t, o] - m[14, t, o]
    q3 = m[7, t, o] - m[11, t, o] - m[15, t, o]
    return p0 + p1 + p2, p1 - p2 - p3, q0 + q1 + q2, q1 - q2 - q3


@numba.njit(inline="always")
def _tile_adjoint(dm, t, o, y00, y01, y10, y11):
    # dM = A dY A^T of tile t, output channel o: the rows of A dY are (y0), (y0 + y1), (y0 - y1), (-y1) with y0,
    # y1 the rows of dY, and each row (a, b) becomes (a, a + b, a - b, -b)
    for u in range(4):
        if u == 0:
            a, b = y00, y01
        elif u == 1:
            a, b = y00 + y10, y01 + y11
        elif u == 2:
            a, b = y00 - y10, y01 - y11
        else:
            a, b = -y10, -y11
        dm[4 * u, t, o] = a
        dm[4 * u + 1, t, o] = a + b
        dm[4 * u + 2, t, o] = a - b
        dm[4 * u + 3, t, o] = -b


@numba.njit(inline="always")
def _bn_relu(v, scale, shift):
    # layers.batchnorm_relu_forward's arithmetic, value for value
    v = v * scale + shift
    return v if v > 0 else 0


# The output kernels below and their adjoints repeat one loop nest over the tiles on purpose, as layers.py's
# max-pool kernels do: each Numba kernel is one flat parallel loop, its per-tile arithmetic inlined from the
# helpers above (a shared loop with a callback would cost that inlining).
@numba.njit(parallel=True, cache=True)
def _output_transform(m, out):
    # m: (16, n * th * tw, c_out); out: (n, h, w, c_out), Y = A^T M A per tile
    n_img, h, w, c = out.shape
    th, tw = h // 2, w // 2
    for p in numba.prange(n_img * th):
        n, r = p // th, 2 * (p % th)
        for tj in range(tw):
            t, s = p * tw + tj, 2 * tj
            for o in range(c):
                out[n, r, s, o], out[n, r, s + 1, o], out[n, r + 1, s, o], out[n, r + 1, s + 1, o] = \
                    _tile_output(m, t, o)


@numba.njit(parallel=True, cache=True)
def _output_bn_relu(m, scale, shift, out):
    # relu(Y scale + shift) per tile, written at full resolution
    n_img, h, w, c = out.shape
    th, tw = h // 2, w // 2
    for p in numba.prange(n_img * th):
        n, r = p // th, 2 * (p % th)
        for tj in range(tw):
            t, s = p * tw + tj, 2 * tj
            for o in range(c):
                y00, y01, y10, y11 = _tile_output(m, t, o)
                out[n, r, s, o] = _bn_relu(y00, scale[o], shift[o])
                out[n, r, s + 1, o] = _bn_relu(y01, scale[o], shift[o])
                out[n, r + 1, s, o] = _bn_relu(y10, scale[o], shift[o])
                out[n, r + 1, s + 1, o] = _bn_relu(y11, scale[o], shift[o])


@numba.njit(parallel=True, cache=True)
def _output_bn_relu_pool(m, scale, shift, out, arg):
    # the 2x2 max-pool of relu(Y scale + shift): an output tile is a pool window. out, arg: (n, h/2, w/2, c_out);
    # arg: the window position of the maximum, the first in the order (0,0), (0,1), (1,0), (1,1) on ties
    # (layers.maxpool2_forward's rule)
    n_img, th, tw, c = out.shape
    for p in numba.prange(n_img * th):
        n, ti = p // th, p % th
        for tj in range(tw):
            t = p * tw + tj
            for o in range(c):
                y00, y01, y10, y11 = _tile_output(m, t, o)
                best, k = _bn_relu(y00, scale[o], shift[o]), 0
                v = _bn_relu(y01, scale[o], shift[o])
                if v > best:
                    best, k = v, 1
                v = _bn_relu(y10, scale[o], shift[o])
                if v > best:
                    best, k = v, 2
                v = _bn_relu(y11, scale[o], shift[o])
                if v > best:
                    best, k = v, 3
                out[n, ti, tj, o] = best
                arg[n, ti, tj, o] = k


@numba.njit(parallel=True, cache=True)
def _output_transform_adjoint(dy, dm):
    # dy: (n, h, w, c_out); dm: (16, n * th * tw, c_out), dM = A dY A^T per tile
    n_img, h, w, c = dy.shape
    th, tw = h // 2, w // 2
    for p in numba.prange(n_img * th):
        n, r = p // th, 2 * (p % th)
        for tj in range(tw):
            t, s = p * tw + tj, 2 * tj
            for o in range(c):
                _tile_adjoint(dm, t, o, dy[n, r, s, o], dy[n, r, s + 1, o], dy[n, r + 1, s, o], dy[n, r + 1, s + 1, o])


# In the two kernels below the masked gradients g pass through a small array of dm's dtype: a conditional
# expression with a literal 0 would be float64 in Numba and the tile arithmetic with it, which would round
# otherwise than the layers one by one (float32 throughout).
@numba.njit(parallel=True, cache=True)
def _output_adjoint_bn_relu(dy, y, scale, dm):
    # the adjoint through ReLU and BatchNorm first: dY = dy scale where y > 0, else 0
    n_img, h, w, c = dy.shape
    th, tw = h // 2, w // 2
    for p in numba.prange(n_img * th):
        n, r = p // th, 2 * (p % th)
        g = np.empty(4, dtype=dm.dtype)
        for tj in range(tw):
            t, s = p * tw + tj, 2 * tj
            for o in range(c):
                g[0] = dy[n, r, s, o] * scale[o] if y[n, r, s, o] > 0 else 0
                g[1] = dy[n, r, s + 1, o] * scale[o] if y[n, r, s + 1, o] > 0 else 0
                g[2] = dy[n, r + 1, s, o] * scale[o] if y[n, r + 1, s, o] > 0 else 0
                g[3] = dy[n, r + 1, s + 1, o] * scale[o] if y[n, r + 1, s + 1, o] > 0 else 0
                _tile_adjoint(dm, t, o, g[0], g[1], g[2], g[3])


@numba.njit(parallel=True, cache=True)
def _output_adjoint_bn_relu_pool(dp, pooled, arg, scale, dm):
    # through the max-pool, ReLU and BatchNorm first: the window's gradient goes to its argmax, times scale where
    # the (ReLU) maximum is positive
    n_img, th, tw, c = dp.shape
    for p in numba.prange(n_img * th):
        n, ti = p // th, p % th
        g = np.empty(4, dtype=dm.dtype)
        for tj in range(tw):
            t = p * tw + tj
            for o in range(c):
                g[:] = 0
                g[arg[n, ti, tj, o]] = dp[n, ti, tj, o] * scale[o] if pooled[n, ti, tj, o] > 0 else 0
                _tile_adjoint(dm, t, o, g[0], g[1], g[2], g[3])


@numba.njit(parallel=True, cache=True)
def _patch_adjoint(dv):
    # dv: (16, tiles, c), overwritten by dd = B dV B^T per tile (the tile's 4x4 patch gradient)
    for t in numba.prange(dv.shape[1]):
        for ch in range(dv.shape[2]):
            # B dV, one column k at a time: rows (V0), (V1 - V2 + V3), (-V0 + V1 + V2), (-V3) of column k
            v0, v1, v2, v3 = dv[0, t, ch], dv[4, t, ch], dv[8, t, ch], dv[12, t, ch]
            c00, c10, c20, c30 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
            v0, v1, v2, v3 = dv[1, t, ch], dv[5, t, ch], dv[9, t, ch], dv[13, t, ch]
            c01, c11, c21, c31 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
            v0, v1, v2, v3 = dv[2, t, ch], dv[6, t, ch], dv[10, t, ch], dv[14, t, ch]
            c02, c12, c22, c32 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
            v0, v1, v2, v3 = dv[3, t, ch], dv[7, t, ch], dv[11, t, ch], dv[15, t, ch]
            c03, c13, c23, c33 = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
            # then (B dV) B^T, row by row
            dv[0, t, ch], dv[1, t, ch], dv[2, t, ch], dv[3, t, ch] = c00, c01 - c02 + c03, c01 + c02 - c00, -c03
            dv[4, t, ch], dv[5, t, ch], dv[6, t, ch], dv[7, t, ch] = c10, c11 - c12 + c13, c11 + c12 - c10, -c13
            dv[8, t, ch], dv[9, t, ch], dv[10, t, ch], dv[11, t, ch] = c20, c21 - c22 + c23, c21 + c22 - c20, -c23
            dv[12, t, ch], dv[13, t, ch], dv[14, t, ch], dv[15, t, ch] = c30, c31 - c32 + c33, c31 + c32 - c30, -c33


@numba.njit(parallel=True, cache=True)
def _gather_patches(dd, dx):
    # dx[n, i, j, :] = the sum of the patch gradients dd (16, tiles, c) at pixel (i, j): in padded coordinates
    # (i + 1, j + 1) it is row r of tile row ti with 2 ti + r = i + 1, r in 0..3 (two tile rows), and the same
    # for columns, so up to 4 tiles; those outside the image are skipped
    n_img, h, w, c = dx.shape
    th, tw = h // 2, w // 2
    for p in numba.prange(n_img * h):
        n, i = p // h, p % h
        for j in range(w):
            first = True
            for ti, r in ((i + 1) // 2, (i + 1) % 2), ((i + 1) // 2 - 1, (i + 1) % 2 + 2):
                if ti < 0 or ti >= th:
                    continue
                for tj, s in ((j + 1) // 2, (j + 1) % 2), ((j + 1) // 2 - 1, (j + 1) % 2 + 2):
                    if tj < 0 or tj >= tw:
                        continue
                    t, f = (n * th + ti) * tw + tj, 4 * r + s
                    if first:
                        for ch in range(c):
                            dx[n, i, j, ch] = dd[f, t, ch]
                        first = False
                    else:
                        for ch in range(c):
                            dx[n, i, j, ch] += dd[f, t, ch]


def _blocks(n: int, h: int, w: int, c: int) -> list[slice]:
    """Image slices whose V (16 x tiles x c) holds at most _BLOCK_ELEMENTS entries, at least one image each."""
    step = max(1, min(n, _BLOCK_ELEMENTS // (4 * h * w * c)))
    return [slice(s, s + step) for s in range(0, n, step)]


def _check(x: np.ndarray, u: np.ndarray) -> None:
    n, h, w, c_in = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"the Winograd convolution needs even H and W, got {h}x{w}")
    if u.shape[:2] != (16, c_in):
        raise ValueError(f"u must have shape (16, C_in = {c_in}, C_out) (weight_transform), got {u.shape}")


def _padded_transform(xb: np.ndarray) -> np.ndarray:
    """V (16, tiles, C) of the images xb (n, H, W, C), zero-padded by one pixel."""
    n, h, w, c = xb.shape
    xp = _buffer("padded", (n, h + 2, w + 2, c), xb.dtype)
    xp[:, 0], xp[:, -1], xp[:, :, 0], xp[:, :, -1] = 0, 0, 0, 0
    xp[:, 1:-1, 1:-1] = xb
    v = _buffer("v", (16, n * (h // 2) * (w // 2), c), xb.dtype)
    _input_transform(xp, v)
    return v


def _products(x: np.ndarray, u: np.ndarray, emit) -> None:
    """M = V U per block of images of x; emit(block slice, M) writes the block's outputs from M."""
    _check(x, u)
    n, h, w, c_in = x.shape
    for blk in _blocks(n, h, w, max(c_in, u.shape[2])):
        v = _padded_transform(x[blk])
        m = _buffer("m", (16, v.shape[1], u.shape[2]), x.dtype)
        emit(blk, np.matmul(v, u, out=m))


def _input_grad(x: np.ndarray, u: np.ndarray, adjoint, du: np.ndarray | None) -> np.ndarray:
    """dL/dx of a convolution of x, H and W even, by U: adjoint(block slice, dM) writes dM of the block's tiles;
    dV = dM U^T per frequency, dd = B dV B^T per tile, and each pixel sums the dd entries of the (up to 4) tile
    patches that hold it. When du is given, adds dU = V^T dM into it (float64)."""
    n, h, w, c_in = x.shape
    c_out = u.shape[2]
    dx = np.empty_like(x)
    ut = u.transpose(0, 2, 1)
    for blk in _blocks(n, h, w, max(c_in, c_out)):
        images = x[blk].shape[0]
        dm = _buffer("dm", (16, images * (h // 2) * (w // 2), c_out), x.dtype)
        adjoint(blk, dm)
        dv = _buffer("dv", (16, dm.shape[1], c_in), x.dtype)
        _patch_adjoint(np.matmul(dm, ut, out=dv))
        _gather_patches(dv, dx[blk])
        if du is not None:
            du += np.matmul(_padded_transform(x[blk]).transpose(0, 2, 1), dm)
    return dx


def conv3x3_forward(x: np.ndarray, u: np.ndarray):
    """(out, cache): out (N, H, W, C_out) of x (N, H, W, C_in), H and W even, with U = weight_transform(w_mat,
    x.dtype): the convolution of `layers.conv3x3_forward(x, w_mat)` up to float rounding."""
    x = np.ascontiguousarray(x)
    out = np.empty((*x.shape[:3], u.shape[2]), dtype=x.dtype)
    _products(x, u, lambda blk, m: _output_transform(m, out[blk]))
    return out, (x, u)


def conv3x3_backward(dout: np.ndarray, cache, param_grads: bool = True):
    """(dx, dw) of `conv3x3_forward` from dout = dL/dout (N, H, W, C_out): the adjoint of each of its steps, so
    exactly the gradients of the computed convolution up to float rounding. dx (N, H, W, C_in); dw in PyTorch
    layout (C_out, C_in, 3, 3) from dU_f = V_f^T dM_f and dg = G^T dU G, or None when param_grads is False."""
    x, u = cache
    c_in, c_out = u.shape[1:]
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    du = np.zeros(u.shape, dtype=np.float64) if param_grads else None
    dx = _input_grad(x, u, lambda blk, dm: _output_transform_adjoint(dout[blk], dm), du)
    if not param_grads:
        return dx, None
    dw_mat = np.einsum("ak,bl,abco->klco", G, G, du.reshape(4, 4, c_in, c_out)).reshape(9 * c_in, c_out)
    return dx, matrix_to_conv_weight(dw_mat.astype(x.dtype), c_in)


def conv_bn_relu_forward(x: np.ndarray, u: np.ndarray, bn: tuple, eps: float, pool: bool):
    """(out, cache) of one VGG block in one pass over memory: y = relu(batchnorm(conv(x))), then, when pool,
    the 2x2 max-pool of y. bn = (gamma, beta, running_mean, running_var), eps: `layers.batchnorm_forward`'s.
    Value for value the result of conv3x3_forward, `layers.batchnorm_relu_forward` and
    `layers.maxpool2_forward` in turn: the same operations, with no full-resolution activation written when
    pooling."""
    x = np.ascontiguousarray(x)
    n, h, w, _ = x.shape
    _, _, scale, shift = batchnorm_affine(x.dtype, *bn, eps)
    if pool:
        out = np.empty((n, h // 2, w // 2, u.shape[2]), dtype=x.dtype)
        arg = np.empty(out.shape, dtype=np.uint8)
        _products(x, u, lambda blk, m: _output_bn_relu_pool(m, scale, shift, out[blk], arg[blk]))
    else:
        out, arg = np.empty((n, h, w, u.shape[2]), dtype=x.dtype), None
        _products(x, u, lambda blk, m: _output_bn_relu(m, scale, shift, out[blk]))
    return out, (x, u, bn, eps, scale, out, arg)


def conv_bn_relu_backward(dout: np.ndarray, cache, param_grads: bool = True):
    """(dx, dw, dgamma, dbeta) of `conv_bn_relu_forward`; the last three None when param_grads is False. The input
    gradient runs through the block in one pass (the adjoints of max-pool, ReLU and BatchNorm fused into that of
    the output transform); parameter gradients recompute the block's layers one by one and run their backward
    passes (`layers`)."""
    x, u, bn, eps, scale, out, arg = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    if param_grads:
        conv, conv_cache = conv3x3_forward(x, u)
        _, bn_cache = batchnorm_relu_forward(conv, *bn, eps)
        d = dout if arg is None else maxpool2_backward(dout, arg)
        d, dgamma, dbeta = batchnorm_relu_backward(d, bn_cache, True)
        dx, dw = conv3x3_backward(d, conv_cache, True)
        return dx, dw, dgamma, dbeta
    if arg is None:
        dx = _input_grad(x, u, lambda blk, dm: _output_adjoint_bn_relu(dout[blk], out[blk], scale, dm), None)
    else:
        dx = _input_grad(x, u, lambda blk, dm: _output_adjoint_bn_relu_pool(dout[blk], out[blk], arg[blk], scale,
                                                                           dm), None)
    return dx, None, None, None
