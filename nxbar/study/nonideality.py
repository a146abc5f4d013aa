"""The non-ideality sweep of the robustness study and the rule that chooses its operating points from clean
accuracy alone (docs/protocol.md section 12).

A sweep cell is one chip (seed) of one crossbar size at one strength: variation sigma and parasitic scale s
(`CrossbarConfig.parasitic_scale`, one factor on all four parasitic resistances). It stores the clean
accuracy of the mapped network on the study's images and its mean layer NF. The operating points:
- default: the documented preset (sigma 0.1, s 1) at every size;
- technology: one s for all sizes at sigma 0.1, the s whose chip-mean CA drop on the technology size is
  closest to that size's target drop;
- matched: per size, the s whose chip-mean CA drop on that size is closest to its own target drop.
The search for s starts from the sweep's s grid at sigma 0.1, extends it upward in steps of 1 while no s
reaches the target (up to `max_scale`), then refines in steps of `refine_step` between the last s below the
target and the first at or above it. No attack result takes part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nxbar.attacks import eps_label
from nxbar.evaluation import CHIP_SEEDS, AttackConfig

SWEEP_COLUMNS = ("xbar", "sigma", "parasitic_scale", "chip_seed", "n", "clean_correct", "CA", "nf")
SOFTWARE = "software"

# The study's implied clean-accuracy drops, pp (Table II at PGD 32/255, where AA ~ 0 so AL ~ CA): software
# 86.88, 16x16 78.41, 32x32 77.54, 64x64 72.40 -> 8.47, 9.34, 14.48.
PAPER_DROP_PP = ((16, 8.5), (32, 9.3), (64, 14.5))


def _pgd(eps_255: float, steps: int = 10) -> AttackConfig:
    """PGD at eps = eps_255/255 (pixel units) with step alpha = eps/4: a step as large as the ball wastes steps."""
    return AttackConfig(attack="pgd", eps=eps_255 / 255, alpha=eps_255 / 255 / 4, steps=steps)


def _fgsm(eps: float) -> AttackConfig:
    return AttackConfig(attack="fgsm", eps=eps, eps_space="normalized")


@dataclass(frozen=True)
class Design:
    """What the study computes. sizes: crossbar sizes; chips: chip seeds; n: images (None = all 1,000 embedded);
    sigmas (at s = 1) and scales (at point_sigma): the sweep; targets_pp: ((size, CA drop in pp), ...) for the
    matched points, and the technology point's on technology_size; attacks: at every point, size and chip in
    SW, SH and HH; variants: ((name, physics overrides), ...) of the default preset on variant_size, attacked
    in SH and HH with variant_attacks (claims C5, C6)."""

    model: str = "vgg8"
    sizes: tuple[int, ...] = (16, 32, 64)
    chips: tuple[int, ...] = CHIP_SEEDS
    n: int | None = None
    sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
    scales: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0)
    point_sigma: float = 0.1
    refine_step: float = 0.25
    max_scale: float = 10.0
    targets_pp: tuple[tuple[int, float], ...] = PAPER_DROP_PP
    technology_size: int = 32
    attacks: tuple[AttackConfig, ...] = (_pgd(1), _pgd(2), _pgd(4), _fgsm(0.05), _fgsm(0.1))
    variants: tuple[tuple[str, tuple], ...] = (
        ("R_on 10k ON/OFF 10", (("r_off_ohm", 100e3), ("r_on_ohm", 10e3))),
        ("ON/OFF 100", (("r_off_ohm", 2e6),)),
        ("ON/OFF 1000", (("r_off_ohm", 20e6),)),
        ("ON/OFF 2000", (("r_off_ohm", 40e6),)),
    )
    variant_size: int = 32
    variant_attacks: tuple[AttackConfig, ...] = (_pgd(2), _pgd(4))
    quick: bool = False

    def as_dict(self) -> dict:
        """The design as JSON values (attacks as their AttackConfig dicts)."""
        return {"model": self.model, "sizes": list(self.sizes), "chips": list(self.chips), "n": self.n,
                "sigmas": list(self.sigmas), "scales": list(self.scales), "point_sigma": self.point_sigma,
                "refine_step": self.refine_step, "max_scale": self.max_scale,
                "targets_pp": {str(s): t for s, t in self.targets_pp}, "technology_size": self.technology_size,
                "attacks": [a.as_dict() for a in self.attacks],
                "variants": {name: dict(p) for name, p in self.variants}, "variant_size": self.variant_size,
                "variant_attacks": [a.as_dict() for a in self.variant_attacks], "quick": self.quick}


FULL = Design()
# Every path of the study on a few images and one chip, small enough for the tests: two small sizes stand for
# 16/32/64, PGD with 2 steps, s not searched beyond the grid.
QUICK = Design(sizes=(8, 16), chips=(0,), n=16, sigmas=(0.0, 0.1), scales=(1.0, 2.0), max_scale=2.0,
               targets_pp=((8, 8.5), (16, 9.3)), technology_size=16,
               attacks=(_pgd(2, steps=2), _fgsm(0.1)), variants=FULL.variants[:2], variant_size=16,
               variant_attacks=(_pgd(2, steps=2),), quick=True)


def attack_label(a: AttackConfig) -> str:
    """'PGD-10 2/255', 'APGD-50 2/255' or 'FGSM 0.1 normalized'."""
    if a.attack in ("pgd", "apgd"):
        return f"{a.attack.upper()}-{a.steps} {eps_label(a.attack, a.eps)}"
    return f"FGSM {eps_label('fgsm', a.eps)} {a.eps_space}"


def sweep_grid(design: Design) -> list[tuple[int, float, float, int]]:
    """The sweep's cells (size, sigma, parasitic scale, chip): sigmas at s = 1, then scales at point_sigma."""
    strengths = dict.fromkeys([(float(s), 1.0) for s in design.sigmas]
                              + [(design.point_sigma, float(k)) for k in design.scales])
    return [(size, sigma, scale, chip) for sigma, scale in strengths for size in design.sizes for chip in design.chips]


