"""Layers: forward against independent references, backward against float64 central differences."""

import numpy as np
import pytest

from nxbar.models import layers as L

RTOL = 1e-6


def rel_err(a, b):
    """max |a - b| / max(|a|, |b|): the relative error of the largest entries."""
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)))


def num_grad(f, x, dout, h=1e-5):
    """Central-difference gradient of sum(f(x) * dout) with respect to x (float64)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(f(x) * dout)
        flat[i] = old - h
        minus = np.sum(f(x) * dout)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return g


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def away_from_zero(rng, shape):
    """Random values with |v| >= 0.1, so no ReLU kink lies within a finite-difference step."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 1.0, shape)


def conv_reference(x, w):
    """Direct 3x3 cross-correlation, pad 1, written from the definition with explicit loops."""
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, wd, w.shape[0]))
    for i in range(h):
        for j in range(wd):
            for o in range(w.shape[0]):
                for ky in range(3):
                    for kx in range(3):
                        out[:, i, j, o] += xp[:, i + ky, j + kx, :] @ w[o, :, ky, kx]
    return out


# ----------------------------------------------------------------------------- unrolling
def test_conv_unrolling_matches_explicit_loop_and_round_trips(rng):
    w = rng.standard_normal((5, 4, 3, 3))
    m = L.conv_weight_to_matrix(w)
    ref = np.zeros((36, 5))
    for o in range(5):
        for c in range(4):
            for ky in range(3):
                for kx in range(3):
                    ref[(ky * 3 + kx) * 4 + c, o] = w[o, c, ky, kx]
    assert np.array_equal(m, ref) and m.flags.c_contiguous
    assert np.array_equal(L.matrix_to_conv_weight(m, 4), w)


def test_fc_unrolling_round_trips(rng):
    w = rng.standard_normal((3, 7))
    assert np.array_equal(L.fc_weight_to_matrix(w), w.T)
    assert np.array_equal(L.matrix_to_fc_weight(L.fc_weight_to_matrix(w)), w)


def test_unrolling_rejects_bad_shapes():
    with pytest.raises(ValueError, match="C_out, C_in, 3, 3"):
        L.conv_weight_to_matrix(np.zeros((2, 2, 5, 5)))
    with pytest.raises(ValueError, match="9\\*c_in"):
        L.matrix_to_conv_weight(np.zeros((10, 2)), 2)
    with pytest.raises(ValueError, match="out, in"):
        L.fc_weight_to_matrix(np.zeros(3))


def test_im2col_matches_explicit_loop_and_col2im_is_its_adjoint(rng):
    x = rng.standard_normal((2, 4, 5, 3))
    cols = L.im2col_3x3(x)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2 * 4 * 5, 27))
    for n in range(2):
        for i in range(4):
            for j in range(5):
                for ky in range(3):
                    for kx in range(3):
                        ref[(n * 4 + i) * 5 + j, (ky * 3 + kx) * 3:(ky * 3 + kx + 1) * 3] = xp[n, i + ky, j + kx]
    assert np.array_equal(cols, ref)
    d = rng.standard_normal(cols.shape)
    assert np.isclose(np.sum(cols * d), np.sum(x * L.col2im_3x3(d, x.shape)), rtol=1e-12)


# ----------------------------------------------------------------------------- layers
def test_normalize(rng):
    x, mean, std = rng.random((2, 3, 3, 3)), np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.3, 0.25])
    out, cache = L.normalize_forward(x, mean, std)
    assert np.allclose(out[1, 2, 0], (x[1, 2, 0] - mean) / std, rtol=1e-14)
    dout = rng.standard_normal(out.shape)
    f = lambda v: L.normalize_forward(v, mean, std)[0]  # noqa: E731
    assert rel_err(L.normalize_backward(dout, cache), num_grad(f, x, dout)) < RTOL


