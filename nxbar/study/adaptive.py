"""Adaptive and stochastic attackers at the robustness study's operating points (docs/protocol.md section 13.4).

It reads the points the robustness study chose (`robustness/points.json`) and runs three parts, each resumable:
1. threat matrices (`nxbar.threats`, per-image outcomes inside) at small budgets, per point and size, written to
   `<out>/threats/<model>_xbar<size>_<point>_pgd<k>-255.json` (a physics shared by two points: one file);
2. APGD-CE beside PGD-10: SW and HH cells with per-image outcomes (`robustness/adaptive.csv`, `outcomes/`),
   paired with the study's PGD-10 cells of the same start;
3. stochastic hardware (`nxbar.crossbar.stochastic`): SH, HH with the gradient of one frozen read, and HH with
   EOT over k fresh reads, each variant on its own read stream, to `robustness/stochastic.json`.
Every paired statistic is `nxbar.study.stats`'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.stochastic import StochasticChip
from nxbar.evaluation import CHIP_SEEDS, AttackConfig, correct_mask, make_adversarial, metrics
from nxbar.files import Partial, atomic_write_text
from nxbar.reproducibility import bits, from_bits
from nxbar.study import stats
from nxbar.study.grid import Cell
from nxbar.study.nonideality import FULL, QUICK, Design, attack_label
from nxbar.study.robustness import AttackCell, Study, _physics, folder, run_cells
from nxbar.study.runner import Runner
from nxbar.threats import EOTModel, run_recorded


@dataclass(frozen=True)
class Adaptive:
    """What the adaptive part computes. threat_points: ((point, sizes), ...) of the threat matrices at every
    budget in threat_budgets (PGD with alpha eps/4); wide_budgets: budgets run at the technology point only;
    apgd: the APGD attack run on SW and HH at apgd_point on every size and chip; stochastic_*: the one size,
    point and budget of the stochastic-hardware run, with EOT over eot_k reads. n: images of every part."""

    study: Design = FULL
    n: int = 300
    threat_points: tuple = (("technology", (16, 32, 64)), ("matched", (16, 32, 64)), ("default", (64,)))
    threat_budgets: tuple[float, ...] = (2 / 255,)
    wide_budgets: tuple[float, ...] = (4 / 255,)
    victims: tuple[int, ...] = CHIP_SEEDS
    eot_seeds: tuple[int, ...] = (100, 101, 102, 103)
    pgd_steps: int = 10
    sanity_images: int = 100
    queries: int = 300
    apgd: AttackConfig = AttackConfig(attack="apgd", eps=2 / 255, steps=50)
    apgd_point: str = "technology"
    apgd_sizes: tuple[int, ...] = (32,)
    stochastic_point: str = "technology"
    stochastic_size: int = 32
    stochastic_eps: float = 2 / 255
    eot_k: tuple[int, ...] = (1, 4, 16)
    read_seed: int = 0


FULL_ADAPTIVE = Adaptive()
QUICK_ADAPTIVE = Adaptive(study=QUICK, n=8, threat_points=(("technology", (16,)),),
                          wide_budgets=(), victims=(0,), eot_seeds=(100,), pgd_steps=2, sanity_images=2, queries=4,
                          apgd=AttackConfig(attack="apgd", eps=2 / 255, steps=2), apgd_sizes=(16,),
                          stochastic_size=8, eot_k=(1, 2))


def _pgd(design: Adaptive, eps: float) -> AttackConfig:
    return AttackConfig(attack="pgd", eps=eps, alpha=eps / 4, steps=design.pgd_steps)


def _config(points: dict, point: str, size: int) -> CrossbarConfig:
    return CrossbarConfig(size=size, **points[point][str(size)])


def threat_files(design: Adaptive, points: dict, out: Path) -> dict[Path, tuple]:
    """{json path: (point names, size, eps)} of the threat matrices, one per distinct physics and budget."""
    runs: dict[tuple, list[str]] = {}
    for eps in design.threat_budgets + design.wide_budgets:
        for point, sizes in design.threat_points:
            if eps in design.wide_budgets and point != "technology":
                continue
            for size in sizes:
                key = (size, _physics(points[point][str(size)]), eps)
                runs.setdefault(key, []).append(point)
    model = design.study.model
    return {out / "threats" / f"{model}_xbar{size}_{names[0]}_pgd{round(eps * 255)}-255.json": (tuple(names), size, eps)
            for (size, _, eps), names in runs.items()}


def apgd_cells(design: Adaptive, points: dict) -> list[AttackCell]:
    """APGD on software and, per size and chip, HH at apgd_point."""
    a, d = design.apgd, design.study
    cells = [AttackCell(Cell(d.model, None, "SW", a), ("software",))]
    return cells + [AttackCell(Cell(d.model, size, "HH", a, _physics(points[design.apgd_point][str(size)]), chip),
                               (design.apgd_point,)) for chip in design.victims for size in design.apgd_sizes]


def stochastic_run(runner: Runner, design: Adaptive, points: dict, path: Path, echo) -> dict:
    """The stochastic-hardware variants, each on its own read stream, kept in `path` as they finish: per variant
    n, clean_correct, adv_correct, CA, AA, AL and per-image outcomes; then each HH variant against SH."""
    d = design
    software = runner.model(d.study.model)[0]
    config = _config(points, d.stochastic_point, d.stochastic_size)
    attack = _pgd(d, d.stochastic_eps)
    images, labels = runner.images, runner.labels
    variants = ["SH", "HH one read", *[f"HH EOT k={k}" for k in d.eot_k]]
    run = {"config": config.as_dict(), "point": d.stochastic_point, "attack": attack.as_dict(),
           "n": int(len(labels)), "read_seed": d.read_seed, "variants": variants}
    part = Partial(path.with_name(path.name + ".partial"), json.loads(json.dumps(run)))
    done = part.load() or {}
    adv_sw = None
    for stream, name in enumerate(variants):
        if name in done:
            continue
        chip = StochasticChip(software, config, d.read_seed, stream=stream, cache_dir=runner.cache_dir)
        if name == "SH":
            adv_sw = make_adversarial(software, images, labels, attack) if adv_sw is None else adv_sw
            adv = adv_sw
        elif name == "HH one read":  # the attacker's gradients all come from one frozen read
            adv = make_adversarial(chip.read(), images, labels, attack)
        else:
            adv = make_adversarial(EOTModel([chip] * int(name.split("=")[1])), images, labels, attack)
        clean, hit = correct_mask(chip, images, labels), correct_mask(chip, adv, labels)
        done[name] = {"n": int(len(labels)), "clean_correct": int(clean.sum()), "adv_correct": int(hit.sum()),
                      **metrics(len(labels), int(clean.sum()), int(hit.sum())),
                      "outcomes": {"clean_correct": bits(clean), "adv_correct": bits(hit)}}
        part.keep(done)
        echo(f"stochastic {name}: CA {done[name]['CA']:.1f}, AA {done[name]['AA']:.1f}")
    record = {**run, "description": StochasticChip.__doc__.split("\n")[0], "cells": done,
              "vs_SH": [_compare(f"{name} vs SH", done[name], done["SH"], view)
                        for view in ("AA", "AL") for name in variants[1:]], "wall_time_s": part.elapsed_s()}
    holm = stats.holm([c["p_mcnemar"] for c in record["vs_SH"]])
    for c, p in zip(record["vs_SH"], holm):
        c["p_holm"] = float(p)
        c["verdict"] = stats.verdict(c["diff"], (c["ci_low"], c["ci_high"]), p, 1 if c["view"] == "AA" else -1)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    part.path.unlink(missing_ok=True)
    return record


def _outcome(cell: dict, view: str) -> np.ndarray:
    clean = from_bits(cell["outcomes"]["clean_correct"]).astype(np.int8)
    adv = from_bits(cell["outcomes"]["adv_correct"]).astype(np.int8)
    return adv if view == "AA" else clean - adv


def _compare(label: str, ours: dict, other: dict, view: str) -> dict:
    """One paired comparison of two stochastic variants in `view` (AA or AL): diff, CI, McNemar p."""
    d = (_outcome(ours, view) - _outcome(other, view))[None]
    diff, (lo, hi), p = stats.paired_summary(d)
    return {"comparison": label, "view": view, "diff": diff, "ci_low": lo, "ci_high": hi, "p_mcnemar": p}


def run(out: str | Path, design: Adaptive, *, weights: dict | None = None, cache_dir=None, echo=print) -> dict:
    """All three parts (the robustness study must have chosen its points); returns {part: path}."""
    out = Path(out)
    study_dir = folder(out, design.study.quick)
    points_path = study_dir / "points.json"
    if not points_path.is_file():
        raise ValueError(f"{points_path} does not exist: run `nxbar robustness` first (its sweep chooses the points)")
    points = json.loads(points_path.read_text())["points"]
    study = Study(out, replace(design.study, n=design.n), weights=weights, cache_dir=cache_dir, echo=echo,
                  record_name="adaptive.json")
    made = {}
    software = study.runner.model(design.study.model)
    for path, (names, size, eps) in threat_files(design, points, out).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            echo(f"threat matrix {path.name}: {'/'.join(names)} {size}x{size}, PGD-{design.pgd_steps} "
                 f"{eps * 255:g}/255")
            run_recorded(*software, study.runner.images, study.runner.labels, study.source,
                         _config(points, names[0], size), _pgd(design, eps), path, model=design.study.model,
                         command="nxbar adaptive", victim_seeds=design.victims, eot_seeds=design.eot_seeds,
                         sanity_images=design.sanity_images, queries=design.queries, cache_dir=cache_dir)
        made[path.name] = str(path)
    run_cells(study.spec, study.runner, apgd_cells(design, points), study_dir / "adaptive.csv", echo)
    made["adaptive.csv"] = str(study_dir / "adaptive.csv")
    stochastic = study_dir / "stochastic.json"
    if not stochastic.is_file():
        stochastic_run(study.runner, design, points, stochastic, echo)
    made["stochastic.json"] = str(stochastic)
    return made
