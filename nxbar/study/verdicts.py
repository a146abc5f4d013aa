"""The claims C1-C6 as paired comparisons of the robustness study's per-image outcomes, with statistical verdicts
(docs/protocol.md section 12.4).

At each operating point: C1 SH and HH vs SW (every size and attack), C2 clean accuracy vs software and of
consecutive sizes, C3 consecutive sizes under PGD, C4 HH vs SH under PGD. At the default point also C5 (R_on
10 kOhm vs 20 kOhm at ON/OFF 10) and C6 (ON/OFF 100, 1000, 2000 vs 10 add no robustness). Each comparison is
made in the AL view (claimed: lower AL) and the AA view (claimed: higher AA); C2 compares CA. Holm's correction
runs over each claim's comparisons at one point in one view.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nxbar.study import stats
from nxbar.study.claims import C6_TOLERANCE_PP
from nxbar.evaluation import AttackConfig
from nxbar.study.nonideality import SOFTWARE, Design, attack_label
from nxbar.study.robustness import load_outcomes

VERDICT_COLUMNS = ("claim", "comparison", "point", "view", "diff", "ci_low", "ci_high", "p_mcnemar", "p_holm",
                   "verdict", "strict", "chips", "n")
POINTS = ("default", "technology", "matched")
C5_VARIANT = "R_on 10k ON/OFF 10"
C6_VARIANTS = ("ON/OFF 100", "ON/OFF 1000", "ON/OFF 2000")
VIEWS = ("AL", "AA")
# claimed direction of ours - other: lower AL, higher AA, lower CA (C2)
DIRECTION = {"AL": -1, "AA": 1, "CA": -1}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: per-chip outcome arrays (chips, images) of clean and adversarial correctness,
    with the chip seeds (None for software, which one row serves every chip)."""

    clean: np.ndarray
    adv: np.ndarray
    chips: tuple | None

    def value(self, view: str) -> np.ndarray:
        """Per-chip, per-image outcome in `view`: CA or AA (1/0 correct) or AL = clean - adversarial."""
        clean, adv = self.clean.astype(np.int8), self.adv.astype(np.int8)
        return {"CA": clean, "AA": adv, "AL": clean - adv}[view]


def load_sides(study_dir: Path, rows: list[dict]) -> dict[tuple, Side]:
    """{(point, xbar, mode, attack label): Side} from attacks.csv `rows` and their outcome files; a cell shared
    by several points is a side of each. Software: point 'software', xbar 'software'."""
    grouped: dict[tuple, list] = {}
    for r in rows:
        out = load_outcomes(study_dir / "outcomes" / r["outcomes"])
        if out is None:
            raise ValueError(f"{study_dir / 'outcomes' / r['outcomes']}: missing or damaged outcome file of the "
                             f"attacks.csv row {r['mode']} {r['xbar']} chip {r['chip_seed']}; rerun the study")
        a = AttackConfig(attack=r["attack"], eps=float(r["eps"]), eps_space=r["eps_space"],
                         **({"steps": int(r["steps"]), "alpha": float(r["alpha"])} if r["attack"] == "pgd" else {}))
        for point in r["point"].split(";"):
            grouped.setdefault((point, r["xbar"], r["mode"], attack_label(a)), []).append(
                (r["chip_seed"], out["clean_correct"], out["adv_correct"]))
    sides = {}
    for key, items in grouped.items():
        items.sort(key=lambda t: int(t[0]) if t[0] else -1)
        chips = None if key[1] == SOFTWARE else tuple(int(c) for c, _, _ in items)
        sides[key] = Side(np.stack([c for _, c, _ in items]), np.stack([a for _, _, a in items]), chips)
    return sides


def difference(ours: Side, other: Side, view: str) -> np.ndarray:
    """d = ours - other per chip and image (chips, images), paired by chip seed; a software side serves every
    chip of the other side. Sides on different chips are paired in chip-seed order."""
    a, b = ours.value(view), other.value(view)
    if other.chips is None and len(b) == 1:
        b = np.broadcast_to(b, a.shape)
    elif ours.chips is None and len(a) == 1:
        a = np.broadcast_to(a, b.shape)
    if a.shape != b.shape:
        raise ValueError(f"cannot pair outcomes of shapes {a.shape} and {b.shape}")
    return a.astype(np.int16) - b.astype(np.int16)


@dataclass(frozen=True)
class Comparison:
    claim: str
    label: str
    point: str
    view: str
    ours: tuple
    other: tuple
    kind: str = "direction"  # or "no gain" (C6)


