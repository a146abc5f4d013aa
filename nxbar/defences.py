"""Input pixel discretization (Panda et al., IEEE Access 2019), a defence of the study (docs/protocol.md section 6.1).

    x_q = round(x (2^b - 1)) / (2^b - 1)        x in [0, 1] pixels, b bits -> 2^b levels k / (2^b - 1)

applied as the model's first step to every input, clean and adversarial alike (the equation is
`nxbar.crossbar.mapping.quantize_levels`, the same uniform rounding as conductance levels; exact halves
round to the even k).

Gradient: dx_q/dx = 0 almost everywhere (and undefined at the steps), so the true input gradient
is useless to an attacker. White-box attacks through the defence use the straight-through estimator
dx_q/dx := I: `loss_and_input_grad(x, y)` returns the wrapped model's gradient evaluated at x_q.
Every result made with the wrapper should record `describe()` / `as_dict()`, which say so.
"""

from __future__ import annotations

import numbers

import numpy as np

from nxbar.crossbar.mapping import quantize_levels

# 2^16 levels is far finer than any stored image (8-bit pixels: b = 8 already reproduces them exactly).
MAX_INPUT_BITS = 16


class InputDiscretization:
    """`model` (any object with the engine interface: forward, predict, loss_and_input_grad,
    loss_and_grads, dtype, mean, std, num_classes, input_size -- the software VGG or a MappedModel)
    with b-bit input discretization in front, and the straight-through gradient.

    Attributes: model (the wrapped one), bits, levels = 2^bits, gradient = "straight-through".
    """

    gradient = "straight-through"

    def __init__(self, model, bits: int):
        if not isinstance(bits, numbers.Integral) or isinstance(bits, bool) or not 1 <= bits <= MAX_INPUT_BITS:
            raise ValueError(f"bits must be an integer in 1..{MAX_INPUT_BITS}, got {bits!r}")
        self.model, self.bits = model, int(bits)
        self.levels = 2**self.bits

    # the wrapped model's description, unchanged by the transform
    dtype = property(lambda self: self.model.dtype)
    mean = property(lambda self: self.model.mean)
    std = property(lambda self: self.model.std)
    num_classes = property(lambda self: self.model.num_classes)
    input_size = property(lambda self: self.model.input_size)

    def __repr__(self) -> str:
        return f"InputDiscretization({self.model!r}, bits={self.bits})"

    def describe(self) -> str:
        """One line for results: the transform and the gradient white-box attacks use through it."""
        n = self.levels - 1
        return (f"input discretization to {self.bits} bits ({self.levels} levels), x_q = round({n} x) / {n}; "
                f"white-box gradient: straight-through (identity, dx_q/dx := 1)")

    def as_dict(self) -> dict:
        """JSON record of the defence for stored results."""
        return {"defence": "input_discretization", "bits": self.bits, "gradient": self.gradient}

    def discretize(self, x) -> np.ndarray:
        """x_q of images x (NHWC, floats in [0, 1] or uint8, which are divided by 255 first), model dtype."""
        x = np.asarray(x)
        if x.dtype == np.uint8:
            x = x.astype(self.dtype) / self.dtype.type(255)
        elif np.issubdtype(x.dtype, np.floating):
            x = x.astype(self.dtype, copy=False)
        else:
            raise ValueError(f"x must be uint8 or floating images in [0, 1], got dtype {x.dtype}")
        return quantize_levels(x, self.bits)

    def forward(self, x) -> np.ndarray:
        """Logits of the wrapped model at x_q."""
        return self.model.forward(self.discretize(x))

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predicted labels of the wrapped model at x_q."""
        return self.model.predict(self.discretize(x), batch_size=batch_size)

    def loss_and_input_grad(self, x, y):
        """(loss at x_q, straight-through dL/dx = the wrapped model's dL/dx evaluated at x_q)."""
        return self.model.loss_and_input_grad(self.discretize(x), y)

    def loss_and_grads(self, x, y):
        """(loss, straight-through dL/dx, weight gradients), all of the wrapped model at x_q."""
        return self.model.loss_and_grads(self.discretize(x), y)