def sweep_key(size, sigma, scale, chip) -> tuple[str, str, str, str]:
    """A sweep cell's key columns as stored (xbar, sigma, parasitic_scale, chip_seed)."""
    return (str(size), repr(float(sigma)), repr(float(scale)), str(chip))


def _drops(rows: list[dict], design: Design) -> tuple[float, dict[int, dict[float, float]]]:
    """(software CA, {size: {s: chip-mean CA drop in pp}}) of the complete s cells at point_sigma in `rows`."""
    sw = next(float(r["CA"]) for r in rows if r["xbar"] == SOFTWARE)
    by = {}
    for r in rows:
        if r["xbar"] != SOFTWARE and float(r["sigma"]) == design.point_sigma:
            by.setdefault((int(r["xbar"]), float(r["parasitic_scale"])), []).append(float(r["CA"]))
    drops: dict[int, dict[float, float]] = {}
    for (size, s), cas in by.items():
        if len(cas) == len(design.chips):
            drops.setdefault(size, {})[s] = sw - float(np.mean(cas))
    return sw, {size: dict(sorted(d.items())) for size, d in drops.items()}


def _search(drops: dict[float, float], target: float, design: Design) -> tuple[list[float], float | None]:
    """(scales still to measure, chosen scale or None until none is missing) for one size and target drop."""
    scales = sorted(drops)
    above = [s for s in scales if drops[s] >= target]
    if not above and scales[-1] + 1 <= design.max_scale:
        return [scales[-1] + 1.0], None  # extend upward in steps of 1
    if above and above[0] != scales[0]:
        hi = above[0]
        lo = max(s for s in scales if s < hi)
        fine = [float(v) for v in np.arange(lo + design.refine_step, hi - 1e-9, design.refine_step)]
        missing = [v for v in fine if v not in drops]
        if missing:
            return missing, None
    # closest to the target; on a tie the smaller s (the milder technology)
    return [], min(scales, key=lambda s: (abs(drops[s] - target), s))


def choose_points(rows: list[dict], design: Design) -> tuple[list[tuple[int, float]], dict | None]:
    """Apply the rule to the stored sweep `rows`. Returns (cells still to measure as (size, scale) at point_sigma
    on every chip, None) while the search needs more cells, else ([], points record): the rule in words, the
    software CA, the measured drops it searched, the targets and, per point and size, the physics overrides."""
    sw, drops = _drops(rows, design)
    targets = dict(design.targets_pp)
    todo, chosen = [], {}
    for size in sorted({design.technology_size, *targets}):
        if size not in drops:
            raise ValueError(f"the sweep holds no complete {size}x{size} cells at sigma {design.point_sigma}")
        missing, s = _search(drops[size], targets[size], design)
        todo += [(size, m) for m in missing]
        chosen[size] = s
    if todo:
        return todo, None

    def physics(scale: float) -> dict:
        return {"sigma": design.point_sigma, "parasitic_scale": scale}

    tech = chosen[design.technology_size]
    points = {
        "default": {str(size): {} for size in design.sizes},
        "technology": {str(size): physics(tech) for size in design.sizes},
        "matched": {str(size): physics(chosen[size]) for size in design.sizes if size in targets},
    }
    record = {
        "rule": RULE.format(sigma=design.point_sigma, step=design.refine_step, max_scale=design.max_scale,
                            tech=design.technology_size),
        "software_CA": sw, "targets_drop_pp": {str(s): t for s, t in design.targets_pp},
        "drops_pp_at_sigma": {str(size): {repr(s): round(d, 6) for s, d in drops[size].items()} for size in drops},
        "chosen_scale": {"technology": tech, **{f"matched {size}": chosen[size] for size in targets}},
        "points": points,
    }
    return [], record


RULE = ("Clean accuracy only, no attack: CA drop = software CA - chip-mean CA of the mapped network on the same "
        "images. At sigma {sigma}, search the parasitic scale s: the sweep's s grid, extended upward in steps of 1 "
        "(up to {max_scale}) until a drop reaches the target, then refined in steps of {step} between the last s "
        "below the target and the first at or above it; take the searched s whose drop is closest to the target "
        "(a tie: the smaller s). technology: one s for every size, searched on {tech}x{tech} with that size's "
        "target; matched: each size its own s for its own target. default: the preset, sigma 0.1 and s 1.")
