"""The robustness study (docs/protocol.md section 12): the non-ideality sweep, the operating points chosen from
it, and the attacks at those points with per-image outcomes, run cell by cell and resumable.

Files in the study's folder:
- sweep.csv (SWEEP_COLUMNS): one row per sweep cell, plus one software row;
- points.json: the rule and the chosen points with their physics (written once, before any attack);
- attacks.csv (ATTACK_COLUMNS): one row per attack cell;
- outcomes/<cell>.npz: boolean clean_correct and adv_correct of length n in image order, float32 adv_margin
  (logit of the label minus the largest other), and the cell's key (JSON);
- study.json: the design, images, weights, versions (this run's, and every nxbar version that computed cells)
  and wall time.
Every cell is written whole when it finishes (its outcome file first, then its row), so a stopped run resumes
with the cells that are missing. Every cell is a function of its key alone (`compute_attack_cell`,
`compute_sweep_cell`): given a Dask client (`nxbar.cluster`), the cells of each sweep round and all attack cells
are tasks of its workers, and the driver writes each as it finishes.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import nxbar
from nxbar import cluster
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_model
from nxbar.evaluation import MODES, count_correct, metrics
from nxbar.files import CsvLog, atomic_write, atomic_write_text
from nxbar.reproducibility import outcomes
from nxbar.study.grid import Cell, fmt
from nxbar.study.nonideality import (FULL, QUICK, SOFTWARE, SWEEP_COLUMNS, Design, attack_label, choose_points,
                                     sweep_grid, sweep_key)
from nxbar.study.progress import Progress
from nxbar.study.runner import Runner, RunnerSpec, find_weights, on_worker
from nxbar.weights import file_sha256, weight_paths

ATTACK_KEY = ("model", "xbar", "mode", "chip_seed", "r_on_ohm", "r_off_ohm", "sigma", "parasitic_scale", "attack",
              "eps", "eps_space", "steps", "alpha", "random_start", "attack_seed")
ATTACK_COLUMNS = ("model", "xbar", "point", "attack", "eps", "eps_space", "steps", "alpha", "random_start",
                  "attack_seed", "mode", "chip_seed",
                  "r_on_ohm", "r_off_ohm", "sigma", "parasitic_scale", "n", "clean_correct", "adv_correct",
                  "CA", "AA", "AL", "outcomes")
POINT_ORDER = ("technology", "matched", "default")  # the order attack cells run in, per chip


def folder(out: str | Path, quick: bool) -> Path:
    """The study's folder in a results folder `out`."""
    return Path(out) / ("robustness_quick" if quick else "robustness")


@dataclass(frozen=True)
class AttackCell:
    """One attack cell: `cell` (the study grid's Cell: model, size or None, mode, attack, physics overrides,
    chip seed) and the names of the operating points whose physics it is."""

    cell: Cell
    points: tuple[str, ...]

    def config(self) -> CrossbarConfig | None:
        return None if self.cell.size is None else self.cell.config()

    def key(self) -> tuple[str, ...]:
        """The key columns (ATTACK_KEY) as attacks.csv stores them."""
        c, cfg = self.cell, self.config()
        a = c.attack.as_dict()
        row = {"model": c.model, "xbar": c.size or SOFTWARE, "mode": c.mode, **a, "attack_seed": a.get("seed")}
        if cfg is not None:
            row.update(chip_seed=c.seed, r_on_ohm=cfg.r_on_ohm, r_off_ohm=cfg.r_off_ohm, sigma=cfg.sigma,
                       parasitic_scale=cfg.parasitic_scale)
        return tuple(fmt(row.get(k)) for k in ATTACK_KEY)

    def file_name(self) -> str:
        """The outcome file's name: readable parts and a digest of the key."""
        c = self.cell
        digest = hashlib.sha256(json.dumps(self.key()).encode()).hexdigest()[:10]
        label = attack_label(c.attack).replace("/", "-").replace(" ", "_")
        where = "software" if c.size is None else f"xbar{c.size}_chip{c.seed}"
        return f"{c.mode}_{where}_{label}_{digest}.npz"

    def describe(self) -> str:
        c = self.cell
        where = SOFTWARE if c.size is None else f"{c.size}x{c.size} {';'.join(self.points)} chip {c.seed}"
        return f"{c.mode} {where} {attack_label(c.attack)}"


