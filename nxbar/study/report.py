"""The study's experiments (docs/protocol.md sections 9 and 10): a registry of cell grids, a resumable runner,
a report.

A cell is one number of the paper: (model, crossbar size or None for software, mode, physics overrides,
attack, chip seed, input discretization bits, and for the NF experiment a layer). Models "vgg8q"/"vgg16q" are
the QUANOS hybrid-precision networks: their weight file's layer_bits set each layer's precision on crossbars.
Modes: SW/SH/HH (docs/protocol.md section 5.4), "clean" (clean accuracy only, Fig. 4) and "nf" (non-ideality
factor, docs/protocol.md section 3: layer "tiles" = random tiles, else one mapped layer).
Every finished cell is appended at once to `<out>/<NAME>.csv` (one row per cell), so a run that stops resumes
by skipping the cells already there; `<out>/<NAME>.json` records the configuration, weight hashes, versions
and wall time. SW adversarial inputs are made once per attack setting and reused for every SH cell (PGD's are
kept in the disk cache, for other experiments' SH cells too), FGSM's gradient signs once per network and reused
for every eps; a cell that another experiment already stored (same key, images, base physics and weight file)
is copied from it.
Hardware cells at FGSM 0.1 and PGD 8/255 run on three chip seeds (the paper reports one chip).
`report()` writes `<out>/README.md`: our tables beside the paper's, a verdict for each claim C1..C11 (for the
claims that compare AL, also made on AA alone, since a lower clean accuracy lowers AL too), and from
the stored `nxbar threats` matrices (`<out>/threats/*.json`) which attacker the chips' robustness survives,
with the gradient-masking sanity checks.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

import nxbar
from nxbar import cache as disk_cache
from nxbar.attacks import eps_label
from nxbar.crossbar.config import PARASITIC_FIELDS, CrossbarConfig
from nxbar.crossbar.mapped import map_model, random_tile_nf
from nxbar.defences import InputDiscretization
from nxbar.evaluation import CHIP_SEEDS, MODES, AttackConfig, adversarial_memoised, count_correct, metrics
from nxbar.files import atomic_write_text, drop_torn_row
from nxbar.models.arch import mvm_names
from nxbar.sanity import describe
from nxbar.threats import KNOWS, robustness
from nxbar.weights import WeightFileError, file_sha256, layer_bits, load_model, resolve_weights, weight_paths

REPO = Path(__file__).resolve().parents[2]
PAPER_SOURCE = REPO.parent / "shared" / "paper"
DEFAULT_OUT = REPO / "reference_results"
DATASET = "cifar10"  # CIFAR-10 is the stated substitute for CIFAR-100 (VGG16, Figs. 5, 6)
SIZES = (16, 32, 64)
QUICK_N = 16
FGSM_EPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
PGD_EPS = tuple(k / 255 for k in (2, 4, 8, 16, 32))
SEEDED = (("fgsm", 0.1), ("pgd", 8 / 255))  # hardware cells here run on CHIP_SEEDS
R_ON_OHM = 20e3
ON_OFF_RATIOS = (10, 100, 1000, 2000)
PHYSICS_FIELDS = ("r_on_ohm", "r_off_ohm", *PARASITIC_FIELDS, "sigma", "bits")
KEY_COLUMNS = ("model", "dataset", "xbar", "mode", "layer", "input_bits", *PHYSICS_FIELDS, "chip_seed",
               "attack", "eps", "eps_space", "steps", "alpha", "random_start", "attack_seed")
# layer_bits: the per-layer precision a hybrid-precision model's weight file gave its crossbars ('/'-joined)
COLUMNS = (*KEY_COLUMNS, "layer_bits", "n", "clean_correct", "adv_correct", "CA", "AA", "AL", "nf")
INPUT_BITS = (8, 4, 2)  # Fig. 9 input discretization widths; Fig. 10 uses 4


@dataclass(frozen=True)
class Cell:
    """One number to compute. physics: sorted (CrossbarConfig field, value) overrides of the defaults.
    input_bits: b-bit input discretization (`nxbar.defences.InputDiscretization`, straight-through gradient)
    in front of the model."""

    model: str
    size: int | None
    mode: str
    attack: AttackConfig | None = None
    physics: tuple = ()
    seed: int = 0
    layer: str = ""
    input_bits: int | None = None

    def config(self, base_physics: dict | None = None) -> CrossbarConfig:
        return CrossbarConfig(size=self.size, seed=self.seed, **{**(base_physics or {}), **dict(self.physics)})

    def key(self, base_physics: dict | None = None) -> tuple[str, ...]:
        """The cell's parameter columns, formatted as stored in the CSV."""
        row = {"model": self.model, "dataset": DATASET, "xbar": self.size or "software", "mode": self.mode,
               "layer": self.layer, "input_bits": self.input_bits}
        if self.size is not None:
            cfg = self.config(base_physics).as_dict()
            row.update({f: cfg[f] for f in PHYSICS_FIELDS}, chip_seed=self.seed)
        if self.attack is not None:
            a = self.attack.as_dict()
            row.update(a, attack_seed=a.pop("seed", None))
        return tuple(_fmt(row.get(c)) for c in KEY_COLUMNS)


