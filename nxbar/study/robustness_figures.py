"""The robustness study's figures (docs/protocol.md section 12.5), each computed as numbers first and drawn from
them (matplotlib is the optional `plot` extra, see nxbar.study.figures):

- ca_vs_nf.png: clean accuracy against mean layer NF over the parasitic-scale sweep (left) and against sigma
  (right), one curve per crossbar size, chip means with the chips' sample std as error bars;
- frontier.png: AA gained over software (pp, with its 95% CI) against clean accuracy lost (pp), one point per
  size x operating point x attack and mode, from verdicts.csv (C1 in the AA view, C2 vs software); the paper's
  Table II points where its numbers allow (PGD, SH and HH; CA read as AL at 32/255, where AA ~ 0).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from nxbar.study.figures import DPI, _matplotlib
from nxbar.study.nonideality import SOFTWARE

PAPER_TABLE = "table2_pgd_vgg8_cifar10_AL.csv"
POINT_COLOURS = {"default": "C0", "technology": "C3", "matched": "C2"}
MODE_MARKERS = {"SH": "o", "HH": "s"}


def sweep_curves(rows: list[dict], point_sigma: float) -> dict[str, dict[int, list[tuple]]]:
    """{"scale": {size: [(NF mean, NF std, CA mean, CA std, s), ...] by s at point_sigma],
        "sigma": {size: [(sigma, 0, CA mean, CA std, sigma), ...] at s = 1]} from sweep.csv rows."""
    cells: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        if r["xbar"] != SOFTWARE:
            key = (int(r["xbar"]), float(r["sigma"]), float(r["parasitic_scale"]))
            cells.setdefault(key, []).append((float(r["nf"]), float(r["CA"])))
    out: dict[str, dict[int, list[tuple]]] = {"scale": {}, "sigma": {}}
    for (size, sigma, scale), values in sorted(cells.items()):
        nf, ca = np.array(values).T
        std = float(np.std(ca, ddof=1)) if len(ca) > 1 else 0.0
        nf_std = float(np.std(nf, ddof=1)) if len(nf) > 1 else 0.0
        if sigma == point_sigma:
            out["scale"].setdefault(size, []).append((float(nf.mean()), nf_std, float(ca.mean()), std, scale))
        if scale == 1.0:
            out["sigma"].setdefault(size, []).append((sigma, 0.0, float(ca.mean()), std, sigma))
    return out


def frontier_points(verdict_rows: list[dict]) -> list[dict]:
    """One dict per (point, size, mode, attack): ca_lost (pp, chip mean), aa_gain with ci_low, ci_high (pp)."""
    ca_lost = {(r["point"], m.group(1)): -float(r["diff"]) for r in verdict_rows
               if r["claim"] == "C2" and (m := re.fullmatch(r"xbar(\d+) vs software", r["comparison"]))}
    out = []
    for r in verdict_rows:
        m = re.fullmatch(r"xbar(\d+) (SH|HH) (.+) vs SW", r["comparison"])
        if r["claim"] == "C1" and r["view"] == "AA" and m and (r["point"], m.group(1)) in ca_lost:
            out.append({"point": r["point"], "size": int(m.group(1)), "mode": m.group(2), "attack": m.group(3),
                        "ca_lost": ca_lost[(r["point"], m.group(1))], "aa_gain": float(r["diff"]),
                        "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"])})
    return out


def paper_points(paper_dir: Path, eps_labels: tuple[str, ...]) -> list[dict]:
    """The paper's Table II as frontier points at the given PGD eps labels ('2/255'): CA = AL at 32/255 (AA ~ 0
    there), AA = CA - AL, both against the software row. [] when the table is not there."""
    path = Path(paper_dir) / PAPER_TABLE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    table = {(r["setting"], r["mode"]): r for r in csv.DictReader(lines)}
    sw = table[(SOFTWARE, "Attack-SW")]
    out = []
    for (setting, mode), r in table.items():
        if setting == SOFTWARE:
            continue
        ca_lost = float(sw["32/255"]) - float(r["32/255"])
        for eps in eps_labels:
            if eps in r:
                aa_gain = (float(r["32/255"]) - float(r[eps])) - (float(sw["32/255"]) - float(sw[eps]))
                out.append({"size": int(setting.removeprefix("xbar")), "mode": mode, "attack": f"PGD {eps}",
                            "ca_lost": ca_lost, "aa_gain": aa_gain})
    return out


def draw_ca_vs_nf(rows: list[dict], point_sigma: float, path: Path) -> Path:
    Figure, Canvas = _matplotlib()
    curves = sweep_curves(rows, point_sigma)
    fig = Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained")
    Canvas(fig)
    left, right = fig.subplots(1, 2)
    for ax, which, xlabel in ((left, "scale", "mean layer NF (parasitic scale s swept)"),
                              (right, "sigma", "device variation sigma (s = 1)")):
        for i, (size, pts) in enumerate(sorted(curves[which].items())):
            x, xerr, y, yerr, _ = np.array(pts).T
            ax.errorbar(x, y, xerr=xerr if which == "scale" else None, yerr=yerr, marker="o", markersize=4,
                        capsize=3, color=f"C{i}", label=f"{size}x{size}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("clean accuracy CA (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title(f"CA vs NF at sigma {point_sigma:g}", fontsize=10)
    right.set_title("CA vs variation", fontsize=10)
    return _save(fig, path)


def draw_frontier(points: list[dict], paper: list[dict], path: Path) -> Path:
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=(7.5, 5.5), dpi=DPI, layout="constrained")
    Canvas(fig)
    ax = fig.subplots()
    seen = set()
    for p in points:
        label = f"{p['point']} {p['mode']}"
        ax.errorbar(p["ca_lost"], p["aa_gain"], yerr=[[p["aa_gain"] - p["ci_low"]], [p["ci_high"] - p["aa_gain"]]],
                    marker=MODE_MARKERS[p["mode"]], color=POINT_COLOURS.get(p["point"], "C7"), markersize=4,
                    capsize=2, linestyle="none", alpha=0.8, label=None if label in seen else label)
        seen.add(label)
    for mode in MODE_MARKERS:
        pts = [p for p in paper if p["mode"] == mode]
        if pts:
            ax.plot([p["ca_lost"] for p in pts], [p["aa_gain"] for p in pts], marker=MODE_MARKERS[mode],
                    markerfacecolor="none", color="black", linestyle="none", label=f"paper Table II {mode}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("clean accuracy lost vs software (pp)")
    ax.set_ylabel("adversarial accuracy gained vs software (pp, 95% CI)")
    ax.set_title("Robustness gained against clean accuracy lost", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
