"""Assignment 3: attacks (docs/assignments/assignment3_attacks.md). Fill in every TODO; NumPy only.
A file that imports nxbar (or torch, tensorflow, jax) scores 0 on the cases that run that code.

`model` is anything with `loss_and_input_grad(x, y) -> (loss, dL/dx)`: an nxbar VGG, a crossbar-mapped
model, or the grader's small models. Images x are NHWC floats in [0, 1]; keep their dtype.
eps and alpha are a scalar or one value per colour channel (shape (3,)).
Grade with:  nxbar grade 3 assignment3_attacks.py
"""

import numpy as np


def fgsm(model, x, y, eps):
    """x_adv = clip(x + eps sign(grad_x L(x, y)), 0, 1)."""
    raise NotImplementedError("TODO: fgsm")


def pgd(model, x, y, eps, *, steps=10, alpha=2 / 255, random_start=True, rng=None):
    """L-infinity PGD: x_0 = P(x + eps * rng.uniform(-1.0, 1.0, size=x.shape).astype(x.dtype)) if random_start
    else x; x_{t+1} = P(x_t + alpha sign(grad_x L(x_t, y))), steps times;
    P(z) = clip(clip(z, x - eps, x + eps), 0, 1)."""
    raise NotImplementedError("TODO: pgd")