def _fmt(value) -> str:
    """CSV text of a value: '' for None, repr for floats (exact round trip), str otherwise."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _seeds(attack: str, eps: float, seeded: bool) -> tuple[int, ...]:
    return CHIP_SEEDS if seeded and any(attack == s and np.isclose(eps, e) for s, e in SEEDED) else (0,)


def _attack_cells(model, attack, eps_list, *, eps_spaces=("pixel",), sizes=SIZES, physics_list=((),),
                  seeded=True, input_bits=None) -> list[Cell]:
    """SW, then SH and HH per size, physics variant and chip seed, for each eps (attack-major order)."""
    cells = []
    for space in eps_spaces:
        for eps in eps_list:
            a = AttackConfig(attack=attack, eps=eps, eps_space=space)
            cells.append(Cell(model, None, MODES[0], a, input_bits=input_bits))
            cells += [Cell(model, size, mode, a, physics, seed, input_bits=input_bits)
                      for size in sizes for physics in physics_list for seed in _seeds(attack, eps, seeded)
                      for mode in MODES[1:]]
    return cells


def _defence_cells(attack, eps_list, seeded) -> list[Cell]:
    """Fig. 10, VGG16 per eps: SW (no defence), SH on 32x32, 4-bit input discretization and QUANOS in software."""
    cells = []
    for eps in eps_list:
        a = AttackConfig(attack=attack, eps=eps)
        cells += [Cell("vgg16", None, "SW", a), *[Cell("vgg16", 32, "SH", a, seed=s) for s in _seeds(attack, eps, seeded)],
                  Cell("vgg16", None, "SW", a, input_bits=4), Cell("vgg16q", None, "SW", a)]
    return cells


def _physics(r_on_ohm: float, ratio: float) -> tuple:
    return (("r_off_ohm", r_on_ohm * ratio), ("r_on_ohm", r_on_ohm))


def _nf_cells(sizes) -> list[Cell]:
    return [Cell("vgg8", s, "nf", layer=layer) for s in sizes for layer in ("tiles", *mvm_names("vgg8"))]


def experiment_cells(name: str, quick: bool = False) -> list[Cell]:
    """The grid of experiment `name` (see EXPERIMENTS); `quick` = a small smoke version of it."""
    q = quick
    fgsm_eps, pgd_eps = ((0.1,), (8 / 255,)) if q else (FGSM_EPS, PGD_EPS)
    spaces = ("pixel",) if q else ("pixel", "normalized")
    sizes = (64,) if q else SIZES
    ratios = (10, 2000) if q else ON_OFF_RATIOS
    grids = {
        "table1": lambda: _attack_cells("vgg8", "fgsm", fgsm_eps, eps_spaces=spaces, sizes=sizes, seeded=not q),
        "table2": lambda: _attack_cells("vgg8", "pgd", pgd_eps, sizes=sizes, seeded=not q),
        "fig4": lambda: [Cell(m, s, "clean") for m in ("vgg8", "vgg16") for s in (None, *sizes)],
        "fig8a": lambda: _attack_cells("vgg8", "pgd", pgd_eps, sizes=(32,), seeded=not q,
                                       physics_list=[_physics(r, 10) for r in (20e3, 10e3)]),
        "fig8b": lambda: _attack_cells("vgg8", "pgd", pgd_eps, sizes=(32,), seeded=not q,
                                       physics_list=[_physics(R_ON_OHM, r) for r in ratios]),
        "fig5": lambda: _attack_cells("vgg16", "fgsm", fgsm_eps, eps_spaces=spaces, sizes=sizes, seeded=not q),
        "fig6": lambda: _attack_cells("vgg16", "pgd", pgd_eps, sizes=sizes, seeded=not q),
        "nf": lambda: _nf_cells(sizes),
        "table3": lambda: [c for m in ("vgg8", "vgg8q")
                           for c in _attack_cells(m, "fgsm", fgsm_eps, sizes=(16,), seeded=not q)],
        "fig9": lambda: [c for b in (None, *((4,) if q else INPUT_BITS))
                         for c in _attack_cells("vgg8", "fgsm", fgsm_eps, sizes=(32,), seeded=not q, input_bits=b)],
        "fig10": lambda: _defence_cells("fgsm", fgsm_eps, not q) + _defence_cells("pgd", pgd_eps, not q),
    }
    if name not in grids:
        raise ValueError(f"experiment {name!r} unknown; allowed: {', '.join(grids)}")
    return grids[name]()


EXPERIMENTS = {
    "table1": "FGSM, VGG8 CIFAR-10, eps 0.05..0.3 in pixel and normalized units; SW, SH/HH on 16/32/64 (Table I)",
    "table2": "PGD, VGG8 CIFAR-10, eps 2..32/255; SW, SH/HH on 16/32/64 (Table II)",
    "fig4": "clean accuracy in software and on 16/32/64 crossbars, VGG8 and VGG16 (Fig. 4)",
    "fig8a": "PGD AL vs eps on 32x32, R_on 20 kOhm and 10 kOhm, ON/OFF 10 (Fig. 8a)",
    "fig8b": "PGD AL vs eps on 32x32, R_on 20 kOhm, ON/OFF 10, 100, 1000, 2000 (Fig. 8b)",
    "fig5": "FGSM, VGG16 on CIFAR-10 (substitute for CIFAR-100), as table1 (Fig. 5)",
    "fig6": "PGD, VGG16 on CIFAR-10 (substitute for CIFAR-100), as table2 (Fig. 6)",
    "nf": "NF of random tiles and of every VGG8 layer on 16/32/64 crossbars, default physics "
          "(docs/protocol.md section 3)",
    "table3": "FGSM, VGG8 full precision vs QUANOS hybrid precision (vgg8q); SW, SH/HH on 16x16 (Table III)",
    "fig9": "FGSM, VGG8 on 32x32 with no, 8-, 4- and 2-bit input discretization; SW, SH, HH (Fig. 9)",
    "fig10": "VGG16 (CIFAR-10 substitute), FGSM and PGD: SW, SH on 32x32, 4-bit input discretization and "
             "QUANOS (vgg16q) in software (Fig. 10)",
}


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


def row_key(row: dict) -> tuple[str, ...]:
    """The key columns of a stored CSV row (strings; '' where absent): the cell it holds, as `Cell.key` gives it."""
    return tuple(row.get(c, "") for c in KEY_COLUMNS)


def read_rows(path: Path) -> list[dict]:
    """Rows of a stored CSV (strings), [] when it does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _Runner:
    """Models, data and memoised intermediate results of one run (SW adversarial inputs, clean counts, FGSM
    gradient signs)."""

    def __init__(self, images, labels, weights, base_physics, cache_dir):
        self.images, self.labels, self.weights = images, labels, weights
        self.base_physics, self.cache_dir = base_physics, cache_dir
        self.models, self.clean, self.signs, self.adv_sw, self.mapped = {}, {}, {}, (None, None), (None, None)

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


def _stored_elsewhere(out: Path, name: str, quick: bool, n: int, base_physics, hashes: dict) -> dict[tuple, tuple]:
    """{cell key: (experiment, stored row)} from the other experiments' CSVs in `out` (same quick flag) whose
    json shows the same n images, base physics and weight file (sha256) for the row's model. A cell is the same
    computation in every experiment it belongs to (fig8a's R_on 20 kOhm ON/OFF 10 rows are table2's 32x32
    rows) and the engine is deterministic, so such a row is copied instead of computed again."""
    found = {}
    for other in EXPERIMENTS:
        stem = out / (f"{other}_quick" if quick else other)
        record = stem.with_suffix(".json")
        if other == name or not record.is_file():
            continue
        record = json.loads(record.read_text())
        if record["data"]["n_images"] != n or record["base_physics"] != (base_physics or {}):
            continue
        same = {m for m, w in record["weights"].items() if hashes.get(m) == w["npz_sha256"]}
        for r in read_rows(stem.with_suffix(".csv")):
            if r["model"] in same:
                found.setdefault(row_key(r), (other, r))
    return found


