"""FGSM and PGD (L-infinity), written by hand on a model's input gradient (docs/protocol.md section 5).

A model is anything with `loss_and_input_grad(x, y) -> (loss, dL/dx)`: the software VGG, a crossbar-mapped
model, or a model with an input transform in front. Images are NHWC floats in [0, 1] (pixel space).

`eps` and `alpha` are pixel-space budgets, a scalar or one value per colour channel (shape (3,)), so that a
budget given in the normalised input space is passed as eps * std (see `pixel_budget`).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

EPS_SPACES = ("pixel", "normalized")
PGD_STEPS = 10  # PGD's defaults (docs/protocol.md section 5): 10 steps of 2/255 from a random start
PGD_ALPHA = 2 / 255
PGD_RANDOM_START = True


def parse_fraction(text: str, name: str = "eps") -> float:
    """'8/255' or '0.03' -> float; a clear ValueError for anything else."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{name} {text!r} is not a number or fraction such as 8/255 or 0.03") from None
    return value


def eps_label(attack: str, eps: float) -> str:
    """An eps as the paper writes it (the inverse of `parse_fraction`): '8/255' for PGD when eps is a whole
    number of 1/255 steps, '0.1' for FGSM and any other eps."""
    steps = eps * 255
    return f"{round(steps)}/255" if attack == "pgd" and abs(steps - round(steps)) < 1e-9 else f"{eps:g}"


def check_eps(eps: float, eps_space: str) -> None:
    """A clear ValueError unless `eps_space` is one of EPS_SPACES and 0 <= eps <= 1."""
    if eps_space not in EPS_SPACES:
        raise ValueError(f"eps space {eps_space!r} unknown; allowed: {', '.join(EPS_SPACES)}")
    if not (np.isfinite(eps) and 0 <= eps <= 1):
        raise ValueError(f"eps {eps!r} is out of range; allowed: 0 <= eps <= 1")


def pixel_budget(eps: float, eps_space: str, std) -> np.ndarray:
    """Per-channel pixel-space budget of `eps` (shape (3,)).

    pixel:      eps_c = eps                 (eps in units of [0, 1] pixels)
    normalized: eps_c = eps * std_c         (eps in units of the normalised input (x - mean_c) / std_c)
    """
    check_eps(eps, eps_space)
    std = np.asarray(std, dtype=np.float64)
    return np.full(3, eps) if eps_space == "pixel" else eps * std


def _budget(value, name: str, dtype) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape not in ((), (3,)) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be a finite scalar or 3 per-channel values >= 0, got {value!r}")
    return arr.astype(dtype)


def project(x_adv: np.ndarray, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Projection onto the L-infinity ball and the image box: clip(clip(x_adv, x - eps, x + eps), 0, 1)."""
    return np.clip(np.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def fgsm(model, x: np.ndarray, y: np.ndarray, eps) -> np.ndarray:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): x_adv = clip(x + eps sign(grad_x L(x, y)), 0, 1)."""
    _, grad = model.loss_and_input_grad(x, y)
    return fgsm_step(x, np.sign(grad), eps)


def fgsm_step(x: np.ndarray, grad_sign: np.ndarray, eps) -> np.ndarray:
    """FGSM's step from a stored gradient sign: x_adv = clip(x + eps grad_sign, 0, 1), grad_sign =
    sign(grad_x L(x, y)) at the clean x. The sign does not depend on eps, so one gradient serves an eps sweep."""
    eps = _budget(eps, "eps", x.dtype)
    return np.clip(x + eps * grad_sign, 0.0, 1.0).astype(x.dtype, copy=False)


def pgd(model, x, y, eps, *, steps: int = PGD_STEPS, alpha=PGD_ALPHA, random_start: bool = PGD_RANDOM_START,
        rng=None) -> np.ndarray:
    """Projected Gradient Descent, L-infinity (Madry et al. 2018).

    x_0 = P(x + u), u ~ U(-eps, eps) per pixel (x_0 = x without random start);
    x_{t+1} = P(x_t + alpha sign(grad_x L(x_t, y))),  t = 0 .. steps-1,
    P = projection onto {|x' - x|_inf <= eps} and [0, 1] (`project`).
    `rng` (numpy Generator) draws the random start; pass a seeded one for reproducible results.
    """
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    eps = _budget(eps, "eps", x.dtype)
    alpha = _budget(alpha, "alpha", x.dtype)
    if random_start:
        if rng is None:
            raise ValueError("pgd with random_start needs a seeded numpy Generator as rng")
        noise = rng.uniform(-1.0, 1.0, size=x.shape).astype(x.dtype) * eps
        x_adv = project(x + noise, x, eps)
    else:
        x_adv = x.copy()
    for _ in range(steps):
        _, grad = model.loss_and_input_grad(x_adv, y)
        x_adv = project(x_adv + alpha * np.sign(grad), x, eps)
    return x_adv.astype(x.dtype, copy=False)
