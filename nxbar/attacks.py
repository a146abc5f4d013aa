"""FGSM, PGD and APGD-CE (L-infinity), written by hand on a model's input gradient (docs/protocol.md sections 5
and 13.1).

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
    """An eps as the paper writes it (the inverse of `parse_fraction`): '8/255' for PGD and APGD when eps is a
    whole number of 1/255 steps, '0.1' for FGSM and any other eps."""
    steps = eps * 255
    return f"{round(steps)}/255" if attack in ("pgd", "apgd") and abs(steps - round(steps)) < 1e-9 else f"{eps:g}"


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
        rng=None, early_stop: bool = False) -> np.ndarray:
    """Projected Gradient Descent, L-infinity (Madry et al. 2018).

    x_0 = P(x + u), u ~ U(-eps, eps) per pixel (x_0 = x without random start);
    x_{t+1} = P(x_t + alpha sign(grad_x L(x_t, y))),  t = 0 .. steps-1,
    P = projection onto {|x' - x|_inf <= eps} and [0, 1] (`project`).
    `rng` (numpy Generator) draws the random start; pass a seeded one for reproducible results.
    early_stop (opt-in, as AutoAttack does): before each step, an image that `model` already misclassifies at
    x_t keeps x_t and is attacked no further. Its trajectory is the full attack's up to there, so every image
    that survives early stopping survives the full attack: AA with early stop <= AA without.
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
    active = np.arange(len(x)) if early_stop else slice(None)  # the images still attacked (all: views, no copies)
    for _ in range(steps):
        if early_stop:
            active = active[model.predict(x_adv[active]) == y[active]]
            if not len(active):
                break
        xa, x0 = x_adv[active], x[active]
        _, grad = model.loss_and_input_grad(xa, y[active])
        x_adv[active] = project(xa + alpha * np.sign(grad), x0, eps)
    return x_adv.astype(x.dtype, copy=False)


APGD_RHO = 0.75  # APGD's defaults (Croce & Hein 2020, section 3): checkpoint success fraction rho,
APGD_MOMENTUM = 0.75  # momentum alpha, first step size eta_0 = 2 eps, checkpoints p_j below
APGD_STEPS = 100


def apgd_checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints w_j = ceil(p_j N) for N = `steps`: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), while p_j <= 1 (Croce & Hein 2020, section 3.2)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({int(np.ceil(q * steps - 1e-9)) for q in p})


def _per_image_ce(model, x, y) -> tuple[np.ndarray, np.ndarray]:
    """(per-image softmax cross-entropy in float64, per-image correctness) of `model` at x."""
    z = np.asarray(model.forward(x), dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    loss = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
    return loss, np.argmax(z, axis=1) == y


def apgd(model, x, y, eps, *, steps: int = APGD_STEPS, random_start: bool = PGD_RANDOM_START, rng=None,
         rho: float = APGD_RHO, momentum: float = APGD_MOMENTUM) -> np.ndarray:
    """Auto-PGD on the cross-entropy loss, L-infinity (APGD-CE, Croce & Hein 2020, Algorithm 1).

    x_0 as PGD's (`pgd`); eta_0 = 2 eps per image;  x_1 = P(x_0 + eta sign(grad f(x_0)));
    z_{k+1} = P(x_k + eta_k sign(grad f(x_k))),
    x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1})),  a = `momentum`,  k = 1 .. steps-1,
    f = the image's cross-entropy, P as in `pgd`. At each checkpoint w_j (`apgd_checkpoints`) an image halves
    its eta and restarts from its best point x_max (highest f so far) when (1) f rose in fewer than
    rho (w_j - w_{j-1}) of the steps since w_{j-1}, or (2) its eta was not halved at w_{j-1} and f_max has not
    risen since.
    Returns, per image, the first iterate that `model` misclassified (as AutoAttack keeps it), else x_max.
    `steps` gradient evaluations and as many forward passes (for f) per image.
    """
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    eps = _budget(eps, "eps", x.dtype)
    if random_start:
        if rng is None:
            raise ValueError("apgd with random_start needs a seeded numpy Generator as rng")
        x_cur = project(x + rng.uniform(-1.0, 1.0, size=x.shape).astype(x.dtype) * eps, x, eps)
    else:
        x_cur = x.copy()
    n = len(x)
    per_image = (n,) + (1,) * (x.ndim - 1)
    eta = np.full(per_image, 2.0, dtype=x.dtype)  # in units of eps
    f_cur, correct = _per_image_ce(model, x_cur, y)
    x_max, f_max = x_cur.copy(), f_cur.copy()
    x_adv, found = x_cur.copy(), ~correct
    x_prev = x_cur
    checkpoints = apgd_checkpoints(steps)
    last_w, rises = 0, np.zeros(n, dtype=int)
    halved, f_max_at_w = np.zeros(n, dtype=bool), f_max.copy()
    for k in range(steps):
        _, grad = model.loss_and_input_grad(x_cur, y)
        z = project(x_cur + eta * eps * np.sign(grad), x, eps)
        x_new = z if k == 0 else project(x_cur + momentum * (z - x_cur) + (1 - momentum) * (x_cur - x_prev), x, eps)
        f_new, correct = _per_image_ce(model, x_new, y)
        rises += f_new > f_cur
        better = f_new > f_max
        x_max[better], f_max[better] = x_new[better], f_new[better]
        first = ~correct & ~found
        x_adv[first], found = x_new[first], found | first
        x_prev, x_cur, f_cur = x_cur, x_new, f_new
        if k + 1 in checkpoints[1:]:
            w = k + 1
            reduce = (rises < rho * (w - last_w)) | (~halved & (f_max <= f_max_at_w))
            eta[reduce] /= 2
            x_cur, f_cur = x_cur.copy(), f_cur.copy()
            x_cur[reduce], f_cur[reduce] = x_max[reduce], f_max[reduce]
            x_prev = x_prev.copy()
            x_prev[reduce] = x_max[reduce]  # no momentum across a restart
            last_w, rises = w, np.zeros(n, dtype=int)
            halved, f_max_at_w = reduce, f_max.copy()
    return np.where(found.reshape(per_image), x_adv, x_max).astype(x.dtype, copy=False)
