"""The study's figures (docs/protocol.md section 9): one PNG per experiment, drawn from its stored CSV rows.

matplotlib is an optional extra (`pip install 'nxbar[plot]'`), imported only when a figure is drawn; the
figure is built on the Agg canvas directly, so no display and no global pyplot state are involved.

What is plotted is computed by `series(rows)` first, so the numbers of a figure can be checked without it:
    attack rows (every row has an attack):  x = eps,         y = AL (percentage points), one panel per
                                            (attack, eps_space), one line per series
    mode "clean" (Fig. 4):                  x = model,       y = CA (percent), grouped bars per setting
    mode "nf" (protocol.md section 3):      x = layer,       y = NF, grouped bars per crossbar size
A series is one value of every key column that varies between rows, except the x column and the chip and
attack seeds: rows that differ only in chip seed are one point, drawn as the mean with the sample standard
deviation (ddof = 1) as error bar; the label names only the varying parts ("xbar32 HH R_on 10k ON/OFF 10").
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from nxbar.study.grid import COLUMNS, EXPERIMENTS, KEY_COLUMNS
from nxbar.study.results import load_results, physics_label, read_rows
from nxbar.attacks import eps_label

RESULT_COLUMNS = frozenset(COLUMNS) - frozenset(KEY_COLUMNS)
SEED_COLUMNS = ("chip_seed", "attack_seed")
PANEL_COLUMNS = ("attack", "eps_space")
ALWAYS_COMPARED = ("xbar", "mode")  # compared over all rows; other columns within software / hardware rows
KINDS = {  # kind: (x column, value column, y axis label)
    "attack": ("eps", "AL", "AL (percentage points)"),
    "clean": ("model", "CA", "clean accuracy CA (%)"),
    "nf": ("layer", "nf", "non-ideality factor NF"),
}
PANEL_IN = (5.0, 4.0)  # width, height of one panel in inches
LEGEND_IN = 1.5  # added to the height of an AL-vs-eps panel: its legend goes below the axes
LEGEND_COLUMN_CHARS = 22  # a legend of three columns fits a panel's width when no label is longer than this
DPI = 100
MAX_COLUMNS = 3  # panels per figure row


def kind(rows: list[dict]) -> str:
    """'attack' when every row has an attack, 'clean' or 'nf' when every row has that mode; else ValueError."""
    if not rows:
        raise ValueError("rows is empty; allowed: the rows of one stored experiment CSV")
    if all(r.get("attack") for r in rows):
        return "attack"
    modes = sorted({r.get("mode", "") for r in rows})
    if len(modes) == 1 and modes[0] in KINDS:
        return modes[0]
    raise ValueError(f"rows have mode(s) {modes} without an attack; "
                     f"allowed: attack rows, or all 'clean', or all 'nf'")


def panels(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Attack rows grouped by (attack, eps_space), in stored order; other kinds are one panel ('', '')."""
    if kind(rows) != "attack":
        return {("", ""): rows}
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["attack"], r.get("eps_space", "")), []).append(r)
    return out


def series(rows: list[dict]) -> dict[str, tuple[list, list[float], list[float]]]:
    """{label: (x values, mean, sample std)} of one panel's rows, series and x in stored order (eps sorted).

    x: eps as floats (attack rows), model names (clean), layer names with 'tiles' first (nf). std is 0.0 for
    a point with a single row. ValueError for rows of several panels or with an empty value.
    """
    return {label: (xs, mean, std) for label, _, xs, mean, std in _series(rows)}


def _series(rows: list[dict]) -> list[tuple[str, dict, list, list[float], list[float]]]:
    """[(label, key {varying column: value}, x, mean, std)] -- the key decides line style and colour."""
    if len(panels(rows)) > 1:
        raise ValueError(f"rows span the panels {list(panels(rows))}; pass the rows of one panel (see panels())")
    x_col, value_col, _ = KINDS[kind(rows)]
    varying = _varying(rows, x_col)
    points: dict[tuple, dict] = {}  # series key -> {x: [values]}
    first: dict[tuple, dict] = {}  # series key -> its first row
    for r in rows:
        if r.get(value_col, "") == "":
            cell = {k: v for k, v in r.items() if v and k not in RESULT_COLUMNS}
            raise ValueError(f"column {value_col!r} is empty in the row of {cell}; every row needs a value")
        x = float(r[x_col]) if x_col == "eps" else r.get(x_col, "")
        key = tuple(r.get(c, "") for c in varying)
        first.setdefault(key, r)
        points.setdefault(key, {}).setdefault(x, []).append(float(r[value_col]))
    out = []
    for key, by_x in points.items():
        xs = sorted(by_x) if x_col == "eps" else sorted(by_x, key=lambda x: x != "tiles")  # stable: stored order
        values = [by_x[x] for x in xs]
        mean = [float(np.mean(v)) for v in values]
        std = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        out.append((_label(dict(zip(varying, key)), first[key]), dict(zip(varying, key)), xs, mean, std))
    return out