@pytest.mark.parametrize("elements", [1 << 22, 16 * 18])  # one block; one image per block
def test_conv3x3(rng, monkeypatch, elements):
    monkeypatch.setattr(L, "_IM2COL_ELEMENTS", elements)
    x, w = rng.standard_normal((3, 4, 4, 2)), rng.standard_normal((3, 2, 3, 3))
    out, cache = L.conv3x3_forward(x, L.conv_weight_to_matrix(w))
    assert rel_err(out, conv_reference(x, w)) < 1e-13
    dout = rng.standard_normal(out.shape)
    dx, dw = L.conv3x3_backward(dout, cache)
    assert rel_err(dx, num_grad(lambda v: L.conv3x3_forward(v, L.conv_weight_to_matrix(w))[0], x, dout)) < RTOL
    assert rel_err(dw, num_grad(lambda v: L.conv3x3_forward(x, L.conv_weight_to_matrix(v))[0], w, dout)) < RTOL
    dx_only, none = L.conv3x3_backward(dout, cache, param_grads=False)
    assert none is None and np.array_equal(dx_only, dx)


def test_conv3x3_rejects_mismatched_matrix(rng):
    with pytest.raises(ValueError, match="9\\*C_in = 18"):
        L.conv3x3_forward(rng.standard_normal((1, 4, 4, 2)), np.zeros((27, 4)))


def test_batchnorm(rng):
    x = rng.standard_normal((2, 3, 3, 4))
    gamma, beta, mean, var = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4), rng.standard_normal(4), rng.random(4)
    eps = 1e-3
    out, cache = L.batchnorm_forward(x, gamma, beta, mean, var, eps)
    assert np.allclose(out[0, 1, 2], gamma * (x[0, 1, 2] - mean) / np.sqrt(var + eps) + beta, rtol=1e-13)
    dout = rng.standard_normal(out.shape)
    dx, dg, db = L.batchnorm_backward(dout, cache)
    assert rel_err(dx, num_grad(lambda v: L.batchnorm_forward(v, gamma, beta, mean, var, eps)[0], x, dout)) < RTOL
    assert rel_err(dg, num_grad(lambda v: L.batchnorm_forward(x, v, beta, mean, var, eps)[0], gamma, dout)) < RTOL
    assert rel_err(db, num_grad(lambda v: L.batchnorm_forward(x, gamma, v, mean, var, eps)[0], beta, dout)) < RTOL
    dx_only, g_none, b_none = L.batchnorm_backward(dout, cache, param_grads=False)
    assert g_none is None and b_none is None and np.array_equal(dx_only, dx)


def test_relu(rng):
    x = away_from_zero(rng, (2, 3, 3, 2))
    out, cache = L.relu_forward(x)
    assert np.array_equal(out, np.where(x > 0, x, 0))
    dout = rng.standard_normal(x.shape)
    assert rel_err(L.relu_backward(dout, cache), num_grad(lambda v: L.relu_forward(v)[0], x, dout)) < RTOL


def test_batchnorm_relu_equals_the_composition(rng):
    x = rng.standard_normal((2, 3, 3, 4))
    bn = (rng.uniform(0.5, 1.5, 4), rng.standard_normal(4), rng.standard_normal(4), rng.random(4), 1e-3)
    out, cache = L.batchnorm_relu_forward(x, *bn)
    y_bn, bn_cache = L.batchnorm_forward(x, *bn)
    ref, relu_cache = L.relu_forward(y_bn)
    assert rel_err(out, ref) < 1e-15 and np.any(out == 0) and np.any(out > 0)
    dout = rng.standard_normal(out.shape)
    d_relu = L.relu_backward(dout, relu_cache)
    expected = L.batchnorm_backward(d_relu, bn_cache)
    for got, want in zip(L.batchnorm_relu_backward(dout, cache), expected):
        assert rel_err(got, want) < 1e-15
    dx_only, g_none, b_none = L.batchnorm_relu_backward(dout, cache, param_grads=False)
    assert g_none is None and b_none is None and rel_err(dx_only, expected[0]) < 1e-15


