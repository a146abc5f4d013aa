"""Assignment 1: layers (docs/assignments/assignment1_layers.md). Fill in every TODO; use NumPy only.
A file that imports nxbar (or torch, tensorflow, jax) scores 0 on the cases that run that code.

Activations are NHWC, shape (N, H, W, C). Every function must return arrays of its input's dtype.
Grade with:  nxbar grade 1 assignment1_layers.py
"""

import numpy as np


def im2col_3x3(x):
    """x (N, H, W, C) -> cols (N*H*W, 9*C) of a 3x3, stride 1, zero-pad 1 convolution:

    cols[(n*H + i)*W + j, (ky*3 + kx)*C + c] = x[n, i + ky - 1, j + kx - 1, c], 0 outside the image.
    """
    raise NotImplementedError("TODO: im2col_3x3")


def conv3x3_forward(x, w_mat):
    """out (N, H, W, C_out) = im2col_3x3(x) @ w_mat, reshaped; w_mat (9*C_in, C_out). Return (out, cache)."""
    raise NotImplementedError("TODO: conv3x3_forward")


def conv3x3_backward(dout, cache):
    """Return (dx, dw): dx (N, H, W, C_in); dw (C_out, C_in, 3, 3), dw[o, c, ky, kx] = dL/dw_mat[(ky*3+kx)*C_in + c, o]
    (the rows of dw_mat are in (ky, kx, c_in) order: reshape to (3, 3, C_in, C_out) before transposing)."""
    raise NotImplementedError("TODO: conv3x3_backward")


def maxpool2_forward(x):
    """2x2 max-pool, stride 2: out[n, i, j, c] = max over x[n, 2i:2i+2, 2j:2j+2, c]. Return (out, cache)."""
    raise NotImplementedError("TODO: maxpool2_forward")


def maxpool2_backward(dout, cache):
    """dx: dout[n, i, j, c] goes to the first maximum of its window in scan order (0,0), (0,1), (1,0), (1,1)."""
    raise NotImplementedError("TODO: maxpool2_backward")


def softmax_cross_entropy(logits, y):
    """Mean softmax cross-entropy of logits (N, K) and integer labels y (N,). Return (loss as float, dlogits)."""
    raise NotImplementedError("TODO: softmax_cross_entropy")