def _physics(overrides: dict) -> tuple:
    """Physics overrides in one form per chip: the sorted (field, value) pairs that differ from the defaults."""
    default, config = CrossbarConfig().as_dict(), CrossbarConfig(**overrides).as_dict()
    return tuple(sorted((k, v) for k, v in config.items() if v != default[k] and k not in ("size", "seed")))


def attack_cells(design: Design, points: dict) -> list[AttackCell]:
    """The attack grid at the chosen `points` ({name: {size: physics overrides}}, points.json's "points"):
    SW once per attack, then per chip, per (size, physics) in POINT_ORDER (a physics shared by two points is one
    set of cells), then the variants: SH for every attack, then HH."""
    groups: dict[tuple, list[str]] = {}
    for name in POINT_ORDER:
        for size, overrides in points[name].items():
            groups.setdefault((int(size), _physics(overrides)), []).append(name)
    for name, overrides in design.variants:
        groups.setdefault((design.variant_size, _physics(dict(overrides))), []).append(name)
    variants = {name for name, _ in design.variants}
    cells = [AttackCell(Cell(design.model, None, "SW", a), (SOFTWARE,)) for a in design.attacks]
    for chip in design.chips:
        for (size, physics), names in groups.items():
            attacks = design.variant_attacks if set(names) <= variants else design.attacks
            cells += [AttackCell(Cell(design.model, size, mode, a, physics, chip), tuple(names))
                      for mode in MODES[1:] for a in attacks]
    return cells


def compute_sweep_cell(runner: Runner, model: str, cell: tuple[int, float, float, int]) -> dict:
    """A sweep row: the clean accuracy and mean layer NF of `model` mapped at cell = (size, sigma, s, chip)."""
    size, sigma, scale, chip = cell
    net = runner.model(model)[0]
    config = CrossbarConfig(size=size, sigma=sigma, parasitic_scale=scale, seed=chip)
    mapped = map_model(net, config, cache_dir=runner.cache_dir)
    n, correct = len(runner.labels), count_correct(mapped, runner.images, runner.labels)
    return {**dict(zip(SWEEP_COLUMNS, sweep_key(size, sigma, scale, chip))), "n": n, "clean_correct": correct,
            "CA": fmt(metrics(n, correct)["CA"]), "nf": fmt(float(np.mean([r["nf"] for r in mapped.report])))}


def compute_attack_cell(runner: Runner, cell: AttackCell) -> dict[str, np.ndarray]:
    """Per-image outcomes of an attack cell (`nxbar.reproducibility.outcomes`; the runner keeps the clean margins
    of the last network for the next cell on it), adv_margin as float32."""
    out = outcomes(runner, cell.cell, runner.clean_margins)
    return {"clean_correct": out["clean_correct"], "adv_correct": out["adv_correct"],
            "adv_margin": out["adv_margin"].astype(np.float32)}


def attack_row(cell: AttackCell, out: dict[str, np.ndarray]) -> dict:
    """The attacks.csv row of a finished cell."""
    n, ca, aa = len(out["clean_correct"]), int(out["clean_correct"].sum()), int(out["adv_correct"].sum())
    return {**dict(zip(ATTACK_KEY, cell.key())), "point": ";".join(cell.points), "n": n, "clean_correct": ca,
            "adv_correct": aa, **{k: fmt(v) for k, v in metrics(n, ca, aa).items()}, "outcomes": cell.file_name()}


def save_outcomes(path: Path, cell: AttackCell, out: dict[str, np.ndarray]) -> None:
    """The cell's outcome file, written whole (`atomic_write`)."""
    key = json.dumps(dict(zip(ATTACK_KEY, cell.key())))
    atomic_write(path, lambda f: np.savez(f, key=np.array(key), **out))


def load_outcomes(path: Path, cell: AttackCell | None = None) -> dict[str, np.ndarray] | None:
    """A stored outcome file (None if missing or damaged); with `cell`, None also when it holds another key."""
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None
    if cell is not None and json.loads(str(out["key"])) != dict(zip(ATTACK_KEY, cell.key())):
        return None
    return out