def _is_software(r: dict) -> bool:
    return r.get("xbar", "") == "software"


def _varying(rows: list[dict], x_col: str) -> list[str]:
    """Key columns (in row order) that differ between two software rows or two hardware rows (xbar and mode:
    between any two rows); physics columns, empty on software rows, thus count only when hardware rows differ."""
    skip = {x_col, *SEED_COLUMNS, *PANEL_COLUMNS, *RESULT_COLUMNS}
    columns = [c for c in dict.fromkeys(c for r in rows for c in r) if c not in skip]
    groups = [[r for r in rows if _is_software(r)], [r for r in rows if not _is_software(r)]]
    return [c for c in columns
            if len({r.get(c, "") for r in rows}) > 1 and
            (c in ALWAYS_COMPARED or any(len({r.get(c, "") for r in g}) > 1 for g in groups))]


def _label(key: dict, row: dict) -> str:
    """The readable label of one series (key: its varying columns, row: one of its rows): the varying parts
    only, e.g. 'vgg8q xbar16 HH', 'xbar32 SH 4-bit input'; R_on and ON/OFF together if either varies."""
    parts = []
    if "model" in key:
        parts.append(key["model"])
    if "xbar" in key and key.get("mode") != "SW":  # mode SW already says software
        parts.append("software" if key["xbar"] == "software" else f"xbar{key['xbar']}")
    if "mode" in key:
        parts.append(key["mode"])
    if ("r_on_ohm" in key or "r_off_ohm" in key) and row.get("r_on_ohm") and row.get("r_off_ohm"):
        parts.append(physics_label(row))
    for column, value in key.items():
        if column in ("model", "xbar", "mode", "r_on_ohm", "r_off_ohm") or value == "":
            continue
        parts.append(f"{value}-bit input" if column == "input_bits" else f"{column} {value}")
    return " ".join(parts) or row.get("mode", "")


def _title(name: str, width_in: float) -> str:
    """Experiment name and its registry description, wrapped to the figure width, at most two lines."""
    text = f"{name}: {EXPERIMENTS[name]}" if name in EXPERIMENTS else name
    chars = int(13 * width_in)
    return textwrap.fill(textwrap.shorten(text, 2 * chars, placeholder=" ..."), chars)


