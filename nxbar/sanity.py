"""Gradient-masking sanity checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness", section 5).

A robustness number from a gradient attack is trusted only when the attack behaves as a working attack:
  eps_sweep          accuracy falls towards 0 as eps grows (a large-eps run)
  steps_restarts     more PGD steps, and other random starts, do not raise accuracy
  gradient_free      a score-based random search (no gradients) does not beat PGD
  loss_increases     the loss rises along the PGD path
Each check returns a `Check` (name, numbers, passed). Accuracies are percent of the given images.
"Does not raise" allows for sampling noise: `tol_pct=None` (default) is two standard errors of the
reference accuracy on n images (`noise_pct`, Agresti-Coull, so that 0% and 100% keep a tolerance); pass a
number to fix it.
A model needs forward (logits), predict, loss_and_input_grad, dtype and std (the engine interface).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from nxbar.attacks import pixel_budget, project
from nxbar.evaluation import AttackConfig, as_float, make_adversarial, no_progress


@dataclass(frozen=True)
class Check:
    """The verdict of one sanity check: its name, the numbers it rests on and whether it passed."""

    name: str
    values: dict
    passed: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _percent(correct: np.ndarray) -> float:
    return 100.0 * int(np.sum(correct)) / len(correct)


def noise_pct(accuracy_pct: float, n: int) -> float:
    """Two standard errors of an accuracy of `accuracy_pct` percent measured on `n` images, in percent:
    2 * 100 sqrt(p (1 - p) / (n + 4)) with p = (k + 2) / (n + 4), k = the correct images (Agresti & Coull 1998,
    "Approximate is better than exact for interval estimation of binomial proportions"). Unlike the plain
    sqrt(a (1 - a) / n) it does not vanish at 0% or 100%, where one image more is still sampling noise."""
    p = (accuracy_pct / 100.0 * n + 2.0) / (n + 4.0)
    return 200.0 * float(np.sqrt(p * (1.0 - p) / (n + 4.0)))


def _tolerance(tol_pct, accuracy_pct, n) -> float:
    return noise_pct(accuracy_pct, n) if tol_pct is None else tol_pct


def _accuracy(model, x, y) -> float:
    return _percent(model.predict(x) == y)


def _pgd_accuracy(model, x, y, attack: AttackConfig) -> float:
    return _accuracy(model, make_adversarial(model, x, y, attack), y)


def _pgd(attack: AttackConfig) -> AttackConfig:
    if attack.attack != "pgd":
        raise ValueError(f"sanity checks need a pgd attack, got {attack.attack!r}")
    return attack


def margin(model, x, y) -> np.ndarray:
    """Per-example margin z_y - max_{j != y} z_j of the logits z (< 0: misclassified)."""
    z = np.array(model.forward(x), dtype=np.float64)
    rows = np.arange(len(y))
    true = z[rows, y]
    z[rows, y] = -np.inf
    return true - z.max(axis=1)


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """Fraction of the image a square covers at `query` of `queries` (Square attack schedule,
    Andriushchenko et al. 2020): p_init halved at queries 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    of a 10000-query run, rescaled to `queries`."""
    i = int(query / queries * 10000)
    return p_init / 2 ** sum(i > t for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))


def random_search(model, x, y, eps, *, queries: int = 300, p_init: float = 0.1, rng=None) -> np.ndarray:
    """Score-based L-infinity random search in the style of the Square attack (no gradients, only forward).

    Start: x_0 = P(x + eps s), s = +-1 per (image, column, channel) (vertical stripes).
    Each query: for every image still classified correctly, draw a square of side
    h = max(1, round(sqrt(p H W))) (p from `square_fraction`, h <= H - 1) at a random place and set the
    perturbation inside it to +-eps per channel; keep the candidate if it lowers the margin (`margin`).
    P = projection onto the eps-ball and [0, 1]. `eps` is a pixel budget (scalar or per channel);
    `rng` a seeded numpy Generator. Images NHWC.
    """
    if rng is None:
        raise ValueError("random_search needs a seeded numpy Generator as rng")
    if not (isinstance(queries, (int, np.integer)) and queries >= 1):
        raise ValueError(f"queries must be an integer >= 1, got {queries!r}")
    eps = np.asarray(eps, dtype=x.dtype)
    n, height, width, channels = x.shape
    x_adv = project(x + eps * rng.choice([-1.0, 1.0], size=(n, 1, width, channels)), x, eps).astype(x.dtype)
    best = margin(model, x_adv, y)
    rows, cols = np.arange(height)[None, :, None, None], np.arange(width)[None, None, :, None]
    for q in range(queries):
        active = np.flatnonzero(best > 0)
        if len(active) == 0:
            break
        p = square_fraction(p_init, q, queries)
        h = int(min(max(1, round(np.sqrt(p * height * width))), max(1, min(height, width) - 1)))
        r = rng.integers(0, height - h + 1, size=len(active))[:, None, None, None]
        c = rng.integers(0, width - h + 1, size=len(active))[:, None, None, None]
        inside = (rows >= r) & (rows < r + h) & (cols >= c) & (cols < c + h)
        signs = rng.choice([-1.0, 1.0], size=(len(active), 1, 1, channels))
        delta = np.where(inside, eps * signs, x_adv[active] - x[active])
        candidate = project(x[active] + delta, x[active], eps).astype(x.dtype)
        m = margin(model, candidate, y[active])
        better = m < best[active]
        x_adv[active[better]] = candidate[better]
        best[active[better]] = m[better]
    return x_adv


def eps_sweep(model, x, y, attack: AttackConfig, *, eps_values=None, max_final_pct: float = 5.0,
              tol_pct: float | None = None) -> Check:
    """PGD accuracy at growing eps (default attack.eps x 1, 2, 4, 8 and 1.0, in attack.eps_space units),
    alpha scaled with eps (alpha / eps kept). Passes if accuracy never rises by more than `tol_pct` from
    one eps to the next and is <= `max_final_pct` at the largest eps."""
    attack = _pgd(attack)
    if eps_values is None:
        eps_values = sorted({min(1.0, attack.eps * f) for f in (1, 2, 4, 8)} | {1.0})
    acc = [_pgd_accuracy(model, x, y, dataclasses.replace(
        attack, eps=float(e), alpha=min(1.0, attack.alpha * e / attack.eps) if attack.eps > 0 else attack.alpha))
        for e in eps_values]
    passed = all(b <= a + _tolerance(tol_pct, a, len(y)) for a, b in zip(acc, acc[1:])) and acc[-1] <= max_final_pct
    return Check("eps_sweep", {"eps": [float(e) for e in eps_values], "accuracy": acc}, passed)


def steps_restarts(model, x, y, attack: AttackConfig, *, steps_factor: int = 4, restarts: int = 4,
                   tol_pct: float | None = None) -> Check:
    """PGD accuracy with `attack`, with steps_factor x the steps, and with `restarts` other seeds.
    Passes if neither more steps nor the mean accuracy over the other random starts is above the base
    accuracy by more than `tol_pct`. Also reports the worst case over base and restarts (an image counts
    as robust only if it survives every start)."""
    attack = _pgd(attack)
    base_adv = make_adversarial(model, x, y, attack)
    base = _accuracy(model, base_adv, y)
    more = _pgd_accuracy(model, x, y, dataclasses.replace(attack, steps=attack.steps * steps_factor))
    robust = model.predict(base_adv) == y
    per_restart = []
    for r in range(1, restarts + 1):
        correct = model.predict(make_adversarial(model, x, y, dataclasses.replace(attack, seed=attack.seed + r))) == y
        per_restart.append(_percent(correct))
        robust &= correct
    mean_restart = float(np.mean(per_restart))
    values = {"accuracy": base, "more_steps_accuracy": more, "steps": attack.steps * steps_factor,
              "restart_accuracy": per_restart, "worst_case_accuracy": _percent(robust)}
    tol = _tolerance(tol_pct, base, len(y))
    return Check("steps_restarts", values, more <= base + tol and mean_restart <= base + tol)


def gradient_free(model, x, y, attack: AttackConfig, *, queries: int = 300, p_init: float = 0.1,
                  tol_pct: float | None = None) -> Check:
    """Accuracy under `random_search` (same eps, seed attack.seed) against PGD accuracy. Passes if the
    random search does not get below the PGD accuracy by more than `tol_pct`."""
    attack = _pgd(attack)
    eps = pixel_budget(attack.eps, attack.eps_space, model.std).astype(x.dtype)
    x_rs = random_search(model, x, y, eps, queries=queries, p_init=p_init, rng=np.random.default_rng(attack.seed))
    pgd_acc, rs_acc = _pgd_accuracy(model, x, y, attack), _accuracy(model, x_rs, y)
    return Check("gradient_free", {"pgd_accuracy": pgd_acc, "random_search_accuracy": rs_acc, "queries": queries},
                 rs_acc >= pgd_acc - _tolerance(tol_pct, pgd_acc, len(y)))


class _LossRecorder:
    """The model, with every loss seen by loss_and_input_grad appended to `losses`."""

    def __init__(self, model):
        self.model, self.losses, self.dtype, self.std = model, [], model.dtype, model.std

    def loss_and_input_grad(self, x, y):
        loss, grad = self.model.loss_and_input_grad(x, y)
        self.losses.append(float(loss))
        return loss, grad


def loss_increases(model, x, y, attack: AttackConfig) -> Check:
    """Mean loss at the PGD iterates x_0 (random start) .. x_steps. Passes if the loss at x_steps is
    above the loss at x_0 (the attack climbs the loss it differentiates)."""
    recorder = _LossRecorder(model)
    x_adv = make_adversarial(recorder, x, y, _pgd(attack), batch_size=len(y))
    path = recorder.losses + [float(model.loss_and_input_grad(x_adv, y)[0])]
    return Check("loss_increases", {"loss_path": path}, path[-1] > path[0])


def sanity_checks(model, x, y, attack: AttackConfig, *, queries: int = 300, progress=no_progress,
                  label: str = "sanity checks") -> list[Check]:
    """All four checks with their defaults (random search with `queries` queries) on images `x` (uint8 pixels
    or floats in [0, 1]); progress(label, 4) as for `nxbar.evaluation.make_adversarial`, one step per check."""
    x = as_float(x, model.dtype)
    runs = [lambda: eps_sweep(model, x, y, attack), lambda: steps_restarts(model, x, y, attack),
            lambda: gradient_free(model, x, y, attack, queries=queries), lambda: loss_increases(model, x, y, attack)]
    checks = []
    with progress(label, len(runs)) as bar:
        for run in runs:
            checks.append(run())
            bar.update(1)
    return checks


def describe(check: dict) -> str:
    """One line of the numbers behind a check (its `as_dict` form), e.g. for a report."""
    v = check["values"]
    if check["name"] == "eps_sweep":
        return "accuracy " + ", ".join(f"{a:.1f}% at eps {e:.4g}" for e, a in zip(v["eps"], v["accuracy"]))
    if check["name"] == "steps_restarts":
        restarts = v["restart_accuracy"]
        return (f"PGD {v['accuracy']:.1f}%, with {v['steps']} steps {v['more_steps_accuracy']:.1f}%, "
                f"{len(restarts)} other starts {np.mean(restarts):.1f}% on average, "
                f"worst case over all starts {v['worst_case_accuracy']:.1f}%")
    if check["name"] == "gradient_free":
        return (f"random search ({v['queries']} queries) {v['random_search_accuracy']:.1f}% "
                f"vs PGD {v['pgd_accuracy']:.1f}%")
    if check["name"] == "loss_increases":
        path = v["loss_path"]
        return f"mean loss {path[0]:.3f} at the start, {path[-1]:.3f} after the last step"
    raise ValueError(f"unknown check {check['name']!r}; known: eps_sweep, steps_restarts, gradient_free, "
                     "loss_increases")


def format_checks(checks: dict[str, list[dict]]) -> list[str]:
    """One line per check of {target: [check as_dict]}: 'sanity [target] name: pass|FAIL (numbers)'."""
    return [f"sanity [{target}] {c['name']}: {'pass' if c['passed'] else 'FAIL'} ({describe(c)})"
            for target, cs in checks.items() for c in cs]
