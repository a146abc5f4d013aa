"""Cases of assignment 3 (docs/assignments/assignment3_attacks.md): FGSM and PGD, against nxbar.attacks, on
models the child builds from the same description (nxbar.grading.child.build_model)."""

from __future__ import annotations

import numpy as np

from nxbar.attacks import PGD_ALPHA, fgsm, pgd, project
from nxbar.grading.child import build_model
from nxbar.grading.core import Call, Case, Rng, Trial, check_array

EPS = 8 / 255
PER_CHANNEL = np.array([4, 8, 12]) / 255


def _linear(rng, dtype):
    """A linear softmax model 48 -> 5 with drawn weights: its description and its input arrays."""
    w, b = rng.standard_normal((48, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)
    return {"kind": "linear", "w": "w", "b": "b"}, {"w": w, "b": b}


def _images(rng, shape, num_classes: int, dtype, edges: bool):
    """Images in [0.1, 0.9] (no clipping at eps <= 0.1), or with half their pixels exactly 0 or 1 (edges)."""
    x = rng.uniform(0.1, 0.9, shape)
    if edges:
        x = np.where(rng.uniform(size=shape) < 0.5, rng.integers(0, 2, shape), x)
    return x.astype(dtype), rng.integers(0, num_classes, shape[0])


def _mistake(model, x, y, eps, steps, alpha, start, sign=1.0, ball=True, box=True):
    """PGD (FGSM: steps 1, alpha eps, start x) with one of the typical mistakes switched on."""
    x_adv = start
    for _ in range(steps):
        x_adv = x_adv + sign * alpha * np.sign(model.loss_and_input_grad(x_adv, y)[1])
        x_adv = np.clip(x_adv, x - eps, x + eps) if ball else x_adv
        x_adv = np.clip(x_adv, 0.0, 1.0) if box else x_adv
    return x_adv.astype(x.dtype)


def _symptoms(model, x, y, eps, steps, alpha, start):
    run = lambda **mistake: lambda: _mistake(model, x, y, eps, steps, alpha, start, **mistake)  # noqa: E731
    return [
        ("the step goes down the gradient (x - eps sign(grad)): the sign of the step is flipped", run(sign=-1.0)),
        ("the result is not clipped to the image box [0, 1]", run(box=False)),
        ("the iterates are not projected back onto the eps-ball |x_adv - x|_inf <= eps", run(ball=False)),
    ]


def _tolerance(dtype):
    return (0.0, 1e-12) if dtype == np.float64 else (0.0, 1e-6)


def _trial(spec, arrays, x, y, eps, call: Call, expected, symptoms):
    """The attack `call` on model `spec` (its arrays in `arrays`); eps a number or, per channel, an array."""
    arrays = {**arrays, "x": x, "y": y} | ({"eps": eps} if isinstance(eps, np.ndarray) else {})
    return Trial(arrays, (call,), ("x_adv",), lambda got: check_array(
        "x_adv", got["x_adv"], expected, *_tolerance(x.dtype), symptoms), models={"model": spec})


def _fgsm(rng, model_kind: str, dtype, edges: bool, eps):
    if model_kind == "vgg8":
        spec, arrays = {"kind": "vgg8", "seed": int(rng.integers(2**31))}, {}
        x, y = _images(rng, (1, 32, 32, 3), 10, dtype, edges)
    else:
        (spec, arrays), (x, y) = _linear(rng, dtype), _images(rng, (6, 4, 4, 3), 5, dtype, edges)
    model = build_model(spec, arrays)
    e = np.asarray(eps, dtype=x.dtype)
    call = Call("fgsm", ("model", "x", "y", "eps" if isinstance(eps, np.ndarray) else eps), returns="x_adv")
    return _trial(spec, arrays, x, y, eps, call, fgsm(model, x, y, eps), _symptoms(model, x, y, e, 1, e, x))


def _pgd(rng, edges: bool, steps: int, random_start: bool):
    (spec, arrays), (x, y) = _linear(rng, np.float64), _images(rng, (6, 4, 4, 3), 5, np.float64, edges)
    model, seed, alpha = build_model(spec, arrays), int(rng.integers(2**31)), PGD_ALPHA
    expected = pgd(model, x, y, EPS, steps=steps, alpha=alpha, random_start=random_start,
                   rng=np.random.default_rng(seed))
    start = x
    if random_start:
        noise = np.random.default_rng(seed).uniform(-1.0, 1.0, size=x.shape) * EPS
        start = project(x + noise, x, EPS)
    call = Call("pgd", ("model", "x", "y", EPS),
                {"steps": steps, "alpha": alpha, "random_start": random_start, "rng": Rng(seed)}, "x_adv")
    return _trial(spec, arrays, x, y, EPS, call, expected, _symptoms(model, x, y, EPS, steps, alpha, start))


_LIN = "linear softmax model (48 -> 5, drawn weights)"
_IMAGES = "6 images (4, 4, 3) in [0.1, 0.9], labels of 5 classes"
_EDGES = "6 images (4, 4, 3), half the pixels exactly 0 or 1"

CASES = (
    Case("fgsm", 3, f"{_LIN}, float64, {_IMAGES}, eps 8/255",
         lambda rng: _fgsm(rng, "linear", np.float64, False, EPS)),
    Case("fgsm clips to [0, 1]", 2, f"{_LIN}, float64, {_EDGES}, eps 8/255",
         lambda rng: _fgsm(rng, "linear", np.float64, True, EPS)),
    Case("fgsm per-channel eps, float32", 2, f"{_LIN}, float32, {_IMAGES}, eps (4, 8, 12)/255",
         lambda rng: _fgsm(rng, "linear", np.float32, False, PER_CHANNEL)),
    Case("fgsm on VGG8", 2, "random VGG8 (drawn weights), 1 image (32, 32, 3) in [0.1, 0.9], float32, eps 8/255",
         lambda rng: _fgsm(rng, "vgg8", np.float32, False, EPS)),
    Case("pgd", 3, f"{_LIN}, float64, {_IMAGES}, eps 8/255, 5 steps, alpha 2/255, no random start",
         lambda rng: _pgd(rng, False, 5, False)),
    Case("pgd random start", 3, f"{_LIN}, float64, {_IMAGES}, eps 8/255, 3 steps, alpha 2/255, a seeded rng",
         lambda rng: _pgd(rng, False, 3, True)),
    Case("pgd clips to [0, 1]", 2, f"{_LIN}, float64, {_EDGES}, eps 8/255, 3 steps, alpha 2/255",
         lambda rng: _pgd(rng, True, 3, False)),
)
