"""Computing the study's cells (docs/protocol.md section 9): a resumable runner that never draws.

Every finished cell is appended at once to `<out>/<NAME>.csv` (one row per cell), so a run that stops resumes
by skipping the cells already there; `<out>/<NAME>.json` records the configuration, weight hashes, versions
and wall time. SW adversarial inputs are made once per attack setting and reused for every SH cell (PGD's are
kept in the disk cache, for other experiments' SH cells too), FGSM's gradient signs once per network and reused
for every eps; a cell that another experiment already stored (same key, images, base physics and weight file)
is copied from it. Given a Dask client (`nxbar.cluster`), the cells are tasks that worker processes compute on
a Runner they build from its `RunnerSpec`, and the driver writes each row as its task finishes.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import nxbar
from nxbar import cache as disk_cache
from nxbar import cluster
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_model, random_tile_nf
from nxbar.defences import InputDiscretization
from nxbar.evaluation import adversarial_memoised, count_correct, metrics
from nxbar.files import atomic_write_text, drop_torn_row
from nxbar.study.grid import COLUMNS, DATASET, EXPERIMENTS, KEY_COLUMNS, QUICK_N, experiment_cells, fmt
from nxbar.study.results import read_rows, row_key, stored_elsewhere, timed_cells
from nxbar.weights import WeightFileError, file_sha256, layer_bits, load_model, resolve_weights, weight_paths

def find_weights(model: str, weights: dict | None = None) -> Path:
    """Weight file stem of `model`: weights[model] if given, else the shipped one; a clear error if missing."""
    path = Path((weights or {}).get(model) or resolve_weights(model, DATASET))
    npz, js = weight_paths(path)
    arch = model.removesuffix("q")
    how = f"--model {arch}" + (f" --quanos-from weights/{arch}_{DATASET}" if model != arch else "")
    for p in (js, npz):
        if not p.is_file():
            raise WeightFileError(f"{p}: weight file not found; the {model} weights must be trained first "
                                  f"(tools/train_export.py {how}) or given explicitly")
    return path


class Runner:
    """Models, data and memoised intermediate results of one run (SW adversarial inputs, clean counts, FGSM
    gradient signs)."""

    def __init__(self, images, labels, weights, base_physics, cache_dir):
        self.images, self.labels, self.weights = images, labels, weights
        self.base_physics, self.cache_dir = base_physics, cache_dir
        self.models, self.clean, self.signs, self.adv_sw, self.mapped = {}, {}, {}, (None, None), (None, None)
        self.clean_margins = {}  # the clean margins of the last network evaluated (`nxbar.reproducibility.outcomes`)

    def model(self, name):
        """(VGG, weight-file meta) of model `name`."""
        if name not in self.models:
            self.models[name] = load_model(self.weights[name])
        return self.models[name]

    def config(self, cell) -> CrossbarConfig:
        """The cell's crossbars; a hybrid-precision model's layer_bits (weight file) unless the cell sets bits."""
        return cell.config(self.base_physics).with_weight_precision(layer_bits(self.model(cell.model)[1]))

    def hardware(self, cell):
        config = self.config(cell)
        if self.mapped[0] != (cell.model, config):
            net = self.model(cell.model)[0]
            self.mapped = ((cell.model, config), map_model(net, config, cache_dir=self.cache_dir))
        return self.mapped[1]

    @staticmethod
    def defended(net, cell):
        return net if cell.input_bits is None else InputDiscretization(net, cell.input_bits)

    def net_key(self, cell) -> tuple:
        """Which network a cell evaluates: (model, its crossbars or None for software, input bits)."""
        return (cell.model, cell.size and self.config(cell), cell.input_bits)

    def clean_correct(self, cell, net):
        key = self.net_key(cell)
        if key not in self.clean:
            self.clean[key] = count_correct(net, self.images, self.labels)
        return self.clean[key]

    def adversarial(self, net, net_key, attack):
        """Adversarial inputs made on `net`. FGSM's gradient signs at the clean images are memoised per network
        (one array of the images' size each): every eps of a sweep steps along the same signs."""
        return adversarial_memoised(self.signs, net_key, net, self.images, self.labels, attack)

    def sw_adversarial(self, cell):
        """The software model's adversarial inputs for the cell's attack (PGD's through `stored_pgd`)."""
        key = (cell.model, cell.attack, cell.input_bits)
        if self.adv_sw[0] != key:
            net = self.defended(self.model(cell.model)[0], cell)

            def make():
                return self.adversarial(net, (cell.model, None, cell.input_bits), cell.attack)

            self.adv_sw = (key, self.stored_pgd(cell, make) if cell.attack.attack == "pgd" else make())
        return self.adv_sw[1]

    def stored_pgd(self, cell, make):
        """make()'s software PGD inputs, kept in the disk cache (kind "adversarial"), keyed by the weight files'
        hashes, input bits, attack, images and labels: the SH cells of other experiments reuse them (fig8a and
        fig8b need table2's), also in a later session. An entry without x_adv of the images' shape in the model's
        dtype is made again."""
        fields = {"software adversarial inputs": asdict(cell.attack), "input_bits": cell.input_bits,
                  "weights_sha256": [file_sha256(p) for p in weight_paths(self.weights[cell.model])]}
        entry = disk_cache.content_key(fields, {"images": self.images, "labels": self.labels})
        net = self.model(cell.model)[0]
        hit = disk_cache.load(entry, self.cache_dir, kind="adversarial",
                              expect={"x_adv": (self.images.shape, net.dtype)})
        if hit is not None:
            return hit[0]["x_adv"]
        adv = make()
        disk_cache.save(entry, {"x_adv": adv}, fields, self.cache_dir, kind="adversarial")
        return adv

    def network(self, cell):
        """The network the cell evaluates: the software model or its crossbars, with the cell's input defence."""
        return self.defended(self.model(cell.model)[0] if cell.size is None else self.hardware(cell), cell)

    def adversarial_inputs(self, cell, net):
        """The attacked images the cell evaluates on `net` (= `network(cell)`): the software model's for SW and
        SH, the evaluated network's own for HH."""
        if cell.mode in ("SW", "SH"):
            return self.sw_adversarial(cell)
        return self.adversarial(net, self.net_key(cell), cell.attack)

    def compute(self, cell) -> dict:
        """Result columns of `cell` (n, counts, CA, AA, AL in percent; nf)."""
        n = len(self.labels)
        if cell.mode == "nf":
            config = cell.config(self.base_physics)
            if cell.layer == "tiles":
                return {"n": "", "nf": random_tile_nf(config, n_tiles=64, seed=config.seed)}
            report = self.hardware(cell).report
            return {"n": "", "nf": next(r["nf"] for r in report if r["name"] == cell.layer)}
        net = self.network(cell)
        ca = self.clean_correct(cell, net)
        out = {"n": n, "clean_correct": ca, **metrics(n, ca)}
        if cell.size is not None and (bits := self.config(cell).layer_bits) is not None:
            out["layer_bits"] = "/".join(str(b) for b in bits)
        if cell.mode == "clean":
            return out
        aa = count_correct(net, self.adversarial_inputs(cell, net), self.labels)
        return {**out, "adv_correct": aa, **metrics(n, ca, aa)}


@dataclass(frozen=True)
class RunnerSpec:
    """A Runner as plain values, which a task carries to a worker process: the weight files ((model, path, sha256
    of its .npz and its .json), ...), the first `n` embedded images, base physics ((field, value), ...), the
    cache folder (None: the default of the process that builds the Runner, `nxbar.cache.cache_dir`) and the
    OpenBLAS kernel of the process that made the spec (float32 results are the same bit for bit only on the same
    kernel, `nxbar.reproducibility`)."""

    weights: tuple
    n: int
    base_physics: tuple = ()
    cache_dir: str | None = None
    blas_kernel: str | None = None

    @classmethod
    def of(cls, paths: dict, n: int, base_physics: dict | None = None, cache_dir=None) -> RunnerSpec:
        """The spec of the weight files {model: path} (hashed here), n images, base physics and cache folder."""
        weights, kernel = cluster.pinned(paths)
        return cls(weights, n, tuple(sorted((base_physics or {}).items())), cache_dir and str(cache_dir), kernel)

    def build(self) -> Runner:
        """The Runner on the first n embedded images, in a process that computes what the spec's maker would
        (`nxbar.cluster.check_pinned`)."""
        from nxbar.data.load import load_dataset

        cluster.check_pinned(self.weights, self.blas_kernel)
        ds = load_dataset("embedded")
        paths = {m: Path(p) for m, p, _ in self.weights}
        return Runner(ds.images[:self.n], ds.labels[:self.n], paths, dict(self.base_physics) or None, self.cache_dir)


def on_worker(fn, spec: RunnerSpec, *args):
    """fn(Runner of `spec`, *args) in this process: a cell as a Dask task. The process builds the Runner once
    and keeps it, with its memos, for its next task of the same spec."""
    return fn(cluster.kept(spec, spec.build), *args)


def run(name: str, out: str | Path, *, quick: bool = False, n: int | None = None, weights: dict | None = None,
        base_physics: dict | None = None, cache_dir=None, progress=None, draw=None, client=None) -> Path:
    """Compute the cells of experiment `name` not yet in `<out>/<NAME>.csv`; return the CSV path.

    quick: the smoke grid, stored as `<NAME>_quick.csv` (n defaults to QUICK_N instead of the 1,000 embedded
    images). weights: {model: weight file} instead of the shipped files. base_physics: CrossbarConfig fields
    under every cell's own overrides (tests use the ideal crossbar). progress(i, total, cell) after each cell.
    draw(name, rows, png_path) -> path, when given, draws the finished experiment's figure
    (`nxbar.study.figures.draw`); the json records its path, or why it was not drawn.
    Cells stored by another experiment in `out` are copied (`nxbar.study.results.stored_elsewhere`); resuming
    a CSV made on other images or with other weights than its json records is refused. A last CSV row that a
    stopped run left unfinished is dropped, with a warning, and its cell computed again.
    client: a dask.distributed Client (`nxbar.cluster.connect`): the cells are its workers' tasks, the rows
    written as they finish (copied cells first); the same rows as without it, in another order.
    """
    from nxbar.data.load import load_dataset

    t0 = time.perf_counter()
    cells = experiment_cells(name, quick)
    stem = Path(out) / (f"{name}_quick" if quick else name)
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    ds = load_dataset("embedded")
    n = n if n is not None else (QUICK_N if quick else len(ds.labels))
    if not 1 <= n <= len(ds.labels):
        raise ValueError(f"n {n} is out of range; allowed: 1..{len(ds.labels)} (the embedded images)")
    if csv_path.is_file() and (torn := drop_torn_row(csv_path)) is not None:
        warnings.warn(f"{csv_path}: dropped its last row, which a stopped run left unfinished, to compute that "
                      f"cell again: {torn!r}", stacklevel=2)
    stored = read_rows(csv_path)
    other_n = {r["n"] for r in stored if r["n"]} - {str(n)}
    if other_n:
        raise ValueError(f"{csv_path} holds cells on {', '.join(sorted(other_n))} images, not {n}; "
                         f"use another out folder or remove the file")
    done = {row_key(r) for r in stored}
    todo = [c for c in cells if c.key(base_physics) not in done]
    models = sorted({c.model for c in cells if not (c.mode == "nf" and c.layer == "tiles")})
    paths = {m: find_weights(m, weights) for m in models}
    hashes = {m: file_sha256(weight_paths(p)[0]) for m, p in paths.items()}
    try:
        previous = json.loads(json_path.read_text()) if json_path.is_file() and stored else {}
    except ValueError as err:
        raise ValueError(f"{json_path} cannot be read ({err}); delete it to start a fresh record (the cells in "
                         f"{csv_path} are kept)") from None
    changed = [m for m, w in previous.get("weights", {}).items() if m in hashes and w["npz_sha256"] != hashes[m]]
    if changed:
        raise ValueError(f"{csv_path} holds cells made with other {', '.join(changed)} weights than "
                         f"{', '.join(str(weight_paths(paths[m])[0]) for m in changed)}; use another out folder or "
                         "remove the file")
    elsewhere = stored_elsewhere(Path(out), name, quick, n, base_physics, hashes)
    copied: dict[str, int] = {}

    fixed = {  # the record's fields that stay the same for the whole run, in the json's order
        "experiment": name, "description": EXPERIMENTS[name], "quick": quick, "finished": False,
        "data": {"source": ds.source, "n_images": n}, "dataset": DATASET,
        "base_physics": base_physics or {}, "crossbar_defaults": CrossbarConfig().as_dict(),
        "cells": len(cells), "computed_this_run": 0, "copied_this_run": copied, "engine": cluster.describe(client),
        "weights": {m: {"path": str(weight_paths(p)[0]), "npz_sha256": hashes[m]} for m, p in paths.items()},
        "versions": nxbar.versions(),
    }
    timed_before = min(timed_cells(previous), len(stored))

    def write_record(done_this_run: int, finished: bool) -> None:
        """`<NAME>.json`; written when the run starts (so its weights guard a resumed CSV), after every cell (so
        a run stopped midway keeps its wall time, `wall_s_total` over all runs) and when done."""
        wall_s = time.perf_counter() - t0
        record = {
            **fixed, "finished": finished, "computed_this_run": done_this_run - sum(copied.values()),
            "wall_s_this_run": wall_s, "wall_s_total": previous.get("wall_s_total", 0.0) + wall_s,
            "timed_cells": timed_before + done_this_run,
        }
        if finished and draw is not None:
            try:  # the figure is secondary to the CSV: matplotlib is an optional extra
                record["figure"] = str(draw(name, read_rows(csv_path), stem.with_suffix(".png")))
            except ImportError as err:
                record["figure"] = f"not drawn: {err}"
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")

    spec = RunnerSpec.of(paths, n, base_physics, cache_dir)
    runner = spec.build()

    def cell_key(cell) -> str:
        """The cell's task name: the experiment, the runner's spec and the cell's key."""
        return cluster.task_key(f"nxbar-{name}", spec, cell.key(base_physics))

    # cells stored by another experiment are copied; on a cluster, the SH cells go last: the SW cell leaves the
    # PGD inputs they evaluate in the disk cache
    held = {c: elsewhere[c.key(base_physics)] for c in todo if c.key(base_physics) in elsewhere}
    finished = cluster.each_result(client, todo, held, cell_key, runner.compute,
                                   partial(on_worker, Runner.compute, spec), last=lambda c: c.mode == "SH")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_record(0, finished=False)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if f.tell() == 0:  # a new or emptied file; one that a run stopped before its first row has its header
            writer.writeheader()
        for i, (cell, result, computed) in enumerate(finished):
            if computed:
                row = {**dict(zip(KEY_COLUMNS, cell.key(base_physics))), **{k: fmt(v) for k, v in result.items()}}
            else:
                other, stored_row = result
                row = {c: stored_row.get(c, "") for c in COLUMNS}
                copied[other] = copied.get(other, 0) + 1
            writer.writerow(row)
            f.flush()
            write_record(i + 1, finished=False)
            if progress is not None:
                progress(i + 1, len(todo), cell)
    write_record(len(todo), finished=True)
    return csv_path


def recompute(name: str, row: dict, *, weights: dict | None = None, cache_dir=None) -> dict:
    """Compute once more the cell of experiment `name` that the stored CSV `row` describes (same key
    columns; a full run, default physics), on the same first n embedded images. Returns the result columns
    as the CSV stores them, so a stored table can be checked cell by cell (the engine is deterministic)."""
    cell, runner = cell_runner(name, row, weights=weights, cache_dir=cache_dir)
    return {k: fmt(v) for k, v in runner.compute(cell).items()}


def cell_runner(name: str, row: dict, *, weights: dict | None = None, cache_dir=None, n: int | None = None,
                models: tuple[str, ...] = ()):
    """(Cell, Runner) of the cell of experiment `name` that the stored CSV `row` describes, on the first n
    embedded images (default: the row's n). The runner also computes cells next to it (`dataclasses.replace`
    of the cell with another chip, attack or physics, or with one of the other `models`), on the same images."""
    from nxbar.data.load import load_dataset

    key = row_key(row)
    cell = next((c for c in experiment_cells(name) if c.key() == key), None)
    if cell is None:
        raise ValueError(f"no cell of experiment {name!r} has the key {dict(zip(KEY_COLUMNS, key))}")
    ds = load_dataset("embedded")
    n = n or (int(row["n"]) if row.get("n") else len(ds.labels))
    models = {} if cell.mode == "nf" and cell.layer == "tiles" else {cell.model, *models}
    return cell, RunnerSpec.of({m: find_weights(m, weights) for m in models}, n, None, cache_dir).build()
