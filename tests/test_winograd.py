"""The engine's Winograd F(2x2, 3x3) convolution: against the direct definition, its gradients against float64
central differences, and against the im2col layer in float32."""

import numpy as np
import pytest

from nxbar.models import layers as L
from nxbar.models import winograd as W
from tests.test_layers import conv_reference, num_grad, rel_err


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _conv(x, w):
    return W.conv3x3_forward(x, W.weight_transform(L.conv_weight_to_matrix(w), x.dtype))[0]


# shapes: an odd and an even number of tile rows (the two passes of the input adjoint), one tile, a wide image;
# blocks: the whole batch in one block, and one image per block
@pytest.mark.parametrize("shape", [(3, 4, 6, 2), (2, 6, 4, 3), (2, 2, 2, 1), (1, 2, 8, 2)])
@pytest.mark.parametrize("elements", [1 << 22, 1])
def test_winograd_conv_is_the_convolution_and_its_gradients_are_exact(rng, monkeypatch, shape, elements):
    monkeypatch.setattr(W, "_BLOCK_ELEMENTS", elements)
    x, w = rng.standard_normal(shape), rng.standard_normal((3, shape[3], 3, 3))
    u = W.weight_transform(L.conv_weight_to_matrix(w), np.float64)
    out, cache = W.conv3x3_forward(x, u)
    assert rel_err(out, conv_reference(x, w)) < 1e-13
    dout = rng.standard_normal(out.shape)
    dx, dw = W.conv3x3_backward(dout, cache)
    assert rel_err(dx, num_grad(lambda v: _conv(v, w), x, dout)) < 1e-6
    assert rel_err(dw, num_grad(lambda v: _conv(x, v), w, dout)) < 1e-6
    dx_only, none = W.conv3x3_backward(dout, cache, param_grads=False)
    assert none is None and np.array_equal(dx_only, dx)


def test_winograd_conv_in_float32_agrees_with_im2col_to_rounding(rng):
    x = rng.standard_normal((4, 16, 16, 32)).astype(np.float32)
    w = (rng.standard_normal((48, 32, 3, 3)) / np.sqrt(9 * 32)).astype(np.float32)
    w_mat = L.conv_weight_to_matrix(w)
    ref, ref_cache = L.conv3x3_forward(x, w_mat)
    out, cache = W.conv3x3_forward(x, W.weight_transform(w_mat, np.float32))
    assert out.dtype == np.float32 and rel_err(out, ref) < 1e-6
    dout = rng.standard_normal(out.shape).astype(np.float32)
    (dx_ref, dw_ref), (dx, dw) = L.conv3x3_backward(dout, ref_cache), W.conv3x3_backward(dout, cache)
    assert dx.dtype == dw.dtype == np.float32
    assert rel_err(dx, dx_ref) < 1e-6 and rel_err(dw, dw_ref) < 1e-6


def test_winograd_conv_rejects_odd_sizes_and_mismatched_transforms(rng):
    u = W.weight_transform(np.zeros((18, 4)), np.float64)
    with pytest.raises(ValueError, match="even H and W, got 3x4"):
        W.conv3x3_forward(rng.standard_normal((1, 3, 4, 2)), u)
    with pytest.raises(ValueError, match=r"\(16, C_in = 3, C_out\)"):
        W.conv3x3_forward(rng.standard_normal((1, 4, 4, 3)), u)


def _bn(rng, c):
    return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c))


@pytest.mark.parametrize("pool", [False, True])
def test_fused_block_is_the_layers_one_by_one_and_its_gradients_are_exact(rng, pool):
    x, w, bn = rng.standard_normal((2, 4, 6, 3)), rng.standard_normal((4, 3, 3, 3)), _bn(rng, 4)

    def layers(v, w_=w, gamma=bn[0], beta=bn[1]):
        y = L.batchnorm_relu_forward(_conv(v, w_), gamma, beta, *bn[2:], 1e-5)[0]
        return L.maxpool2_forward(y)[0] if pool else y

    for dt in (np.float64, np.float32):  # the same operations, value for value, forward and backward
        u = W.weight_transform(L.conv_weight_to_matrix(w), dt)
        out, cache = W.conv_bn_relu_forward(x.astype(dt), u, tuple(b.astype(dt) for b in bn), 1e-5, pool)
        assert out.dtype == dt and np.array_equal(out, layers(x.astype(dt)))
        d = rng.standard_normal(out.shape).astype(dt)
        fused, one_by_one = (W.conv_bn_relu_backward(d, cache, param_grads=p)[0] for p in (False, True))
        assert fused.dtype == dt and np.array_equal(fused, one_by_one)
    dout = rng.standard_normal(out.shape)
    cache = W.conv_bn_relu_forward(x, W.weight_transform(L.conv_weight_to_matrix(w), np.float64), bn, 1e-5, pool)[1]
    dx, dw, dgamma, dbeta = W.conv_bn_relu_backward(dout, cache)
    assert rel_err(dx, num_grad(layers, x, dout)) < 1e-6
    assert rel_err(dw, num_grad(lambda v: layers(x, w_=v), w, dout)) < 1e-6
    assert rel_err(dgamma, num_grad(lambda v: layers(x, gamma=v), bn[0].copy(), dout)) < 1e-6
    assert rel_err(dbeta, num_grad(lambda v: layers(x, beta=v), bn[1].copy(), dout)) < 1e-6
    dx_fused, *none = W.conv_bn_relu_backward(dout, cache, param_grads=False)  # the fused input gradient
    assert none == [None, None, None] and rel_err(dx_fused, dx) < 1e-13