def comparisons(design: Design, sides: dict[tuple, Side]) -> list[Comparison]:
    """Every comparison of C1-C6 whose two sides are stored."""
    attacks = [attack_label(a) for a in design.attacks]
    pgd = [attack_label(a) for a in design.attacks if a.attack == "pgd"]
    sizes = [str(s) for s in design.sizes]
    out = []
    for point in POINTS:
        for view in VIEWS:
            out += [Comparison("C1", f"xbar{s} {mode} {a} vs SW", point, view, (point, s, mode, a),
                               (SOFTWARE, SOFTWARE, "SW", a))
                    for a in attacks for s in sizes for mode in ("SH", "HH")]
            out += [Comparison("C3", f"{mode} {a} xbar{large} vs xbar{small}", point, view, (point, large, mode, a),
                               (point, small, mode, a))
                    for a in pgd for mode in ("SH", "HH") for small, large in zip(sizes, sizes[1:])]
            out += [Comparison("C4", f"xbar{s} {a} HH vs SH", point, view, (point, s, "HH", a), (point, s, "SH", a))
                    for a in pgd for s in sizes]
        first = attacks[0]  # clean outcomes are the network's; any attack's cell holds them
        out += [Comparison("C2", f"xbar{s} vs software", point, "CA", (point, s, "SH", first),
                           (SOFTWARE, SOFTWARE, "SW", first)) for s in sizes]
        out += [Comparison("C2", f"xbar{large} vs xbar{small}", point, "CA", (point, large, "SH", first),
                           (point, small, "SH", first)) for small, large in zip(sizes, sizes[1:])]
    vs = str(design.variant_size)
    for view in VIEWS:
        for a in (attack_label(a) for a in design.variant_attacks):
            for mode in ("SH", "HH"):
                base = ("default", vs, mode, a)
                out.append(Comparison("C5", f"xbar{vs} {mode} {a} {C5_VARIANT} vs R_on 20k", "default", view,
                                      (C5_VARIANT, vs, mode, a), base))
                out += [Comparison("C6", f"xbar{vs} {mode} {a} {v} vs ON/OFF 10", "default", view, (v, vs, mode, a),
                                   base, kind="no gain") for v in C6_VARIANTS]
    return [c for c in out if c.ours in sides and c.other in sides]


def verdict_rows(design: Design, sides: dict[tuple, Side], *, resamples: int = stats.RESAMPLES) -> list[dict]:
    """One row (VERDICT_COLUMNS) per comparison: diff (pp) with its 95% bootstrap CI, McNemar's exact p, Holm's
    p over the claim's comparisons at the point in the view, the verdict, and the old strict comparison of the
    chip means ('holds'/'fails' in the claimed direction)."""
    found = comparisons(design, sides)
    rows = []
    for c in found:
        d = difference(sides[c.ours], sides[c.other], c.view)
        diff, ci, p = stats.paired_summary(d, resamples=resamples)
        rows.append({"comparison": c, "d": d, "diff": diff, "ci": ci, "p": p})
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        c = r["comparison"]
        families.setdefault((c.claim, c.point, c.view), []).append(i)
    for members in families.values():
        for i, p in zip(members, stats.holm([rows[i]["p"] for i in members])):
            rows[i]["p_holm"] = float(p)
    out = []
    for r in rows:
        c, direction = r["comparison"], DIRECTION[r["comparison"].view]
        if c.kind == "no gain":
            v = stats.verdict_no_gain(r["diff"], r["ci"], r["p_holm"], direction, C6_TOLERANCE_PP)
            strict = "holds" if direction * r["diff"] <= C6_TOLERANCE_PP else "fails"
        else:
            v = stats.verdict(r["diff"], r["ci"], r["p_holm"], direction)
            strict = "holds" if direction * r["diff"] > 0 else "fails"
        out.append({"claim": c.claim, "comparison": c.label, "point": c.point, "view": c.view,
                    "diff": f"{r['diff']:.4f}", "ci_low": f"{r['ci'][0]:.4f}", "ci_high": f"{r['ci'][1]:.4f}",
                    "p_mcnemar": f"{r['p']:.6g}", "p_holm": f"{r['p_holm']:.6g}", "verdict": v, "strict": strict,
                    "chips": len(r["d"]), "n": r["d"].shape[1]})
    return out


def claim_verdicts(rows: list[dict]) -> dict[tuple, dict]:
    """{(claim, point, view): {"verdict", "counts": {verdict: number of comparisons}}} from verdicts.csv rows."""
    grouped: dict[tuple, list[str]] = {}
    for r in rows:
        grouped.setdefault((r["claim"], r["point"], r["view"]), []).append(r["verdict"])
    return {k: {"verdict": stats.claim_verdict(v), "counts": {x: v.count(x) for x in stats.VERDICTS}}
            for k, v in grouped.items()}
