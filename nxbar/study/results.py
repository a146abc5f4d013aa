"""The stored results of the study: reading its CSV rows, JSON records and threat matrices, the paper's tables,
and the labels rows are grouped by. Every path is an argument: `out` is the results folder."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from nxbar.attacks import eps_label
from nxbar.study.grid import EXPERIMENTS, KEY_COLUMNS

PAPER_TABLES = {"table1": "table1_fgsm_vgg8_cifar10_AL.csv", "table2": "table2_pgd_vgg8_cifar10_AL.csv",
                "table3": "table3_fgsm_quanos_vgg8_cifar10_AL.csv"}
PAPER_MODELS = {"F": "vgg8", "Q": "vgg8q"}  # Table III's "(F)" full-precision and "(Q)" QUANOS rows


def row_key(row: dict) -> tuple[str, ...]:
    """The key columns of a stored CSV row (strings; '' where absent): the cell it holds, as `Cell.key` gives it."""
    return tuple(row.get(c, "") for c in KEY_COLUMNS)


def read_rows(path: Path) -> list[dict]:
    """Rows of a stored CSV (strings), [] when it does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_results(out: str | Path) -> dict[str, list[dict]]:
    """The stored rows of every full (not quick) experiment present in `out`."""
    return {name: rows for name in EXPERIMENTS if (rows := read_rows(Path(out) / f"{name}.csv"))}


def load_threats(out: str | Path) -> dict[str, dict]:
    """{file stem: stored `nxbar threats --json` report} of every `<out>/threats/*.json`, sorted by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((Path(out) / "threats").glob("*.json"))}


def timed_cells(record: dict) -> int:
    """How many of the cells in a `<NAME>.json`'s CSV were made (computed or copied) within its `wall_s_total`.
    Records written before nxbar kept time per cell counted a run's time only when it finished, so for them it
    is the last run's cells, and a run stopped midway left no time at all."""
    if not record:
        return 0
    return record.get("timed_cells", record["computed_this_run"] + sum(record["copied_this_run"].values()))


def stored_elsewhere(out: Path, name: str, quick: bool, n: int, base_physics, hashes: dict) -> dict[tuple, tuple]:
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


def copy_paper_tables(source: str | Path, out: str | Path) -> list[Path]:
    """Copy the paper's own tables (`source`/*.csv) into `<out>/paper/`; return the copies."""
    dest = Path(out) / "paper"
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in sorted(Path(source).glob("*.csv"))]


def paper_table(out: Path, name: str) -> dict[tuple, float]:
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


def setting_label(r: dict) -> str:
    """'software' or 'xbar<size>'."""
    return "software" if r["xbar"] == "software" else f"xbar{r['xbar']}"


def physics_label(r: dict) -> str:
    """'R_on 20k ON/OFF 10' for a crossbar row, '' for a software row."""
    if r["xbar"] == "software":
        return ""
    r_on, r_off = float(r["r_on_ohm"]), float(r["r_off_ohm"])
    return f"R_on {r_on / 1e3:g}k ON/OFF {r_off / r_on:g}"


def input_label(r: dict) -> str:
    """'4-bit input' for a row with input discretization, else ''."""
    return f"{r['input_bits']}-bit input" if r.get("input_bits") else ""


def group_values(rows: list[dict], key, value: str) -> dict[tuple, list[float]]:
    """{key(row): [float(row[value]) of each row with that key, in order]}; rows without the value are left out."""
    out: dict[tuple, list[float]] = {}
    for r in rows:
        if r[value] != "":
            out.setdefault(key(r), []).append(float(r[value]))
    return out


@dataclass(frozen=True)
class SeriesKey:
    """What a stored attack row is a value of, apart from its chip seed: the labels the tables and claims compare
    rows by (eps and input as the report prints them; '' where a row has none)."""

    model: str
    eps_space: str
    physics: str
    setting: str
    mode: str
    eps: str
    input: str
    attack: str


def series_key(r: dict) -> SeriesKey:
    """The SeriesKey of a stored row."""
    return SeriesKey(r["model"], r["eps_space"], physics_label(r), setting_label(r), r["mode"],
                     eps_label(r["attack"], float(r["eps"])) if r["attack"] else "", input_label(r), r["attack"])


def series_values(rows: list[dict], value: str) -> dict[SeriesKey, list[float]]:
    """{series key: [value per chip seed]}."""
    return group_values(rows, series_key, value)


def markdown_table(header: list[str], body: list[list]) -> str:
    """A markdown table (cells written with str())."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in body])