def cost(cell: AttackCell) -> float:
    """A cell's cost in forward-plus-gradient passes over the images (a forward pass counts 0.4; APGD makes one
    forward pass per step besides its gradient)."""
    c = cell.cell
    if c.mode == "SH":
        return 0.4
    return {"pgd": c.attack.steps + 0.4, "apgd": 1.4 * c.attack.steps + 0.4}.get(c.attack.attack, 1.4)


def run_cells(spec: RunnerSpec, runner: Runner, cells: list[AttackCell], csv_path: Path, echo, *, client=None,
              on_cell=None, on_torn=None) -> list[dict]:
    """Compute the `cells` that `csv_path` (ATTACK_COLUMNS) lacks on the images of `runner` (built from `spec`),
    here or, with a dask `client`, on its workers; each cell is written whole as it finishes (its outcome file in
    `<csv folder>/outcomes/` first, then its row). Progress with an ETA through `echo`; `on_cell()` after each
    cell. Returns all the CSV's rows."""
    outcomes_dir = csv_path.parent / "outcomes"
    outcomes_dir.mkdir(parents=True, exist_ok=True)
    with CsvLog(csv_path, ATTACK_COLUMNS, on_torn) as log:
        done = {tuple(r[k] for k in ATTACK_KEY) for r in log.rows}
        todo = [c for c in cells if c.key() not in done]
        progress = Progress(sum(cost(c) for c in todo), echo)
        # a cell whose file was written before its row is not computed again; on a cluster the SH cells go
        # last: the SW cell leaves the PGD inputs they evaluate in the disk cache
        stored = {c: load_outcomes(outcomes_dir / c.file_name(), c) for c in todo}
        finished = cluster.each_result(
            client, todo, {c: out for c, out in stored.items() if out is not None},
            lambda c: cluster.task_key("nxbar-attack", spec, c.key()),
            partial(compute_attack_cell, runner), partial(on_worker, compute_attack_cell, spec),
            last=lambda c: c.cell.mode == "SH")
        for i, (cell, out, computed) in enumerate(finished):
            if computed:
                save_outcomes(outcomes_dir / cell.file_name(), cell, out)
            row = log.append(attack_row(cell, out))
            progress.step(cost(cell), i + 1, len(todo), f"{cell.describe()}: CA {row['CA']}, AA {row['AA']}")
            if on_cell is not None:
                on_cell()
        return list(log.rows)


