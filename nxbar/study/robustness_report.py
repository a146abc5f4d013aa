"""The robustness study's derived files and its report section (docs/protocol.md section 12): verdicts.csv and
the figures from the stored outcomes, and the markdown that answers the study's question at each point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nxbar.files import atomic_write_text
from nxbar.study import stats
from nxbar.study.claims import C6_TOLERANCE_PP
from nxbar.study.nonideality import SOFTWARE, Design, attack_label
from nxbar.study.results import markdown_table, read_rows
from nxbar.study.robustness import attack_cells, folder
from nxbar.study.verdicts import POINTS, VERDICT_COLUMNS, claim_verdicts, load_sides, verdict_rows

CLAIM_TEXT = {
    "C1": "AL(SH), AL(HH) < AL(SW), every size and attack",
    "C2": "clean accuracy drops after mapping, more for larger crossbars",
    "C3": "PGD: larger crossbars give lower AL",
    "C4": "PGD: AL(HH) < AL(SH)",
    "C5": "R_on 10 kOhm gives lower PGD AL than 20 kOhm (ON/OFF 10)",
    "C6": f"raising R_off (ON/OFF 100, 1000, 2000 vs 10) adds no robustness (tolerance {C6_TOLERANCE_PP:g} pp)",
}


def _csv_text(columns, rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r.get(c, "") for c in columns} for r in rows)
    return buf.getvalue()


def finish(out: str | Path, design: Design, *, paper_dir: str | Path | None = None,
           resamples: int = stats.RESAMPLES) -> dict[str, str]:
    """Write verdicts.csv from the stored outcomes and draw ca_vs_nf.png and frontier.png (when matplotlib is
    installed; else say why not). Returns {file: path or 'not drawn: ...'}."""
    from nxbar.study import robustness_figures as figs

    d = folder(out, design.quick)
    sides = load_sides(d, read_rows(d / "attacks.csv"))
    rows = verdict_rows(design, sides, resamples=resamples)
    atomic_write_text(d / "verdicts.csv", _csv_text(VERDICT_COLUMNS, rows))
    made = {"verdicts.csv": str(d / "verdicts.csv")}
    paper = figs.paper_points(Path(paper_dir or Path(out) / "paper"),
                              tuple(attack_label(a).split()[-1] for a in design.attacks if a.attack == "pgd"))
    try:
        made["ca_vs_nf.png"] = str(figs.draw_ca_vs_nf(read_rows(d / "sweep.csv"), design.point_sigma,
                                                      d / "ca_vs_nf.png"))
        made["frontier.png"] = str(figs.draw_frontier(figs.frontier_points(rows), paper, d / "frontier.png"))
    except ImportError as err:
        made["figures"] = f"not drawn: {err}"
    return made


def _ci(r: dict) -> str:
    return f"{float(r['diff']):+.2f} [{float(r['ci_low']):+.2f}, {float(r['ci_high']):+.2f}]"


def _answer(point: str, rows: list[dict]) -> str:
    """The study's question at one point in plain words, from its C1 and C2 verdict rows."""
    aa = [r for r in rows if r["claim"] == "C1" and r["point"] == point and r["view"] == "AA"]
    al = [r for r in rows if r["claim"] == "C1" and r["point"] == point and r["view"] == "AL"]
    ca = [r for r in rows if r["claim"] == "C2" and r["point"] == point and r["comparison"].endswith("vs software")]
    if not aa:
        return f"**{point}**: no attack cells stored yet."
    lost = ", ".join(f"{r['comparison'].split()[0]} {-float(r['diff']):.1f} pp" for r in ca)
    parts = []
    for mode in ("SH", "HH"):
        mine = [r for r in aa if f" {mode} " in r["comparison"]]
        if not mine:  # a study still running: this mode's cells at this point are not stored yet
            parts.append(f"{mode}: no attack cells stored yet")
            continue
        held = [r for r in mine if r["verdict"] == "holds"]
        rev = [r for r in mine if r["verdict"] == "reversed"]
        best = max(mine, key=lambda r: float(r["diff"]))
        parts.append(f"{mode} keeps significantly more adversarial images correct than software in {len(held)} of "
                     f"{len(mine)} size x attack comparisons, significantly fewer in {len(rev)} (largest AA gain: "
                     f"{best['comparison']}, {_ci(best)} pp)")
    al_held = sum(r["verdict"] == "holds" for r in al)
    aa_held = sum(r["verdict"] == "holds" for r in aa)
    if aa_held == 0:
        tail = (f"Lower AL than software is significant in {al_held} of {len(al)} comparisons, but no crossbar keeps "
                "more adversarial images correct beyond noise: no robustness beyond what clean accuracy explains.")
    else:
        tail = (f"Lower AL than software is significant in {al_held} of {len(al)} comparisons; in {aa_held} the "
                "crossbar also keeps more adversarial images correct beyond noise, a gain that clean accuracy "
                "lost does not explain.")
    return f"**{point}** (clean accuracy lost: {lost or '-'}): " + "; ".join(parts) + ". " + tail