def _matplotlib():
    """(Figure, FigureCanvasAgg), or ImportError saying how to install the optional extra."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("drawing figures needs matplotlib, an optional extra: pip install 'nxbar[plot]'") from e
    return Figure, FigureCanvasAgg


def _error_bars(std: list[float]) -> list[float]:
    """yerr of one series: NaN (no bar, no caps) where the std is 0, i.e. a single chip or identical values."""
    return [s if s > 0 else np.nan for s in std]


def _styles(entries) -> dict[tuple, tuple[str, str]]:
    """{series key: (colour, line style)}. Colour: one per crossbar size / physics variant (SH and HH of it share
    it, software black) when only the crossbar size and the mode vary; when more varies (input bits, model,
    physics), one per setting of those, so that SW drawn on a setting shares its colour, dotted. A software
    series whose setting no hardware series has keeps black when it is the only one. HH dashed, SH solid."""
    keys = [key for _, key, *_ in entries]
    software = [key.get("xbar") == "software" or key.get("mode") == "SW" for key in keys]

    def setting(key):
        return tuple((c, v) for c, v in key.items() if c not in ("mode", "xbar"))

    by_setting = len({setting(k) for k in keys}) > 1
    group = setting if by_setting else (lambda key: tuple((c, v) for c, v in key.items() if c != "mode"))
    hardware = {group(k) for k, sw in zip(keys, software) if not sw}
    alone = {group(k) for k, sw in zip(keys, software) if sw} - hardware  # software-only colour groups
    palette = [g for g in dict.fromkeys(group(k) for k in keys) if len(alone) > 1 or g not in alone]
    styles = {}
    for key, sw in zip(keys, software):
        g = group(key)
        colour = f"C{palette.index(g) % 10}" if g in palette else "black"
        style = "--" if key.get("mode") == "HH" else ":" if sw and g in hardware else "-"
        styles[tuple(key.items())] = (colour, style)
    return styles


def _lines(ax, entries, attack: str):
    """AL vs eps (`_styles`); eps at equal spacing, labelled as the paper writes it; the legend below the axes."""
    eps = sorted({x for _, _, xs, _, _ in entries for x in xs})
    styles = _styles(entries)
    for label, key, xs, mean, std in entries:
        colour, style = styles[tuple(key.items())]
        ax.errorbar([eps.index(x) for x in xs], mean, yerr=_error_bars(std), label=label, marker="o", markersize=4,
                    capsize=3, color=colour, linestyle=style)
    ax.set_xticks(range(len(eps)), [eps_label(attack, e) for e in eps])
    short = max(len(label) for label, *_ in entries) <= LEGEND_COLUMN_CHARS
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=3 if len(entries) > 8 and short else 2)


def _bars(ax, entries):
    """Grouped bars: one group per x category, one bar per series, error bar = sample std over chip seeds."""
    categories = list(dict.fromkeys(x for _, _, xs, _, _ in entries for x in xs))
    styles = _styles(entries)
    width = 0.8 / len(entries)
    for i, (label, key, xs, mean, std) in enumerate(entries):
        positions = [categories.index(x) - 0.4 + (i + 0.5) * width for x in xs]
        ax.bar(positions, mean, width, yerr=_error_bars(std), capsize=2, label=label,
               color=styles[tuple(key.items())][0])
    ax.set_xticks(range(len(categories)), categories, rotation=45 if len(categories) > 4 else 0)
    ax.margins(y=0.3)  # room above the bars for the legend
    ax.legend(fontsize=7, loc="upper center", ncols=min(len(entries), 4))


def figure(name: str, rows: list[dict]):
    """The matplotlib Figure of experiment `name` from its CSV rows (strings, as `nxbar.study.results.read_rows` returns)."""
    try:
        what = kind(rows)
        groups = panels(rows)
        drawn = {panel: _series(panel_rows) for panel, panel_rows in groups.items()}
    except ValueError as e:
        raise ValueError(f"experiment {name!r}: {e}") from e
    Figure, FigureCanvasAgg = _matplotlib()
    ncols = min(len(drawn), MAX_COLUMNS)
    nrows = -(-len(drawn) // ncols)
    height = PANEL_IN[1] + (LEGEND_IN if what == "attack" else 0.0)
    fig = Figure(figsize=(PANEL_IN[0] * ncols, height * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x_col, _, y_label = KINDS[what]
    for ax, ((attack, space), entries) in zip(axes, drawn.items()):
        if what == "attack":
            _lines(ax, entries, attack)
            ax.set_title(f"{attack.upper()}, eps in {space} units" if space else attack.upper(), fontsize=10)
        else:
            _bars(ax, entries)
        ax.set_xlabel(x_col)
        ax.set_ylabel(y_label)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[len(drawn):]:
        ax.set_visible(False)
    fig.suptitle(_title(name, PANEL_IN[0] * ncols), fontsize=10)
    return fig


def draw(name: str, rows: list[dict], path) -> Path:
    """Draw experiment `name` from its CSV rows (`figure`) into the PNG `path`.

    The same rows give the same bytes (no timestamp or software version in the PNG metadata).
    """
    fig = figure(name, rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def draw_all(out) -> list[Path]:
    """Write `<out>/<NAME>.png` for every full experiment CSV in `out` (registered or not; quick runs are
    skipped); return the PNG paths."""
    out = Path(out)
    results = load_results(out)
    for csv_path in sorted(out.glob("*.csv")):
        name = csv_path.stem
        if name not in results and name not in EXPERIMENTS and not name.endswith("_quick"):
            if rows := read_rows(csv_path):
                results[name] = rows
    return [draw(name, rows, out / f"{name}.png") for name, rows in results.items()]