def timed_cells(record: dict) -> int:
    """How many of the cells in a `<NAME>.json`'s CSV were made (computed or copied) within its `wall_s_total`.
    Records written before nxbar kept time per cell counted a run's time only when it finished, so for them it
    is the last run's cells, and a run stopped midway left no time at all."""
    if not record:
        return 0
    return record.get("timed_cells", record["computed_this_run"] + sum(record["copied_this_run"].values()))


def run(name: str, *, quick: bool = False, n: int | None = None, out: str | Path = DEFAULT_OUT,
        weights: dict | None = None, base_physics: dict | None = None, cache_dir=None, progress=None) -> Path:
    """Compute the cells of experiment `name` not yet in `<out>/<NAME>.csv`; return the CSV path.

    quick: the smoke grid, stored as `<NAME>_quick.csv` (n defaults to QUICK_N instead of the 1,000 embedded
    images). weights: {model: weight file} instead of the shipped files. base_physics: CrossbarConfig fields
    under every cell's own overrides (tests use the ideal crossbar). progress(i, total, cell) after each cell.
    Cells stored by another experiment in `out` are copied (`_stored_elsewhere`); resuming a CSV made on other
    images or with other weights than its json records is refused. A last CSV row that a stopped run left
    unfinished is dropped, with a warning, and its cell computed again.
    """
    from nxbar.data import load_dataset

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
    elsewhere = _stored_elsewhere(Path(out), name, quick, n, base_physics, hashes)
    copied: dict[str, int] = {}

    fixed = {  # the record's fields that stay the same for the whole run, in the json's order
        "experiment": name, "description": EXPERIMENTS[name], "quick": quick, "finished": False,
        "data": {"source": ds.source, "n_images": n}, "dataset": DATASET,
        "base_physics": base_physics or {}, "crossbar_defaults": CrossbarConfig().as_dict(),
        "cells": len(cells), "computed_this_run": 0, "copied_this_run": copied,
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
        if finished:
            try:  # the figure is secondary to the CSV: matplotlib is an optional extra
                from nxbar.study.figures import draw

                record["figure"] = str(draw(name, read_rows(csv_path), stem.with_suffix(".png")))
            except ImportError as err:
                record["figure"] = f"not drawn: {err}"
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")

    runner = _Runner(ds.images[:n], ds.labels[:n], paths, base_physics, cache_dir)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_record(0, finished=False)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if f.tell() == 0:  # a new or emptied file; one that a run stopped before its first row has its header
            writer.writeheader()
        for i, cell in enumerate(todo):
            key = cell.key(base_physics)
            if key in elsewhere:
                other, row = elsewhere[key]
                row = {c: row.get(c, "") for c in COLUMNS}
                copied[other] = copied.get(other, 0) + 1
            else:
                row = dict(zip(KEY_COLUMNS, key))
                row.update({k: _fmt(v) for k, v in runner.compute(cell).items()})
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
    return {k: _fmt(v) for k, v in runner.compute(cell).items()}


def cell_runner(name: str, row: dict, *, weights: dict | None = None, cache_dir=None, n: int | None = None,
                models: tuple[str, ...] = ()):
    """(Cell, _Runner) of the cell of experiment `name` that the stored CSV `row` describes, on the first n
    embedded images (default: the row's n). The runner also computes cells next to it (`dataclasses.replace`
    of the cell with another chip, attack or physics, or with one of the other `models`), on the same images."""
    from nxbar.data import load_dataset

    key = row_key(row)
    cell = next((c for c in experiment_cells(name) if c.key() == key), None)
    if cell is None:
        raise ValueError(f"no cell of experiment {name!r} has the key {dict(zip(KEY_COLUMNS, key))}")
    ds = load_dataset("embedded")
    n = n or (int(row["n"]) if row.get("n") else len(ds.labels))
    models = {} if cell.mode == "nf" and cell.layer == "tiles" else {cell.model, *models}
    paths = {m: find_weights(m, weights) for m in models}
    return cell, _Runner(ds.images[:n], ds.labels[:n], paths, None, cache_dir)


def copy_paper_tables(source: str | Path = PAPER_SOURCE, out: str | Path = DEFAULT_OUT) -> list[Path]:
    """Copy the paper's own tables (<repo>/../shared/paper/*.csv) into `<out>/paper/`; return the copies."""
    dest = Path(out) / "paper"
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in sorted(Path(source).glob("*.csv"))]


# ---------------------------------------------------------------------------------------------- report
PAPER_TABLES = {"table1": "table1_fgsm_vgg8_cifar10_AL.csv", "table2": "table2_pgd_vgg8_cifar10_AL.csv",
                "table3": "table3_fgsm_quanos_vgg8_cifar10_AL.csv"}
PAPER_MODELS = {"F": "vgg8", "Q": "vgg8q"}  # Table III's "(F)" full-precision and "(Q)" QUANOS rows
C6_TOLERANCE_PP = 1.0  # C6: "no added robustness" = AL at a larger ON/OFF ratio not below AL at 10 by more than this
C9_SATURATION_PP = 5.0  # C9: PGD AL "saturates" = a crossbar row's AL rises by at most this from 8/255 to 32/255
C7_FLAT_PP = 5.0  # C7: AL "stays flat" = a discretized crossbar row's AL varies by at most this over eps 0.1..0.3
SATURATED_AA_PCT = 1.0  # a comparison is saturated when both cells keep at most this AA: then AL = CA - AA ~ CA
NOT_REGISTERED = {
    "C11": "Tiny ImageNet VGG16 (Fig. 7): its training set cannot be obtained here (docs/protocol.md section 8)",
}


def _setting(r: dict) -> str:
    return "software" if r["xbar"] == "software" else f"xbar{r['xbar']}"


def physics_label(r: dict) -> str:
    if r["xbar"] == "software":
        return ""
    r_on, r_off = float(r["r_on_ohm"]), float(r["r_off_ohm"])
    return f"R_on {r_on / 1e3:g}k ON/OFF {r_off / r_on:g}"


def _input_label(r: dict) -> str:
    return f"{r['input_bits']}-bit input" if r.get("input_bits") else ""