def test_maxpool2(rng):
    x = rng.permutation(2 * 4 * 6 * 3).reshape(2, 4, 6, 3) / 10.0  # distinct values 0.1 apart: no ties
    out, cache = L.maxpool2_forward(x)
    assert np.array_equal(out, x.reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4)))
    dout = rng.standard_normal(out.shape)
    assert rel_err(L.maxpool2_backward(dout, cache), num_grad(lambda v: L.maxpool2_forward(v)[0], x, dout)) < RTOL


def test_maxpool2_ties_route_to_first_in_scan_order():
    x = np.zeros((1, 2, 2, 1))
    x[0, 1, :, 0] = 5.0  # maximum shared by (1, 0) and (1, 1)
    _, cache = L.maxpool2_forward(x)
    dx = L.maxpool2_backward(np.ones((1, 1, 1, 1)), cache)
    assert dx[0, :, :, 0].tolist() == [[0.0, 0.0], [1.0, 0.0]]


def test_maxpool2_rejects_odd_size():
    with pytest.raises(ValueError, match="even H and W, got 3x4"):
        L.maxpool2_forward(np.zeros((1, 3, 4, 1)))


def test_flatten_uses_pytorch_chw_order(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    out, cache = L.flatten_forward(x)
    n, c, i, j = 1, 4, 2, 3
    assert out[n, (c * 3 + i) * 4 + j] == x[n, i, j, c]
    dout = rng.standard_normal(out.shape)
    assert rel_err(L.flatten_backward(dout, cache), num_grad(lambda v: L.flatten_forward(v)[0], x, dout)) < RTOL


def test_linear(rng):
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    out, cache = L.linear_forward(x, L.fc_weight_to_matrix(w), b)
    assert rel_err(out, np.einsum("ni,oi->no", x, w) + b) < 1e-14
    dout = rng.standard_normal(out.shape)
    dx, dw, db = L.linear_backward(dout, cache)
    assert rel_err(dx, num_grad(lambda v: L.linear_forward(v, L.fc_weight_to_matrix(w), b)[0], x, dout)) < RTOL
    assert rel_err(dw, num_grad(lambda v: L.linear_forward(x, L.fc_weight_to_matrix(v), b)[0], w, dout)) < RTOL
    assert rel_err(db, num_grad(lambda v: L.linear_forward(x, L.fc_weight_to_matrix(w), v)[0], b, dout)) < RTOL
    dx_only, w_none, b_none = L.linear_backward(dout, cache, param_grads=False)
    assert w_none is None and b_none is None and np.array_equal(dx_only, dx)


def test_softmax_cross_entropy(rng):
    z, y = rng.standard_normal((4, 5)), np.array([0, 3, 4, 3])
    loss, dz = L.softmax_cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert np.isclose(loss, -np.mean(np.log(p[np.arange(4), y])), rtol=1e-14)
    g = num_grad(lambda v: np.array(L.softmax_cross_entropy(v, y)[0]), z, np.array(1.0))
    assert rel_err(dz, g) < RTOL


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    loss, dz = L.softmax_cross_entropy(z, np.array([1, 1]))
    assert np.isclose(loss, 1000.0) and np.all(np.isfinite(dz))


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        L.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="2 integer labels"):
        L.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_every_layer_preserves_float32(rng):
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    w = L.conv_weight_to_matrix(rng.standard_normal((2, 3, 3, 3)))  # float64 parameters are cast
    outs = [L.normalize_forward(x, np.zeros(3), np.ones(3))[0], L.conv3x3_forward(x, w)[0],
            L.batchnorm_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), 1e-5)[0],
            L.batchnorm_relu_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), 1e-5)[0],
            L.relu_forward(x)[0], L.maxpool2_forward(x)[0], L.flatten_forward(x)[0],
            L.linear_forward(x.reshape(2, -1), np.ones((48, 2)), np.zeros(2))[0]]
    assert [o.dtype for o in outs] == [np.float32] * len(outs)
    dx, dw = L.conv3x3_backward(np.ones((2, 4, 4, 2), np.float32), L.conv3x3_forward(x, w)[1])
    assert dx.dtype == dw.dtype == np.float32
