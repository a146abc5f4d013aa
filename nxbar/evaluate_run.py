"""The main command's run (`nxbar evaluate`, docs/protocol.md sections 5 and 7): one network, in software and
mapped onto crossbars, attacked in the modes asked for, with the optional input defence and gradient-masking
sanity checks, timed; and its json record."""

from __future__ import annotations

import time
from dataclasses import dataclass

import nxbar
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.stochastic import StochasticChip
from nxbar.defences import InputDiscretization
from nxbar.evaluation import AttackConfig, evaluate_modes, no_progress
from nxbar.sanity import sanity_checks


@dataclass(frozen=True)
class EvaluateResult:
    """What a run computed: the chip (None in software only), the software model behind its defence (None
    without one), the rows of `evaluate_modes`, the sanity checks per target (None when not run) and timings."""

    mapped: object | None
    defence: InputDiscretization | None
    rows: list[dict]
    sanity: dict | None
    sanity_images: int
    timings: dict


def evaluate_run(net, images, labels, attacks: list[AttackConfig], *, config: CrossbarConfig, modes: tuple[str, ...],
                 map_fn, input_bits: int | None = None, batch_size: int = 200, sanity_images: int = 0,
                 queries: int = 300, progress=no_progress) -> EvaluateResult:
    """Attack `net` and its chip (`map_fn(net, config)`, made only when SH or HH is asked for) in `modes`; with
    `input_bits`, both behind b-bit input discretization; with `sanity_images` > 0, the sanity checks of the
    first attack on that many first images, on the software model and on the chip. Times in seconds."""
    t0 = time.perf_counter()
    timings, mapped = {}, None
    if any(m in modes for m in ("SH", "HH")):
        mapped = map_fn(net, config)
        timings["map_s"] = time.perf_counter() - t0
    victims, defence = (net, mapped), None
    if input_bits is not None:
        victims = tuple(None if m is None else InputDiscretization(m, input_bits) for m in victims)
        defence = victims[0]
    t = time.perf_counter()
    rows = evaluate_modes(*victims, images, labels, attacks, modes=modes, batch_size=batch_size, progress=progress)
    timings["attack_s"] = time.perf_counter() - t
    sanity, k = None, min(sanity_images, len(labels))
    if sanity_images:
        t = time.perf_counter()
        targets = {"software": victims[0], **({f"chip {config.seed}": victims[1]} if victims[1] is not None else {})}
        sanity = {name: [c.as_dict() for c in sanity_checks(m, images[:k], labels[:k], attacks[0], queries=queries,
                                                            label=f"sanity checks [{name}]", progress=progress)]
                  for name, m in targets.items()}
        timings["sanity_s"] = time.perf_counter() - t
    return EvaluateResult(mapped, defence, rows, sanity, k, timings)


def evaluate_record(result: EvaluateResult, *, command: str, net, meta: dict, weights_path, source: str,
                    n_images: int, config: CrossbarConfig, attacks: list[AttackConfig], timings: dict) -> dict:
    """The json record of a run: results, full configuration, weight hash, versions and `timings` (the whole
    command's: loading, the run's own, total)."""
    return {
        "command": command,
        "model": {"name": meta.get("model", net.arch), "arch": net.arch, "dataset": meta["dataset"],
                  "weights": str(weights_path),
                  "npz_sha256": meta["npz_sha256"]},
        "data": {"source": source, "n_images": int(n_images)},
        "crossbar": config.as_dict() if result.mapped is not None else None,
        **({"stochastic": result.mapped.as_dict()} if isinstance(result.mapped, StochasticChip) else {}),
        "mapping_report": result.mapped.report if result.mapped is not None else None,
        "defence": result.defence.as_dict() if result.defence is not None else None,
        "attacks": [a.as_dict() for a in attacks],
        "results": result.rows,
        "sanity": result.sanity,
        "timings": timings,
        "versions": nxbar.versions(),
    }
