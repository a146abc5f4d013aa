"""Evaluation under attack (docs/protocol.md section 5): the attack configuration with its defaults, the modes
SW, SH and HH, the metrics CA, AA and AL, and the batched attack driver that makes adversarial inputs.

SW: adversarial inputs made on the software model, evaluated on it ("Attack-SW", the baseline).
SH: the SW adversarial inputs evaluated on the crossbar-mapped model (black-box transfer).
HH: adversarial inputs made on the crossbar-mapped model, evaluated on it (white-box).
CA = clean accuracy of the evaluated model, AA = accuracy on the adversarial inputs, AL = CA - AA (percent).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np

from nxbar.attacks import PGD_ALPHA, PGD_RANDOM_START, PGD_STEPS, apgd, check_eps, fgsm_step, pgd, pixel_budget

MODES = ("SW", "SH", "HH")
METRICS = ("CA", "AA", "AL")
ATTACKS = ("fgsm", "pgd", "apgd")
CHIP_SEEDS = (0, 1, 2)  # the chips a hardware result is averaged over (docs/protocol.md section 9)


@dataclass(frozen=True)
class AttackConfig:
    """One attack setting. eps and alpha are in `eps_space` units (pixel: [0, 1] images; normalized: the
    model's normalised input, so the pixel budget of channel c is eps * std_c). seed seeds the random start of
    PGD and APGD; steps is either's number of gradient steps; APGD sets its own step sizes (alpha unused).
    early_stop (PGD only, opt-in): stop attacking an image once it is misclassified (`attacks.pgd`); it changes
    what AA measures, so as_dict records it when it is on."""

    attack: str = "pgd"
    eps: float = 8 / 255
    eps_space: str = "pixel"
    steps: int = PGD_STEPS
    alpha: float = PGD_ALPHA
    random_start: bool = PGD_RANDOM_START
    seed: int = 0
    early_stop: bool = False

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"attack {self.attack!r} unknown; allowed: {', '.join(ATTACKS)}")
        check_eps(self.eps, self.eps_space)
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps {self.steps!r} is not allowed; steps must be an integer >= 1")
        if not (np.isfinite(self.alpha) and 0 < self.alpha <= 1):
            raise ValueError(f"alpha {self.alpha!r} is out of range; allowed: 0 < alpha <= 1")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed {self.seed!r} is not allowed; seed must be an integer >= 0")
        if self.early_stop not in (False, True):
            raise ValueError(f"early_stop {self.early_stop!r} is not allowed; early_stop must be True or False")
        if self.early_stop and self.attack != "pgd":
            raise ValueError(f"early stopping is defined for pgd only, not for {self.attack}")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.attack == "fgsm":  # PGD-only fields mean nothing for FGSM
            for key in ("steps", "alpha", "random_start", "seed"):
                d.pop(key)
        elif self.attack == "apgd":
            d.pop("alpha")
        if not self.early_stop:  # the default: stored results from before the option keep their keys
            d.pop("early_stop")
        return d


def metrics(n: int, clean_correct: int, adv_correct: int | None = None) -> dict:
    """CA, and with `adv_correct` AA and AL, in percent of `n` images: CA = clean_correct / n,
    AA = adv_correct / n, AL = CA - AA."""
    out = {"CA": 100.0 * clean_correct / n}
    if adv_correct is not None:
        out.update(AA=100.0 * adv_correct / n, AL=100.0 * (clean_correct - adv_correct) / n)
    return out


def mode_names(modes) -> tuple[str, ...]:
    """`modes` (any case) as MODES spells them; a clear ValueError for an unknown or empty list."""
    modes = list(modes)
    names = tuple(m.strip().upper() for m in modes)
    bad = [m for m in modes if m.strip().upper() not in MODES]
    if bad or not names:
        raise ValueError(f"mode(s) {', '.join(bad) or '(none)'} not allowed; allowed: {', '.join(MODES).lower()}")
    return names


class _NoProgress:
    def update(self, n):
        pass


def no_progress(label, total):
    """The silent `progress`: progress(label, total) returns a context manager whose value has update(n)
    (click.progressbar's interface), here one that shows nothing."""
    return contextlib.nullcontext(_NoProgress())


def as_float(images: np.ndarray, dtype) -> np.ndarray:
    """Images as `dtype` in [0, 1]: uint8 pixels divided by 255, float images unchanged (no copy if already dtype)."""
    return images.astype(dtype) / 255 if images.dtype == np.uint8 else images.astype(dtype, copy=False)


def correct_mask(model, images, labels, batch_size=200) -> np.ndarray:
    """Per image, in order: whether the predicted class equals the label (bool)."""
    return np.concatenate([np.zeros(0, dtype=bool)] + [
        model.predict(as_float(images[s : s + batch_size], model.dtype)) == labels[s : s + batch_size]
        for s in range(0, len(labels), batch_size)])


def count_correct(model, images, labels, batch_size=200) -> int:
    """Number of images whose predicted class equals the label."""
    return int(np.sum(correct_mask(model, images, labels, batch_size)))


def gradient_signs(model, images, labels, *, batch_size=200, progress=no_progress, label="") -> np.ndarray:
    """sign(grad_x L(x, y)) at the clean `images` (float, model.dtype): the direction FGSM steps in at every eps,
    so one computation serves a whole eps sweep (`make_adversarial(..., signs=...)`)."""
    out = np.empty(images.shape, dtype=model.dtype)
    with progress(label or "input gradients for FGSM", len(labels)) as bar:
        for s in range(0, len(labels), batch_size):
            _, grad = model.loss_and_input_grad(as_float(images[s : s + batch_size], model.dtype),
                                                labels[s : s + batch_size])
            out[s : s + batch_size] = np.sign(grad)
            bar.update(len(grad))
    return out


def make_adversarial(model, images, labels, cfg: AttackConfig, *, batch_size=200, progress=no_progress, label="",
                     signs=None):
    """Adversarial versions (float, pixel space) of `images` made on `model` with attack `cfg`. FGSM takes the
    gradient signs at the clean images from `signs` when given (`gradient_signs` of the same model and images)."""
    eps = pixel_budget(cfg.eps, cfg.eps_space, model.std)
    label = label or f"{cfg.attack} eps={cfg.eps:.4g}"
    if cfg.attack == "fgsm":
        if signs is None:
            signs = gradient_signs(model, images, labels, batch_size=batch_size, progress=progress, label=label)
        return fgsm_step(as_float(images, model.dtype), signs, eps)
    if cfg.attack == "pgd":
        alpha = pixel_budget(cfg.alpha, cfg.eps_space, model.std)

        def attack(x, y, rng):
            return pgd(model, x, y, eps, steps=cfg.steps, alpha=alpha, random_start=cfg.random_start, rng=rng,
                       early_stop=cfg.early_stop)
    else:
        def attack(x, y, rng):
            return apgd(model, x, y, eps, steps=cfg.steps, random_start=cfg.random_start, rng=rng)
    rng = np.random.default_rng(cfg.seed)  # one stream over the batches in order: independent of batch size
    out = np.empty(images.shape, dtype=model.dtype)
    with progress(label, len(labels)) as bar:
        for s in range(0, len(labels), batch_size):
            x = as_float(images[s : s + batch_size], model.dtype)
            out[s : s + batch_size] = attack(x, labels[s : s + batch_size], rng)
            bar.update(len(x))
    return out


def adversarial_memoised(signs: dict, key, model, images, labels, cfg: AttackConfig, *, on="", batch_size=200,
                         progress=no_progress):
    """`make_adversarial` with FGSM's gradient signs memoised in `signs` under `key`, which names the network
    (`model` with its crossbars and input transform): every eps of a sweep on that network steps along the same
    signs. `on` ends the progress labels (" on software")."""
    if cfg.attack == "fgsm" and key not in signs:
        signs[key] = gradient_signs(model, images, labels, batch_size=batch_size, progress=progress,
                                    label=f"fgsm input gradients{on}")
    return make_adversarial(model, images, labels, cfg, batch_size=batch_size, progress=progress,
                            label=f"{cfg.attack} eps={cfg.eps:.4g}{on}", signs=signs.get(key))


def evaluate_modes(software, hardware, images, labels, attacks, *, modes=MODES, batch_size=200, progress=no_progress):
    """Rows of CA/AA/AL per mode and attack setting. `hardware` may be None when only SW is asked for.

    SH reuses the adversarial inputs made for SW; clean accuracies, and FGSM's gradient signs, are computed once
    per model.
    """
    modes = mode_names(modes)
    if hardware is None and any(m in modes for m in ("SH", "HH")):
        raise ValueError("modes sh and hh need a crossbar-mapped model")
    n = len(labels)
    clean = {"sw": count_correct(software, images, labels, batch_size)}
    if hardware is not None:
        clean["hw"] = count_correct(hardware, images, labels, batch_size)
    signs = {}

    def adversarial(model, cfg, where):
        return adversarial_memoised(signs, where, model, images, labels, cfg, on=f" on {where}",
                                    batch_size=batch_size, progress=progress)

    rows = []
    for cfg in attacks:
        adv_sw = None
        if "SW" in modes or "SH" in modes:
            adv_sw = adversarial(software, cfg, "software")
        for mode in modes:
            if mode == "SW":
                model, ca, adv = software, clean["sw"], adv_sw
            elif mode == "SH":
                model, ca, adv = hardware, clean["hw"], adv_sw
            else:
                model, ca = hardware, clean["hw"]
                adv = adversarial(hardware, cfg, "crossbars")
            aa = count_correct(model, adv, labels, batch_size)
            rows.append({"mode": mode, **cfg.as_dict(), "n": n, "clean_correct": ca, "adv_correct": aa,
                         **metrics(n, ca, aa)})
    return rows