class Study:
    """One run of the study in `out` (its folder: `folder(out, design.quick)`). `echo(text)` prints progress.
    client: a dask.distributed Client (`nxbar.cluster.connect`) whose workers compute the cells, or None.
    `record_name`: the run's record in that folder (study.json; the adaptive attackers keep their own)."""

    def __init__(self, out, design: Design, *, weights: dict | None = None, cache_dir=None, echo=print, client=None,
                 record_name: str = "study.json"):
        from nxbar.data.load import load_dataset

        self.dir, self.design, self.echo, self.client = folder(out, design.quick), design, echo, client
        ds = load_dataset("embedded")
        self.paths = {design.model: find_weights(design.model, weights)}
        self.spec = RunnerSpec.of(self.paths, design.n or len(ds.labels), None, cache_dir)
        self.runner = self.spec.build()
        self.source, self.t0, self.record_path = ds.source, time.perf_counter(), self.dir / record_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_record()

    def _check_record(self) -> None:
        """Refuse to resume a study made on other images, weights or design; write the record. A weight file is
        recorded by its file name and sha256 (the hash is what is compared), so a checkout moved to another folder
        resumes its study."""
        path = self.record_path
        fixed = {"design": self.design.as_dict(), "n_images": len(self.runner.labels), "data": self.source,
                 "weights": {m: {"path": weight_paths(p)[0].name, "npz_sha256": file_sha256(weight_paths(p)[0])}
                             for m, p in self.paths.items()}}
        previous = json.loads(path.read_text()) if path.is_file() else None
        if previous is not None:
            stored = {**previous, "weights": {m: w["npz_sha256"] for m, w in previous.get("weights", {}).items()}}
            now = {**fixed, "weights": {m: w["npz_sha256"] for m, w in fixed["weights"].items()}}
            differ = [k for k in now if stored.get(k) != json.loads(json.dumps(now[k]))]
            if differ:
                raise ValueError(f"{self.dir} holds a study with other {', '.join(differ)}; use another out folder "
                                 "or remove it")
        # every nxbar version that has computed cells of this study (its engine's rounding is the version's)
        earlier = previous.get("nxbar_versions", [previous["versions"]["nxbar"]]) if previous else []
        self.record = {**fixed, "versions": nxbar.versions(), "engine": cluster.describe(self.client),
                       "nxbar_versions": sorted({*earlier, nxbar.__version__}),
                       "wall_s_total": previous.get("wall_s_total", 0.0) if previous else 0.0}
        self._write_record()

    def _write_record(self, finished: bool = False) -> None:
        wall = self.record["wall_s_total"] + time.perf_counter() - self.t0
        atomic_write_text(self.record_path,
                          json.dumps({**self.record, "wall_s_total": wall, "finished": finished}, indent=2) + "\n")

    def _warn_torn(self, name):
        return lambda text: warnings.warn(f"{self.dir / name}: dropped its last row, which a stopped run left "
                                          f"unfinished, to compute that cell again: {text!r}", stacklevel=3)

    def sweep(self) -> dict:
        """Run the sweep and the search of the points rule; write points.json once; return the points record."""
        d = self.design
        with CsvLog(self.dir / "sweep.csv", SWEEP_COLUMNS, self._warn_torn("sweep.csv")) as log:
            if not any(r["xbar"] == SOFTWARE for r in log.rows):
                net = self.runner.model(d.model)[0]
                correct, n = count_correct(net, self.runner.images, self.runner.labels), len(self.runner.labels)
                log.append({"xbar": SOFTWARE, "n": n, "clean_correct": correct, "CA": fmt(metrics(n, correct)["CA"])})
            todo = sweep_grid(d)
            while True:
                done = {tuple(r[c] for c in SWEEP_COLUMNS[:4]) for r in log.rows}
                missing = [c for c in todo if sweep_key(*c) not in done]
                progress = Progress(len(missing), self.echo)
                finished = cluster.each_result(
                    self.client, missing, {}, lambda c: cluster.task_key("nxbar-sweep", self.spec, d.model, c),
                    partial(compute_sweep_cell, self.runner, d.model),
                    partial(on_worker, compute_sweep_cell, self.spec, d.model))
                for i, ((size, sigma, scale, chip), result, _) in enumerate(finished):
                    row = log.append(result)
                    progress.step(1, i + 1, len(missing), f"sweep {size}x{size} sigma {sigma:g} s {scale:g} chip "
                                                          f"{chip}: CA {row['CA']}, NF {float(row['nf']):.4f}")
                    self._write_record()
                more, record = choose_points(log.rows, d)
                if record is not None:
                    break
                todo = [(size, d.point_sigma, scale, chip) for size, scale in more for chip in d.chips]
        path = self.dir / "points.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored != json.loads(json.dumps(record)):
                raise ValueError(f"{path} does not hold the points that the rule gives on sweep.csv; the points are "
                                 "chosen once, before any attack: remove the study folder to start again")
        else:
            atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        return record

    def attacks(self, points: dict) -> list[dict]:
        """Run the attack cells at `points` that attacks.csv lacks; return all its rows."""
        return run_cells(self.spec, self.runner, attack_cells(self.design, points), self.dir / "attacks.csv",
                         self.echo, client=self.client, on_cell=self._write_record,
                         on_torn=self._warn_torn("attacks.csv"))

    def run(self, stop_after: str = "attacks") -> dict:
        """The study up to `stop_after` ("sweep" or "attacks"); returns the points record."""
        record = self.sweep()
        if stop_after == "attacks":
            self.attacks(record["points"])
        self._write_record(finished=stop_after == "attacks")
        return record


def design_for(quick: bool) -> Design:
    """The full design, or the quick one."""
    return QUICK if quick else FULL