def _group(rows: list[dict], key, value: str) -> dict[tuple, list[float]]:
    """{key(row): [float(row[value]) of each row with that key, in order]}; rows without the value are left out."""
    out: dict[tuple, list[float]] = {}
    for r in rows:
        if r[value] != "":
            out.setdefault(key(r), []).append(float(r[value]))
    return out


def _means(rows: list[dict], value: str) -> dict[tuple, list[float]]:
    """{(model, eps_space, physics label, setting, mode, eps label, input label, attack): [value per chip seed]}."""
    return _group(rows, lambda r: (r["model"], r["eps_space"], physics_label(r), _setting(r), r["mode"],
                                   eps_label(r["attack"], float(r["eps"])) if r["attack"] else "",
                                   _input_label(r), r["attack"]), value)


def _stat(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({len(values)} chips)"


def load_results(out: str | Path = DEFAULT_OUT) -> dict[str, list[dict]]:
    """The stored rows of every full (not quick) experiment present in `out`."""
    return {name: rows for name in EXPERIMENTS if (rows := read_rows(Path(out) / f"{name}.csv"))}


def _paper(out: Path, name: str) -> dict[tuple, float]:
    """{(model, setting, mode, eps label): AL} of the paper's table for experiment `name` ({} if none);
    model is None where the table has one model, else from the mode's "(F)"/"(Q)" suffix."""
    path = out / "paper" / PAPER_TABLES.get(name, "-")
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    table = {}
    for r in csv.DictReader(lines):
        mode, _, suffix = r["mode"].replace("Attack-SW", "SW").partition(" (")
        model = PAPER_MODELS[suffix.rstrip(")")] if suffix else None
        for col, v in r.items():
            if col not in ("setting", "mode"):
                table[(model, r["setting"], mode, col)] = float(v)
    return table


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def _attack_table(rows: list[dict], paper: dict) -> str:
    """One markdown table per (attack, eps space): a row per series, a column per eps, chip-seed means."""
    means = _means(rows, "AL")
    out = []
    for attack, space in dict.fromkeys((k[7], k[1]) for k in means):
        keys = [k for k in means if (k[7], k[1]) == (attack, space)]
        cols = list(dict.fromkeys(k[5] for k in keys))
        body = []
        for g in dict.fromkeys((*k[:5], k[6]) for k in keys):
            cells = []
            for eps in cols:
                key = (*g[:5], eps, g[5], attack)
                ours = _stat(means[key]) if key in means else "-"
                ref = None if g[5] else paper.get((g[0], g[3], g[4], eps), paper.get((None, g[3], g[4], eps)))
                cells.append(ours if ref is None else f"{ours} / {ref:g}")
            body.append([g[0], g[2] or "-", g[5] or "-", g[3], g[4], *cells])
        note = " (ours / paper)" if paper else ""
        out.append(f"{attack.upper()}: AL in percentage points, eps in {space} units{note}:\n\n"
                   + _markdown(["model", "physics", "input", "setting", "mode", *cols], body))
    return "\n\n".join(out)


def _clean_table(rows: list[dict]) -> str:
    ca = _group(rows, lambda r: (r["model"], _setting(r)), "CA")
    cols = list(dict.fromkeys(s for _, s in ca))
    body = [[m, *[_stat(ca[(m, c)]) if (m, c) in ca else "-" for c in cols]] for m in dict.fromkeys(m for m, _ in ca)]
    return "Clean accuracy CA in percent:\n\n" + _markdown(["model", *cols], body)


def _nf_table(rows: list[dict]) -> str:
    sizes = list(dict.fromkeys(r["xbar"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    nf = {(r["layer"], r["xbar"]): float(r["nf"]) for r in rows}
    body = [[layer, *[f"{nf[(layer, s)]:.4f}" if (layer, s) in nf else "-" for s in sizes]] for layer in layers]
    return ("NF (docs/protocol.md section 3); layer 'tiles' = 64 random tiles:\n\n"
            + _markdown(["layer", *[f"xbar{s}" for s in sizes]], body))


def _mean_al(rows: list[dict]) -> dict[tuple, float]:
    return {k: float(np.mean(v)) for k, v in _means(rows, "AL").items()}


def _swap(key: tuple, index: int, value) -> tuple:
    return (*key[:index], value, *key[index + 1:])


class Check(NamedTuple):
    """One comparison of a claim: `ours` (the claim's side) against `other`, and whether the claim's relation holds."""

    label: str
    ours: float
    other: float
    holds: bool

    def __str__(self) -> str:
        return f"{self.label}: {self.ours:.2f} vs {self.other:.2f}"


def _check(label: str, ours: float, other: float, holds: bool) -> Check:
    return Check(label, float(ours), float(other), bool(holds))


def _below_software(name: str, rows: list[dict]) -> list[Check]:
    """AL(SH) and AL(HH) < AL(SW) at the same eps (C1, C9)."""
    al = _mean_al(rows)
    return [_check(f"{name} {k[0]} {k[1]} {k[3]} {k[4]} eps {k[5]}, AL vs SW", v, sw, v < sw)
            for k, v in al.items() if k[4] in ("SH", "HH")
            if (sw := al.get((k[0], k[1], "", "software", "SW", *k[5:]))) is not None]


def _c2(res):
    by_setting = _group(res.get("fig4", []), lambda r: (r["model"], _setting(r)), "CA")
    ca = {k: float(np.mean(v)) for k, v in by_setting.items()}
    checks = []
    for (model, setting), v in ca.items():
        if setting != "software" and (model, "software") in ca:
            checks.append(_check(f"fig4 {model} CA {setting} vs software", v, ca[(model, "software")],
                                 v < ca[(model, "software")]))
    for model in dict.fromkeys(m for m, _ in ca):
        for small, large in zip(SIZES, SIZES[1:]):
            a, b = ca.get((model, f"xbar{large}")), ca.get((model, f"xbar{small}"))
            if a is not None and b is not None:
                checks.append(_check(f"fig4 {model} CA xbar{large} vs xbar{small}", a, b, a < b))
    return checks


def _c3(res):
    al = _mean_al(res.get("table2", []))
    return [_check(f"table2 {k[4]} eps {k[5]} AL {k[3]} vs xbar{small}", v, other, v < other)
            for k, v in al.items() if k[4] in ("SH", "HH")
            for small, large in zip(SIZES, SIZES[1:]) if k[3] == f"xbar{large}"
            if (other := al.get(_swap(k, 3, f"xbar{small}"))) is not None]


def _c4(res):
    al = _mean_al(res.get("table2", []))
    return [_check(f"table2 {k[3]} eps {k[5]} AL HH vs SH", v, sh, v < sh)
            for k, v in al.items() if k[4] == "HH" if (sh := al.get(_swap(k, 4, "SH"))) is not None]


def _c5(res):
    al = _mean_al(res.get("fig8a", []))
    return [_check(f"fig8a {k[4]} eps {k[5]} AL R_on 10k vs 20k", v, ref, v < ref)
            for k, v in al.items() if k[2] == "R_on 10k ON/OFF 10"
            if (ref := al.get(_swap(k, 2, "R_on 20k ON/OFF 10"))) is not None]


def _c6(res):
    al = _mean_al(res.get("fig8b", []))
    return [_check(f"fig8b {k[4]} eps {k[5]} AL {k[2]} vs ON/OFF 10 (tolerance {C6_TOLERANCE_PP:g} pp)", v, ref,
                   v >= ref - C6_TOLERANCE_PP)
            for k, v in al.items() if k[3] != "software" and k[2] != "R_on 20k ON/OFF 10"
            if (ref := al.get(_swap(k, 2, "R_on 20k ON/OFF 10"))) is not None]


def _c9(res):
    al = _mean_al(res.get("fig6", []))
    saturation = [_check(f"fig6 {k[3]} {k[4]} AL rise 8/255 -> 32/255 vs {C9_SATURATION_PP:g} pp",
                         v - low, C9_SATURATION_PP, v - low <= C9_SATURATION_PP)
                  for k, v in al.items() if k[3] != "software" and k[5] == "32/255"
                  if (low := al.get(_swap(k, 5, "8/255"))) is not None]
    return _below_software("fig5", res.get("fig5", [])) + _below_software("fig6", res.get("fig6", [])) + saturation


def _c7(res):
    """Fig. 9 (32x32, FGSM): discretized crossbar rows flat over eps 0.1..0.3; 4-bit input the lowest AL of the
    crossbar rows at eps 0.25 and 0.3; 2-bit input lower CA than 4-bit and a higher mean AL."""
    rows = res.get("fig9", [])
    al = _mean_al(rows)
    checks = []
    for k in dict.fromkeys(_swap(k, 5, "") for k in al if k[3] != "software" and k[6]):
        values = [al[key] for e in ("0.1", "0.15", "0.2", "0.25", "0.3") if (key := _swap(k, 5, e)) in al]
        if len(values) > 1:
            spread = max(values) - min(values)
            checks.append(_check(f"fig9 {k[3]} {k[4]} {k[6]} AL spread eps 0.1..0.3 vs {C7_FLAT_PP:g} pp",
                                 spread, C7_FLAT_PP, spread <= C7_FLAT_PP))
    for k, v in al.items():
        if k[3] != "software" and k[6] == "4-bit input" and k[5] in ("0.25", "0.3"):
            for other in ("", "8-bit input", "2-bit input"):
                if (o := al.get(_swap(k, 6, other))) is not None:
                    checks.append(_check(f"fig9 {k[3]} {k[4]} eps {k[5]} AL 4-bit input vs {other or 'no discretization'}",
                                         v, o, v < o))
    ca = _group(rows, lambda r: (_setting(r), r["mode"], _input_label(r)), "CA")
    for (setting, mode, label), v in ca.items():
        if label == "2-bit input" and (four := ca.get((setting, mode, "4-bit input"))):
            checks.append(_check(f"fig9 {setting} {mode} CA 2-bit vs 4-bit input", np.mean(v), np.mean(four),
                                 np.mean(v) < np.mean(four)))
            al2 = [v2 for k2, v2 in al.items() if (k2[3], k2[4], k2[6]) == (setting, mode, label)]
            al4 = [v2 for k2, v2 in al.items() if (k2[3], k2[4], k2[6]) == (setting, mode, "4-bit input")]
            checks.append(_check(f"fig9 {setting} {mode} mean AL 2-bit vs 4-bit input", np.mean(al2), np.mean(al4),
                                 np.mean(al2) > np.mean(al4)))
    return checks


def _c8(res):
    al = _mean_al(res.get("table3", []))
    return [_check(f"table3 {k[3]} {k[4]} eps {k[5]} AL vgg8q vs vgg8", v, f, v < f)
            for k, v in al.items() if k[0] == "vgg8q" and k[3] != "software"
            if (f := al.get(_swap(k, 0, "vgg8"))) is not None]


def _c10(res):
    """Fig. 10 (VGG16, 32x32): FGSM: AL(SH) below 4-bit input and QUANOS (SW); PGD: QUANOS < SH < 4-bit input."""
    al = _mean_al(res.get("fig10", []))
    checks = []
    for k, sh in al.items():
        if k[0] != "vgg16" or k[4] != "SH":
            continue
        four = al.get(("vgg16", k[1], "", "software", "SW", k[5], "4-bit input", k[7]))
        quanos = al.get(("vgg16q", k[1], "", "software", "SW", k[5], "", k[7]))
        if four is not None:
            checks.append(_check(f"fig10 {k[7]} eps {k[5]} AL SH vs 4-bit input", sh, four, sh < four))
        if quanos is not None and k[7] == "fgsm":
            checks.append(_check(f"fig10 fgsm eps {k[5]} AL SH vs QUANOS", sh, quanos, sh < quanos))
        elif quanos is not None:
            checks.append(_check(f"fig10 {k[7]} eps {k[5]} AL QUANOS vs SH", quanos, sh, quanos < sh))
    return checks


CLAIMS = {
    "C1": ("AL(SH), AL(HH) < AL(SW), every eps and size, FGSM and PGD, VGG8 (Tables I, II)",
           lambda res: _below_software("table1", res.get("table1", [])) + _below_software("table2", res.get("table2", []))),
    "C2": ("clean accuracy drops after mapping, more for larger crossbars (Fig. 4)", _c2),
    "C3": ("PGD: larger crossbars give lower AL, 64x64 most robust (Table II)", _c3),
    "C4": ("PGD: AL(HH) < AL(SH) (Table II)", _c4),
    "C5": ("R_on 10 kOhm gives lower PGD AL than 20 kOhm, ON/OFF 10 (Fig. 8a)", _c5),
    "C6": ("raising R_off at R_on 20 kOhm adds no robustness (Fig. 8b)", _c6),
    "C7": ("4/2-bit input discretization with 32x32 crossbars, FGSM: AL flat for eps 0.1..0.3, 4-bit best at high "
           "eps, 2-bit lower CA and slightly less robust (Fig. 9)", _c7),
    "C8": ("QUANOS VGG8 on 16x16 has lower AL than full precision (Table III)", _c8),
    "C9": ("VGG16 (CIFAR-10 substitute): same trends; PGD AL on crossbars saturates with eps (Figs. 5, 6)", _c9),
    "C10": ("32x32 FGSM: SH beats discretization and QUANOS; PGD: QUANOS first, SH second (Fig. 10)", _c10),
    "C11": ("Tiny ImageNet VGG16, FGSM: 16x16 gains most (Fig. 7)", None),
}


# the claims that compare AL between settings; on 100 - AA, C9's saturation checks ask whether AA has stopped falling
AA_VIEW = ("C1", "C3", "C4", "C5", "C6", "C8", "C9", "C10")


def _in_aa(results: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """`results` with every AL replaced by 100 - AA: the AL each cell would have at 100% clean accuracy. Since
    AL = CA - AA, a lower AL can come from a lower clean accuracy alone, which is no robustness; the AL claims
    checked on these rows compare adversarial accuracy only."""
    return {name: [{**r, "AL": "" if r["AA"] == "" else 100.0 - float(r["AA"])} for r in rows]
            for name, rows in results.items()}


def _verdict(checks: list[Check]) -> tuple[str, str]:
    failed = [str(c) for c in checks if not c.holds]
    if not checks:
        return "not run", "no stored results for it"
    if failed:
        return "does not hold", (f"{len(checks) - len(failed)}/{len(checks)} comparisons hold; fails: "
                                 + "; ".join(failed[:3]) + (f"; ... ({len(failed) - 3} more)" if len(failed) > 3 else ""))
    return "holds", f"{len(checks)}/{len(checks)} comparisons hold, e.g. {checks[0]}"


def verdicts(results: dict[str, list[dict]]) -> dict[str, tuple[str, str]]:
    """{claim: (verdict, numbers)}; verdict 'holds', 'does not hold' or 'not run', computed from `results`."""
    return {claim: ("not run", NOT_REGISTERED[claim]) if checks_of is None else _verdict(checks_of(results))
            for claim, (_, checks_of) in CLAIMS.items()}


def verdicts_in_aa(results: dict[str, list[dict]]) -> dict[str, str]:
    """{claim of AA_VIEW: 'holds (k/n)', 'does not hold (k/n)' or 'not run'}: the claim's AL comparisons made
    on 100 - AA (`_in_aa`), that is on adversarial accuracy with the clean accuracy lost taken out."""
    aa = _in_aa(results)
    out = {}
    for claim in AA_VIEW:
        checks = CLAIMS[claim][1](aa)
        verdict = _verdict(checks)[0]
        out[claim] = verdict if not checks else f"{verdict} ({sum(c.holds for c in checks)}/{len(checks)})"
    return out


def saturated_failures(results: dict[str, list[dict]]) -> dict[str, tuple[int, int, int, int]]:
    """{claim of AA_VIEW: (saturated AL failures, AL failures, saturated AA-view failures, AA-view failures)}.
    A comparison is saturated when both of its cells have AA <= SATURATED_AA_PCT: the attack broke (nearly) every
    image on both sides, so it compares clean accuracies, and on 100 - AA it is a tie, which fails a strict '<'.
    Comparisons are matched across the two views by their label; C9's saturation checks (a rise against a
    threshold) are never saturated."""
    aa_results = _in_aa(results)
    out = {}
    for claim in AA_VIEW:
        checks_of = CLAIMS[claim][1]
        al = {c.label: c for c in checks_of(results)}
        aa = {c.label: c for c in checks_of(aa_results)}
        if al.keys() != aa.keys():
            raise RuntimeError(f"{claim}: the AL view and the AA view compare different cells: "
                               f"{sorted(al.keys() ^ aa.keys())[:3]}")
        saturated = {label for label, c in aa.items() if min(c.ours, c.other) >= 100.0 - SATURATED_AA_PCT}
        counts = [sum(label in saturated for label, c in view.items() if not c.holds) for view in (al, aa)]
        failures = [sum(not c.holds for c in view.values()) for view in (al, aa)]
        out[claim] = (counts[0], failures[0], counts[1], failures[1])
    return out


def load_threats(out: str | Path = DEFAULT_OUT) -> dict[str, dict]:
    """{file stem: stored `nxbar threats --json` report} of every `<out>/threats/*.json`, sorted by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((Path(out) / "threats").glob("*.json"))}


def _sanity_summary(threats: dict[str, dict]) -> str:
    checks = [(stem, target, c) for stem, rep in threats.items() for target, cs in rep["checks"].items() for c in cs]
    if not checks:
        return ("Gradient-masking sanity checks (Carlini et al.) of the white-box PGD behind these claims: not run "
                "yet (they are stored with the threat matrices, `nxbar threats --json reference_results/threats/...`).")
    failed = [f"{stem} {target} {c['name']}" for stem, target, c in checks if not c["passed"]]
    return (f"Gradient-masking sanity checks (Carlini et al.) of the white-box PGD behind these claims: "
            f"{len(checks) - len(failed)}/{len(checks)} pass" + (f"; failing: {'; '.join(failed)}" if failed else "")
            + " (section 'Threat models' below).")


def _threats_section(threats: dict[str, dict]) -> list[str]:
    lines = ["## Threat models: which attacker the chips' robustness survives (`nxbar threats`)", ""]
    if not threats:
        return lines + ["Not run: no `threats/*.json` yet (`nxbar threats --model vgg8 --xbar 32 --json "
                        "reference_results/threats/vgg8_xbar32.json`).", ""]
    lines += ["The study's robustness is the chips' PGD adversarial loss falling below the software model's under "
              "its own white-box attack: gap = AL(SW) - AL(attacker -> chips), percentage points, chips averaged. "
              "Since AL = CA - AA, the gap is clean accuracy the chips lost, CA(SW) - CA(chips), which is no "
              "robustness, plus adversarial accuracy they kept, AA(attacker -> chips) - AA(SW). The robustness "
              "survives an attacker when the kept AA exceeds two standard errors (Agresti-Coull) of the chips' AA.",
              ""]
    for stem, rep in threats.items():
        a, size = rep["attack"], rep["config"]["size"]
        seeds = ", ".join(str(p["seed"]) for p in next(r for r in rep["rows"] if r["victim"] == "chips")["per_seed"])
        lines += [f"### {stem}: {rep['model']} on {size}x{size} crossbars, PGD eps "
                  f"{eps_label('pgd', a['eps'])} ({a['eps_space']}), {a['steps']} steps, {rep['n_images']} images, "
                  f"victim chips {seeds}", ""]
        on_software = {r["attacker"]: r["AL"] for r in rep["rows"] if r["victim"] == "software"}
        left = robustness(rep)
        body = [[r["attacker"], KNOWS[r["attacker"]], f"{on_software[r['attacker']]:.2f}",
                 f"{r['AL']:.2f} ± {r['AL_std']:.2f}", f"{r['gap_pp']:+.2f}", f"{r['ca_lost_pp']:+.2f}",
                 f"{r['aa_kept_pp']:+.2f} (noise {r['noise_pp']:.2f})", "yes" if r["survives"] else "no"]
                for r in left]
        lines += [_markdown(["attacker", "knows", "AL software", "AL chips", "gap to SW (pp)", "of it CA lost",
                             "of it AA kept", "survives"], body), ""]
        by = {r["attacker"]: r for r in left}
        strongest = max(left, key=lambda r: r["AL"])
        study = [(mode, by[name]) for mode, name in (("SH", "software"), ("HH", "white-box")) if name in by]
        gaps = ", ".join(f"{mode} {r['gap_pp']:.2f} pp (CA lost {r['ca_lost_pp']:.2f}, AA kept {r['aa_kept_pp']:.2f})"
                         for mode, r in study)
        if any(r["survives"] for _, r in study):
            verdict = ": the robustness " + ("survives it." if strongest["survives"] else "does not survive it.")
        elif any(r["gap_pp"] > r["noise_pp"] for _, r in study):
            verdict = (". There is no robustness to lose here: under the study's own attacks (SH, HH) the chips keep "
                       "no more adversarial images than software beyond noise; their lower AL is clean accuracy lost.")
        else:
            verdict = ". There is no robustness to lose here: the study's own attacks (SH, HH) leave gaps within noise."
        lines += [f"The study's gaps: {gaps}. Strongest attacker on the chips: {strongest['attacker']} "
                  f"(AL {strongest['AL']:.2f}), gap {strongest['gap_pp']:+.2f} pp{verdict}", ""]
        body = [[target, c["name"], "pass" if c["passed"] else "FAIL", describe(c)]
                for target, checks in rep["checks"].items() for c in checks]
        lines += [f"Sanity checks (first {rep['sanity_images']} images):", "",
                  _markdown(["target", "check", "verdict", "numbers"], body), ""]
    return lines


def _repo_relative(text: str) -> str:
    """`text` with every absolute path in it written relative to the repository root, so that the report does
    not print the folders of the machine that made a record: a weight file's json records its training data as
    "/work/shared/data/x.zip" on a checkout at /work/main, and the report prints "../shared/data/x.zip"."""
    path = r"(?<![^\s(`'\"])/[^\s,;`'\"()]*[^\s,;`'\"().]"  # starts after a space, '(', '`' or a quote
    return re.sub(path, lambda m: os.path.relpath(m.group(0), REPO), text)


def _percent_of(record: dict, data: str) -> str:
    acc = record.get("accuracy", {}).get(data)
    return "-" if acc is None else f"{100 * acc['accuracy']:.2f} ({acc['correct']}/{acc['total']})"


def _networks_section(weights_dir: Path) -> list[str]:
    records = {p.stem: json.loads(p.read_text()) for p in sorted(Path(weights_dir).glob(f"*_{DATASET}.json"))}
    lines = ["## Shipped networks (`weights/`)", ""]
    if not records:
        return lines + ["None yet: `tools/train_export.py` trains and exports them (README, 'Training').", ""]
    body = [[stem, r.get("model", r["arch"]), str(r["training"]["epochs"]), f"{r['training']['final_train_loss']:.4f}",
             _percent_of(r, "embedded_lossless_test"), _percent_of(r, "jpeg_test")] for stem, r in records.items()]
    lines += ["Clean accuracy in percent, measured by nxbar's engine at export (the weight file's json):", "",
              _markdown(["weight file", "model", "epochs", "final training loss", "1,000 embedded lossless test",
                         "10,000 JPEG test"], body), ""]
    for stem, r in records.items():
        plan = r.get("quanos")
        if plan is None:
            continue
        a = plan["attack"]
        full = plan["from"]["accuracy"]["embedded_lossless_test"]["accuracy"]
        ours = r["accuracy"]["embedded_lossless_test"]["accuracy"]
        per_layer = [[k, f"{v:.4f}", str(plan["bits"][k])] for k, v in plan["ans"].items()]
        lines += [f"{stem} (QUANOS, docs/protocol.md section 6.2): ANS under {a['attack'].upper()} eps {a['eps']:g} "
                  f"on the {_repo_relative(plan['ans_images'])}, measured on "
                  f"`{_repo_relative(plan['from']['weights'])}`. {' '.join(plan['rule'].split())}", "",
                  _markdown(["layer", "ANS", "bits"], per_layer), "",
                  f"Clean accuracy on the 1,000 embedded images: {100 * ours:.2f}% against {100 * full:.2f}% in "
                  f"full precision ({100 * (ours - full):+.2f} pp).", ""]
    return lines


def _main_command_section(out: Path) -> list[str]:
    lines = ["## The main command (`nxbar evaluate --json`)", ""]
    records = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("evaluate_*.json"))}
    if not records:
        return lines + ["Not run: no `evaluate_*.json` yet (`nxbar evaluate --model vgg8 --xbar 32 --attack pgd "
                        "--json reference_results/evaluate_vgg8_xbar32_pgd.json`).", ""]
    for name, r in records.items():
        t = r["timings"]
        body = [[row["mode"], eps_label(row["attack"], row["eps"]) + f" ({row['eps_space']})",
                 *(f"{row[k]:.2f}" for k in ("CA", "AA", "AL"))] for row in r["results"]]
        lines += [f"`{r['command']}` ({name}): {r['model']['name']} on {r['data']['n_images']} images of "
                  f"{_repo_relative(r['data']['source'])}; wall time {t['total_s']:.0f} s "
                  f"(mapping {t.get('map_s', 0):.0f} s, attacks and evaluation {t['attack_s']:.0f} s), "
                  f"nxbar {r['versions'].get('nxbar', '?')}.", "",
                  _markdown(["mode", "eps", "CA", "AA", "AL"], body), ""]
    return lines


def _reproducibility_section(out: Path) -> list[str]:
    """The reproducibility promise, with the cross-kernel drift measured in `<out>/reproducibility.json`
    (tools/kernel_drift.py)."""
    path = out / "reproducibility.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    drift = record["drift"]
    runs = [c for cells in drift.values() for c in cells]
    same = [k for k, cells in drift.items() if not any(c["margin_moved_images"] or c["moved_images"] for c in cells)]
    flipped = [c["margin_moved_images"] for c in runs]
    moved = ", ".join(f"{k}: {cell['experiment']} {' '.join(cell['match'].values())} image {i}, margin {a:+.4f} "
                      f"-> {b:+.4f}"
                      for k, cells in drift.items() for cell, c in zip(record["cells"], cells)
                      for i, a, b in zip(c["moved_images"], c["moved_margin_reference"], c["moved_margin_here"]))
    return ["## Reproducibility", "",
            f"A stored cell recomputes bit for bit on the BLAS kernel and library versions that made it: OpenBLAS's "
            f"{record['reference_kernel']} kernel" + (f" (and {', '.join(same)}, identical on every measured image)"
                                                      if same else "")
            + f", {record['blas_config'].split()[1]}, with the versions in `reproducibility.json`. Another CPU kind "
            "runs another float32 kernel, which sums in another order, so logits and input gradients differ in "
            "their last bits; where the network is near a tie (a ReLU or max-pool decision within rounding) the "
            "gradient takes another path, FGSM moves some pixels the other way, and an image with a small margin "
            f"can flip. Measured with `{record['how']}` on {len(record['cells'])} FGSM cells of 1,000 images under "
            f"{', '.join(sorted(drift))}: {min(flipped)} to {max(flipped)} images per cell moved their adversarial "
            f"margin by more than {record['margin_tolerance_logits']:g} logits, all of them images with "
            "input-gradient components of the other sign (the images without agreed within "
            f"{max(c['max_abs_margin_change_without_sign_flips'] for c in runs):.0e} logits), and "
            f"{sum(len(c['moved_images']) for c in runs)} images changed their outcome ({moved or 'none'}). "
            f"The promise, which `tests/test_reference_results.py` asserts on any other kernel: at most "
            f"{record['tolerance_images']} images of a cell of 1,000 change their outcome "
            f"({record['tolerance_images'] / 10:g} pp) and at most {100 * record['margin_moved_fraction']:g}% move "
            "their margin; a real change of the cell (eps, chip, model, physics, attack) moves the margins of "
            "nearly every image.", ""]


def _wall_time_text(json_path: Path, rows: int) -> str:
    """'; wall time 9,647 s' from an experiment's record, saying for how many of its `rows` cells it was kept."""
    if not json_path.is_file():
        return ""
    record = json.loads(json_path.read_text())
    timed = min(timed_cells(record), rows)
    text = f"; wall time {record['wall_s_total']:,.0f} s"
    if timed < rows:
        text += (f", for {timed} of these cells: the runs that made the other {rows - timed} stopped before they "
                 "finished, and their time was not recorded")
    return text


def _saturated_text(counts: tuple[int, int, int, int] | None) -> str:
    if counts is None or counts[1] == counts[3] == 0:
        return "-"
    al, al_failed, aa, aa_failed = counts
    text = f"{al} of {al_failed}"
    return text if not aa_failed else f"{text} (AA view: {aa} of {aa_failed})"


def report(out: str | Path = DEFAULT_OUT, weights_dir: str | Path = REPO / "weights") -> Path:
    """Write `<out>/README.md` from the stored CSVs and threat matrices: claim verdicts with the sanity checks
    behind them, the networks of `weights_dir` (accuracies; ANS and bits of the QUANOS ones), each table beside
    the paper's with its figure (`<NAME>.png`, when drawn), then the threat-model section."""
    out = Path(out)
    results, threats = load_results(out), load_threats(out)
    lines = ["# Reference results", "",
             "Generated by `nxbar reproduce --report` from the CSVs in this folder (`nxbar reproduce NAME` writes "
             "`NAME.csv`, one row per cell, and `NAME.json`). The paper's tables are in `paper/`. Verdicts are "
             "computed from the stored numbers; no parameter is tuned toward the paper. Chip-seed means are used "
             f"where a cell ran on several chips. C6 tolerance {C6_TOLERANCE_PP:g} pp, C9 saturation threshold "
             f"{C9_SATURATION_PP:g} pp, C7 flatness threshold {C7_FLAT_PP:g} pp.", "",
             "## Claims (docs/protocol.md section 10)", ""]
    in_aa, saturated = verdicts_in_aa(results), saturated_failures(results)
    body = [[claim, CLAIMS[claim][0], verdict, text, in_aa.get(claim, "-"), _saturated_text(saturated.get(claim))]
            for claim, (verdict, text) in verdicts(results).items()]
    lines += [_markdown(["claim", "statement", "verdict", "numbers", "same comparisons in AA",
                         f"failures with AA <= {SATURATED_AA_PCT:g}% on both sides"], body), "",
              "AL = CA - AA, so a lower AL can come from a lower clean accuracy alone, which is no robustness. The "
              "fifth column makes each claim's AL comparisons on 100 - AA instead (the AL at 100% clean accuracy): "
              "it holds only where the better setting keeps more adversarial images correct. The last column counts "
              f"the failed comparisons that are saturated: both cells keep at most {SATURATED_AA_PCT:g}% of the images "
              "under attack, so AL is about CA on both sides and the comparison is one of clean accuracy (on 100 - AA "
              f"both sides lie within {SATURATED_AA_PCT:g} pp of 100, and a strict '<' fails on a tie).", "",
              _sanity_summary(threats), ""]
    lines += _reproducibility_section(out)
    lines += _networks_section(Path(weights_dir))
    lines += _main_command_section(out)
    for name, description in EXPERIMENTS.items():
        lines += [f"## {name}: {description}", ""]
        rows = results.get(name)
        if rows is None:
            lines += [f"Not run: no `{name}.csv` yet (`nxbar reproduce {name}`).", ""]
            continue
        cells = len(experiment_cells(name))
        n = next((r["n"] for r in rows if r["n"]), None)
        lines += [f"{len(rows)} of {cells} cells stored" + (f", {n} images" if n else "")
                  + _wall_time_text(out / f"{name}.json", len(rows)) + ".", ""]
        table = (_nf_table(rows) if name == "nf" else _clean_table(rows) if name == "fig4"
                 else _attack_table(rows, _paper(out, name)))
        lines += [table, ""]
        if (out / f"{name}.png").is_file():
            lines += [f"![{name}]({name}.png)", ""]
    lines += _threats_section(threats)
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