def section(out: str | Path, design: Design) -> list[str]:
    """The report's markdown lines for the study stored in `out` (quick or full per `design`)."""
    d = folder(out, design.quick)
    name = d.name
    lines = [f"## Robustness versus non-ideality, with statistics (docs/protocol.md section 12)", ""]
    points_path = d / "points.json"
    if not points_path.is_file():
        return lines + [f"Not run: no `{name}/points.json` yet (`nxbar robustness`).", ""]
    record = json.loads(points_path.read_text())
    study = json.loads((d / "study.json").read_text())
    attacks = read_rows(d / "attacks.csv")
    total = len(attack_cells(design, record["points"]))
    lines += [f"Made by `nxbar robustness` in `{name}/` on {study['n_images']} images, chips "
              f"{', '.join(map(str, design.chips))}: the non-ideality sweep (`sweep.csv`, `ca_vs_nf.png`), operating "
              f"points chosen from clean accuracy alone before any attack (`points.json`), attack cells with "
              f"per-image outcomes (`attacks.csv`, `outcomes/`: {len(attacks)} of {total} stored"
              + ("" if len(attacks) == total else "; the study is still running, every number below is of the "
                 "stored cells") + f"), and paired statistics (`verdicts.csv`, `frontier.png`). Wall time so far "
              f"{study['wall_s_total'] / 3600:.1f} h.", "",
              f"Rule: {record['rule']}", "",
              "Chosen parasitic scale s: " + ", ".join(f"{k} {v:g}" for k, v in record["chosen_scale"].items())
              + f" (software CA {record['software_CA']:.1f}%; target drops "
              + ", ".join(f"{s}x{s} {t:g} pp" for s, t in record["targets_drop_pp"].items()) + ").", ""]
    lines += _sweep_table(read_rows(d / "sweep.csv"), design)
    vrows = read_rows(d / "verdicts.csv")
    if not vrows:
        return lines + ["No verdicts yet (`verdicts.csv` is written when attack cells are stored).", ""]
    lines += ["### The answer at each point", "",
              "AA gained = AA(crossbar) - AA(software), pp, chip mean, with a 95% paired bootstrap CI (images, "
              "and chips as the outer level); significance: McNemar's exact test with Holm's correction over each "
              "claim's comparisons at a point, p < 0.05 and a CI that excludes 0.", ""]
    lines += [_answer(p, vrows) for p in POINTS] + [""]
    lines += ["### Claims with statistical verdicts", ""]
    verdicts = claim_verdicts(vrows)
    body = []
    for claim, text in CLAIM_TEXT.items():
        for point in POINTS:
            cells = []
            for view in (("CA",) if claim == "C2" else ("AL", "AA")):
                v = verdicts.get((claim, point, view))
                if v:
                    c = v["counts"]
                    cells.append(f"{view}: {v['verdict']} ({c['holds']} hold, {c['reversed']} reversed, "
                                 f"{c['not distinguishable']} n.d.)")
            if cells:
                strict = [r for r in vrows if r["claim"] == claim and r["point"] == point]
                body.append([claim, text, point, "; ".join(cells),
                             f"{sum(r['strict'] == 'holds' for r in strict)}/{len(strict)}"])
    lines += [markdown_table(["claim", "statement", "point", "verdict per view", "old strict comparison holds"], body), ""]
    lines += _attack_table(attacks, design)
    if (d / "frontier.png").is_file():
        lines += [f"![frontier]({name}/frontier.png)", ""]
    if (d / "ca_vs_nf.png").is_file():
        lines += [f"![CA vs NF]({name}/ca_vs_nf.png)", ""]
    return lines


def _sweep_table(rows: list[dict], design: Design) -> list[str]:
    cells: dict[tuple, list[tuple[float, float]]] = {}
    for r in rows:
        if r["xbar"] != SOFTWARE:
            cells.setdefault((float(r["sigma"]), float(r["parasitic_scale"]), int(r["xbar"])), []).append(
                (float(r["CA"]), float(r["nf"])))
    strengths = sorted({k[:2] for k in cells})
    body = []
    for sigma, scale in strengths:
        row = [f"{sigma:g}", f"{scale:g}"]
        for size in design.sizes:
            v = cells.get((sigma, scale, size))
            if v is None:
                row.append("-")
            else:
                ca, nf = np.array(v).T
                spread = f" ± {np.std(ca, ddof=1):.1f}" if len(ca) > 1 else ""
                row.append(f"{ca.mean():.1f}{spread} (NF {nf.mean():.3f})")
        body.append(row)
    return ["Sweep: clean accuracy in percent, chip mean ± sample std (mean layer NF):", "",
            markdown_table(["sigma", "s", *[f"{s}x{s}" for s in design.sizes]], body), ""]


def _attack_table(rows: list[dict], design: Design) -> list[str]:
    """AA per point, size, mode and attack: chip mean (percent)."""
    values: dict[tuple, list[float]] = {}
    for r in rows:
        for point in r["point"].split(";"):
            values.setdefault((point, r["xbar"], r["mode"], r["attack"], r["eps"], r["eps_space"]), []).append(
                float(r["AA"]))
    labels = {(a.attack, repr(a.eps), a.eps_space): attack_label(a) for a in (*design.attacks, *design.variant_attacks)}
    cols = list(labels)
    body = []
    for point, xbar, mode in dict.fromkeys(k[:3] for k in values):
        row = [point, xbar, mode]
        for a in cols:
            v = values.get((point, xbar, mode, *a))
            row.append(f"{np.mean(v):.1f}" if v else "-")
        body.append(row)
    return ["AA in percent, chip mean:", "", markdown_table(["point", "xbar", "mode", *labels.values()], body), ""]
