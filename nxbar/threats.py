"""Threat models beyond SW/SH/HH: who attacks with what knowledge of the chip, and which victim is hit.

Attackers (each makes adversarial inputs with `make_adversarial`, i.e. FGSM/PGD on its own model):
  white-box  the victim itself (software victim: SW; chip victim: HH, the exact chip)
  software   the software model (victim chip: SH, black-box transfer)
  nominal    the model mapped with the chip's design, sigma = 0: knows the parameters, not the variation draw
  eot        expectation over transformation (Athalye et al. 2018) over K chips of the same design with
             other seeds: L_EOT(x) = (1/K) sum_k L_k(x), grad_x L_EOT = (1/K) sum_k grad_x L_k(x)
  transfer   one other chip of the same design (seed a), evaluated on chip b (cross-chip transfer)
Victims: the software model and every chip of `victim_seeds` (one physical chip each); chip results are
reported per seed and as mean and standard deviation (ddof 0) over the seeds.
Every attacker's rows and every sanity target's checks are independent: on a Dask cluster (`nxbar.cluster`) each
is a task, which a worker computes on the model and images it loads from `Inputs`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

import nxbar
from nxbar import cluster
from nxbar.attacks import PGD_STEPS
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_model
from nxbar.crossbar.stochastic import StochasticChip
from nxbar.evaluation import CHIP_SEEDS, METRICS, AttackConfig, correct_mask, make_adversarial, metrics, no_progress
from nxbar.files import Partial, atomic_write_text
from nxbar.reproducibility import bits
from nxbar.sanity import format_checks, noise_pct, sanity_checks
from nxbar.weights import load_model

KNOWS = {  # what each attacker holds of the victim chip
    "white-box": "the victim itself (SW on software, HH on a chip)",
    "software": "the software weights only (SH on a chip)",
    "nominal": "the crossbar design, not the chip's variation draw",
    "eot": "the design and the chip distribution (EOT over sampled chips)",
    "transfer": "one other chip of the same design",
}
ATTACKERS = tuple(KNOWS)
EOT_SEEDS = (100, 101, 102, 103)  # chips the EOT attacker samples; none of them a victim
TRANSFER_SEED = 200  # the chip the transfer attacker owns


class EOTModel:
    """Expectation over K models (chips): loss and input gradient are the means over the K models.

    L(x, y) = (1/K) sum_k L_k(x, y);  dL/dx = (1/K) sum_k dL_k/dx. Usable by `nxbar.attacks.pgd` unchanged.
    forward returns the mean logits (used by predict). dtype and std are those of the first model.
    """

    def __init__(self, models):
        self.models = list(models)
        if not self.models:
            raise ValueError("EOTModel needs at least one model, got none")
        self.dtype, self.std = self.models[0].dtype, self.models[0].std

    def loss_and_input_grad(self, x, y):
        pairs = [m.loss_and_input_grad(x, y) for m in self.models]
        k = len(pairs)
        return sum(p[0] for p in pairs) / k, sum(p[1] for p in pairs) / k

    def forward(self, x):
        return sum(m.forward(x) for m in self.models) / len(self.models)

    def predict(self, x):
        return np.argmax(self.forward(x), axis=1)


def chip(software, config: CrossbarConfig, seed: int, *, read_seed: int | None = None, cache=True, cache_dir=None):
    """Chip `seed` of design `config`: `software` mapped with config.replace(seed=seed); with `read_seed`, the
    stochastic chip instead (fresh variation at every read, `StochasticChip`), its reads from stream `seed`."""
    if read_seed is not None:
        return StochasticChip(software, config, read_seed, stream=seed, cache=cache, cache_dir=cache_dir)
    return map_model(software, config.replace(seed=seed), cache=cache, cache_dir=cache_dir)


def nominal_chip(software, config: CrossbarConfig, *, cache=True, cache_dir=None):
    """The design without a variation draw: `software` mapped with sigma = 0 (the seed then does not matter)."""
    return map_model(software, config.replace(sigma=0.0, seed=0), cache=cache, cache_dir=cache_dir)


def transfer(attacker, victim, images, labels, attack: AttackConfig, *, batch_size=200, x_adv=None,
             progress=no_progress, label="") -> dict:
    """CA, AA, AL (percent) of `victim` on adversarial inputs made on `attacker` with `attack`, and "outcomes":
    the per-image clean_correct and adv_correct flags (`nxbar.reproducibility.bits`, image order).

    attacker = victim is the white-box attack (HH on a chip); `x_adv` passes inputs already made on
    `attacker` (then `attacker` is not used). progress/label: as for `make_adversarial`.
    """
    if x_adv is None:
        x_adv = make_adversarial(attacker, images, labels, attack, batch_size=batch_size, progress=progress,
                                 label=label)
    clean, adv = correct_mask(victim, images, labels, batch_size), correct_mask(victim, x_adv, labels, batch_size)
    return {**metrics(len(labels), int(clean.sum()), int(adv.sum())),
            "outcomes": {"clean_correct": bits(clean), "adv_correct": bits(adv)}}


@dataclass(frozen=True)
class Inputs:
    """Where a worker process loads the software model and the images of a threat report (`nxbar.cluster`):
    the weight file (`nxbar.cluster.pinned`: path and hashes, with the driver's BLAS kernel), and the data
    (`nxbar.data.load.model_dataset`'s spec, split and n) with the sha256 of its images and labels."""

    weights: tuple
    blas_kernel: str | None
    data: str
    split: str
    n: int | None
    images_sha256: str

    @classmethod
    def of(cls, weights, data: str, split: str, n: int | None, images, labels) -> Inputs:
        """The inputs of weight file `weights` and the first n images of data set `data` (a path is made
        absolute), which are `images` and `labels`."""
        pinned, kernel = cluster.pinned({"software": weights})
        where = data if data == "embedded" else str(Path(data).absolute())
        return cls(pinned, kernel, where, split, n, _digest(images, labels))

    def load(self):
        """(software model, images, labels), checked against the driver's (`nxbar.cluster.check_pinned`, the
        images' digest)."""
        from nxbar.data.load import model_dataset

        cluster.check_pinned(self.weights, self.blas_kernel)
        software, _ = load_model(self.weights[0][1])
        ds = model_dataset(self.data, self.split, self.n, software)
        if _digest(ds.images, ds.labels) != self.images_sha256:
            raise ValueError(f"{self.data}: the images here are not the run's; every machine needs the same data "
                             "under the same path")
        return software, ds.images, ds.labels


def _digest(images, labels) -> str:
    """sha256 of the images' and labels' bytes."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes() + np.ascontiguousarray(labels).tobytes()).hexdigest()


def _setup(config, attack, victim_seeds, eot_seeds, transfer_seed, read_seed, cache, cache_dir, batch_size) -> tuple:
    """A threat matrix's settings as (name, value) pairs of plain values: part of its tasks' keys and what a
    worker needs besides the inputs."""
    return (("config", config), ("attack", attack), ("victim_seeds", tuple(victim_seeds)),
            ("eot_seeds", tuple(eot_seeds)), ("transfer_seed", transfer_seed), ("read_seed", read_seed),
            ("cache", cache), ("cache_dir", None if cache_dir is None else str(cache_dir)), ("batch_size", batch_size))


def _attack_models(software, config, victim_seeds, eot_seeds, transfer_seed, read_seed, cache, cache_dir):
    """({seed: victim chip}, {attacker: a function that makes its model}) of a threat matrix, for the attackers
    whose model does not depend on the victim; with `read_seed`, stochastic chips (`chip`)."""
    mapped = {"read_seed": read_seed, "cache": cache, "cache_dir": cache_dir}
    victims = {s: chip(software, config, s, **mapped) for s in victim_seeds}
    fixed = {
        "software": lambda: software,
        "nominal": lambda: nominal_chip(software, config, cache=cache, cache_dir=cache_dir),
        "eot": lambda: EOTModel(chip(software, config, s, **mapped) for s in eot_seeds),
        "transfer": lambda: chip(software, config, transfer_seed, **mapped),
    }
    return victims, fixed


def _attacker_rows(name, software, victims, fixed, images, labels, attack, batch_size, progress) -> list[dict]:
    """The two rows of attacker `name`, on the software victim and on the chips (see `threat_matrix`)."""
    common = {"attack": attack, "batch_size": batch_size, "progress": progress}
    head = {**attack.as_dict(), "n": len(labels)}
    x_adv = None
    if name != "white-box":
        x_adv = make_adversarial(fixed[name](), images, labels, attack, batch_size=batch_size, progress=progress,
                                 label=f"{name} attacker")
    on_software = transfer(software, software, images, labels, x_adv=x_adv, label="white-box on software", **common)
    per_seed = [{"seed": s, **transfer(v, v, images, labels, x_adv=x_adv, label=f"white-box on chip {s}", **common)}
                for s, v in victims.items()]
    stats = {}
    for key in METRICS:
        values = np.array([p[key] for p in per_seed])
        stats[key], stats[f"{key}_std"] = float(values.mean()), float(values.std())
    return [{"attacker": name, "victim": "software", **head, **on_software},
            {"attacker": name, "victim": "chips", **head, **stats, "per_seed": per_seed}]


def _sanity(target, model, images, labels, attack, sanity_images, queries, progress) -> list[dict]:
    """The sanity checks of `target` (its `model`) on the first `sanity_images` images, as dicts. They vary PGD:
    an APGD matrix is checked with PGD-10 at its eps."""
    checked = attack if attack.attack == "pgd" else replace(attack, attack="pgd", steps=PGD_STEPS)
    return [c.as_dict() for c in sanity_checks(model, images[:sanity_images], labels[:sanity_images], checked,
                                               queries=queries, progress=progress, label=f"sanity checks [{target}]")]


def _loaded(inputs: Inputs, setup: tuple):
    """(software, images, labels, victims, attacker models) of a threat report in a worker process."""
    software, images, labels = inputs.load()
    s = dict(setup)
    models = _attack_models(software, s["config"], s["victim_seeds"], s["eot_seeds"], s["transfer_seed"],
                            s["read_seed"], s["cache"], s["cache_dir"])
    return (software, images, labels, *models)


def _on_worker(inputs: Inputs, setup: tuple, unit: tuple):
    """A unit of a threat report as a Dask task: ("attacker", name) -> its two rows; ("sanity", target,
    sanity_images, queries) -> its checks. The worker process loads the inputs and maps the chips once for its
    next tasks of the same report."""
    software, images, labels, victims, fixed = cluster.kept((inputs, setup), lambda: _loaded(inputs, setup))
    s = dict(setup)
    if unit[0] == "attacker":
        return _attacker_rows(unit[1], software, victims, fixed, images, labels, s["attack"], s["batch_size"],
                              no_progress)
    model = software if unit[1] == "software" else victims[s["victim_seeds"][0]]
    return _sanity(unit[1], model, images, labels, s["attack"], unit[2], unit[3], no_progress)


def _units(client, inputs: Inputs | None, setup: tuple, units: list[tuple], local):
    """(unit, result, True) of every unit of a threat report: local(unit) here without a client, else a task of
    its workers (`_on_worker`), which load `inputs`."""
    if client is not None and inputs is None:
        raise ValueError("a threat report on a cluster needs its inputs (`Inputs`): where workers load the model "
                         "and the images")
    return cluster.each_result(client, units, {}, lambda unit: cluster.task_key("nxbar-threats", inputs, setup, unit),
                               local, functools.partial(_on_worker, inputs, setup))


def threat_matrix(software, config: CrossbarConfig, images, labels, attack: AttackConfig, *,
                  victim_seeds=CHIP_SEEDS, eot_seeds=EOT_SEEDS, transfer_seed=TRANSFER_SEED,
                  attackers=ATTACKERS, read_seed=None, cache=True, cache_dir=None, batch_size=200,
                  progress=no_progress, rows_done=(), on_rows=None, client=None, inputs: Inputs | None = None
                  ) -> list[dict]:
    """Rows of the attacker x victim matrix: CA, AA, AL (percent) of every attacker on every victim.

    One row per (attacker, victim) with victim "software" or "chips"; a "chips" row has the mean over
    `victim_seeds`, their standard deviations CA_std/AA_std/AL_std (ddof 0) and `per_seed` (one
    {seed, CA, AA, AL, outcomes} per chip); a "software" row has its own per-image "outcomes" (`transfer`). EOT
    and transfer chips must not be victims (the attacker does not hold the victim chip): their seeds must be
    disjoint from `victim_seeds`. With `read_seed`, every chip is
    stochastic (`chip`). progress: as for `make_adversarial`, one bar per attack run.
    Resuming: `rows_done` are rows an interrupted run of the same call returned through `on_rows`, which is
    called with all rows so far after each attacker; their attackers are not attacked again.
    client: a dask.distributed Client (`nxbar.cluster.connect`): each attacker is a task of its workers, which
    load `inputs` (the same model and images); the same rows.
    """
    bad = [a for a in attackers if a not in ATTACKERS]
    if bad or not attackers:
        raise ValueError(f"attacker(s) {', '.join(bad) or '(none)'} not allowed; allowed: {', '.join(ATTACKERS)}")
    victim_seeds, eot_seeds = tuple(victim_seeds), tuple(eot_seeds)
    if not victim_seeds:
        raise ValueError("victim_seeds must name at least one chip seed, got none")
    held = set(victim_seeds) & (set(eot_seeds) | {transfer_seed})
    if held:
        raise ValueError(f"eot_seeds and transfer_seed must differ from victim_seeds {victim_seeds}; "
                         f"shared: {sorted(held)}")
    head = {**attack.as_dict(), "n": len(labels)}
    rows = list(rows_done)
    for r in rows:
        if r["attacker"] not in attackers or any(r.get(k) != v for k, v in head.items()):
            raise ValueError(f"rows_done holds a {r['attacker']!r} row of another attack or image count than "
                             f"{head} with attackers {', '.join(attackers)}")
    done = {r["attacker"] for r in rows}

    @functools.cache
    def models():
        """The victim chips and the attackers' models, mapped once for every attacker computed here."""
        return _attack_models(software, config, victim_seeds, eot_seeds, transfer_seed, read_seed, cache, cache_dir)

    def local(unit):
        """The rows of attacker unit[1], computed here."""
        return _attacker_rows(unit[1], software, *models(), images, labels, attack, batch_size, progress)

    setup = _setup(config, attack, victim_seeds, eot_seeds, transfer_seed, read_seed, cache, cache_dir, batch_size)
    units = [("attacker", name) for name in attackers if name not in done]
    for _, new, _ in _units(client, inputs, setup, units, local):
        rows += new
        if on_rows is not None:
            on_rows(list(rows))
    return sorted(rows, key=lambda r: attackers.index(r["attacker"]))  # stable: software before chips


def threat_report(software, config: CrossbarConfig, images, labels, attack: AttackConfig, *,
                  victim_seeds=CHIP_SEEDS, eot_seeds=EOT_SEEDS, transfer_seed=TRANSFER_SEED,
                  sanity_images: int = 100, queries: int = 300, read_seed=None, cache=True, cache_dir=None,
                  batch_size=200, progress=no_progress, done=None, on_part=None, client=None,
                  inputs: Inputs | None = None) -> dict:
    """The threat matrix (`threat_matrix`) and, with it, the gradient-masking sanity checks
    (`nxbar.sanity.sanity_checks`) of the white-box attack on the software model and on the first victim
    chip, run on the first `sanity_images` images (they vary PGD: for an APGD matrix, PGD-10 at the same eps).
    JSON-serialisable: {config, attack, rows, checks, sanity_images, and read_seed when given}.
    Resuming (a run takes about an hour on VGG8): `on_part` is called with {rows, checks} so far after each
    attacker and each sanity target; `done`, such a dict from an interrupted run of the same call, is not
    computed again. The caller keeps the parts and checks that they come from the same call.
    client, inputs: as for `threat_matrix`; each sanity target is a task too."""
    done = done or {"rows": [], "checks": {}}
    checks = dict(done["checks"])

    def save_rows(rows):
        if on_part is not None:
            on_part({"rows": rows, "checks": dict(checks)})

    rows = threat_matrix(software, config, images, labels, attack, victim_seeds=victim_seeds, eot_seeds=eot_seeds,
                         transfer_seed=transfer_seed, read_seed=read_seed, cache=cache, cache_dir=cache_dir,
                         batch_size=batch_size, progress=progress, rows_done=done["rows"], on_rows=save_rows,
                         client=client, inputs=inputs)
    first = victim_seeds[0]
    targets = {"software": lambda: software,
               f"chip {first}": lambda: chip(software, config, first, read_seed=read_seed, cache=cache,
                                             cache_dir=cache_dir)}

    def local(unit):
        """The checks of sanity target unit[1], computed here."""
        return _sanity(unit[1], targets[unit[1]](), images, labels, attack, unit[2], unit[3], progress)

    setup = _setup(config, attack, victim_seeds, eot_seeds, transfer_seed, read_seed, cache, cache_dir, batch_size)
    units = [("sanity", name, sanity_images, queries) for name in targets if name not in checks]
    for unit, result, _ in _units(client, inputs, setup, units, local):
        checks[unit[1]] = result
        save_rows(rows)
    return {"config": config.as_dict(), "attack": attack.as_dict(), "rows": rows,
            "checks": {name: checks[name] for name in targets}, "sanity_images": int(min(sanity_images, len(labels))),
            **({"read_seed": read_seed} if read_seed is not None else {})}


def run_recorded(software, meta: dict, images, labels, source: str, config: CrossbarConfig, attack: AttackConfig,
                 json_path, *, model: str, command: str, victim_seeds=CHIP_SEEDS, eot_seeds=EOT_SEEDS,
                 transfer_seed=TRANSFER_SEED, sanity_images: int = 100, queries: int = 300, read_seed=None,
                 cache_dir=None, progress=no_progress, client=None, inputs: Inputs | None = None, on_resume=None,
                 on_part=None) -> dict:
    """`threat_report` written to `json_path` with everything it depends on (the run key: model, data, images,
    weight hash, physics, attack, seeds, checks), `command`, wall time and versions. Finished parts are kept
    in `<json_path>.partial` meanwhile (`nxbar.files.Partial`), then `on_part(part)` is told; a run stopped
    part-way resumes from them when called again with the same key (`on_resume(done)` is told), and another
    run's partial file is refused. client, inputs: as for `threat_report`."""
    run_key = json.loads(json.dumps({  # everything the numbers depend on, as the partial file stores it
        "model": model, "data": source, "n_images": int(len(labels)), "npz_sha256": meta["npz_sha256"],
        "config": config.as_dict(), "attack": attack.as_dict(), "victims": list(victim_seeds),
        "eot": list(eot_seeds), "transfer_seed": transfer_seed, "sanity_images": sanity_images, "queries": queries,
        **({"read_seed": read_seed} if read_seed is not None else {})}))
    stopped = Partial(Path(f"{json_path}.partial"), run_key)
    done = stopped.load()
    if done is not None and on_resume is not None:
        on_resume(done)

    def keep(part):
        stopped.keep(part)
        if on_part is not None:
            on_part(part)

    report = threat_report(software, config, images, labels, attack, victim_seeds=victim_seeds, eot_seeds=eot_seeds,
                           transfer_seed=transfer_seed, sanity_images=sanity_images, queries=queries,
                           read_seed=read_seed, cache_dir=cache_dir, progress=progress, done=done, on_part=keep,
                           client=client, inputs=inputs)
    record = {"command": command, **report, **run_key, "wall_time_s": stopped.elapsed_s(),
              "versions": nxbar.versions()}
    atomic_write_text(json_path, json.dumps(record, indent=2))
    stopped.path.unlink(missing_ok=True)
    return record


def format_report(report: dict) -> str:
    """Plain-text table of a `threat_report`: one line per attacker x victim (mean +- std over chips),
    then one line per sanity check."""
    lines = [f"{'attacker':<10} {'victim':<9} {'CA':>14} {'AA':>14} {'AL':>14}"]
    for r in report["rows"]:
        cells = [f"{r[k]:6.2f}" + (f" +- {r[k + '_std']:4.2f}" if k + "_std" in r else "") for k in METRICS]
        lines.append(f"{r['attacker']:<10} {r['victim']:<9} " + " ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines + format_checks(report["checks"]))


def robustness(report: dict) -> list[dict]:
    """How much of the chips' robustness is left against each attacker of a `threat_report`.

    The study's robustness is the chips' adversarial loss falling below the software model's under its own
    white-box attack: gap(a) = AL(SW) - AL(a -> chips), in percentage points, AL(SW) the white-box row on
    the software victim and AL(a -> chips) the mean over the victim chips. Since AL = CA - AA the gap splits
    into clean accuracy the chips lost, CA(SW) - CA(chips), which is no robustness at all, and adversarial
    accuracy they kept, AA(a -> chips) - AA(SW). The robustness survives attacker a when the kept AA exceeds
    noise = two standard errors of the chips' mean AA on the n images (`nxbar.sanity.noise_pct`,
    Agresti-Coull). One dict per attacker: attacker, AL, AL_std, gap_pp, ca_lost_pp, aa_kept_pp, noise_pp,
    survives.
    """
    rows = {(r["attacker"], r["victim"]): r for r in report["rows"]}
    if ("white-box", "software") not in rows:
        raise ValueError("robustness needs the white-box attacker's row on the software victim (AL of SW); "
                         f"the report has attackers {', '.join(dict.fromkeys(a for a, _ in rows))}")
    sw = rows[("white-box", "software")]
    out = []
    for (attacker, victim), r in rows.items():
        if victim == "chips":
            kept, noise = r["AA"] - sw["AA"], noise_pct(r["AA"], r["n"])
            out.append({"attacker": attacker, "AL": r["AL"], "AL_std": r["AL_std"], "gap_pp": sw["AL"] - r["AL"],
                        "ca_lost_pp": sw["CA"] - r["CA"], "aa_kept_pp": kept, "noise_pp": noise,
                        "survives": kept > noise})
    return out
