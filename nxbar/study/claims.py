"""The study's claims C1..C11 (docs/protocol.md section 10) as comparisons of stored cells: each claim's checks,
its verdict, the same comparisons made on adversarial accuracy alone, and the saturated failures."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nxbar.study.grid import SIZES
from nxbar.study.results import SeriesKey, group_values, input_label, series_values, setting_label

C6_TOLERANCE_PP = 1.0  # C6: "no added robustness" = AL at a larger ON/OFF ratio not below AL at 10 by more than this
C9_SATURATION_PP = 5.0  # C9: PGD AL "saturates" = a crossbar row's AL rises by at most this from 8/255 to 32/255
C7_FLAT_PP = 5.0  # C7: AL "stays flat" = a discretized crossbar row's AL varies by at most this over eps 0.1..0.3
SATURATED_AA_PCT = 1.0  # a comparison is saturated when both cells keep at most this AA: then AL = CA - AA ~ CA
NOT_REGISTERED = {
    "C11": "Tiny ImageNet VGG16 (Fig. 7): its training set cannot be obtained here (docs/protocol.md section 8)",
}


def _mean_al(rows: list[dict]) -> dict[SeriesKey, float]:
    """{series key: AL averaged over the chip seeds}."""
    return {k: float(np.mean(v)) for k, v in series_values(rows, "AL").items()}


@dataclass(frozen=True)
class Comparison:
    """One comparison of a claim: `ours` (the claim's side) against `other`, and whether the claim's relation holds."""

    label: str
    ours: float
    other: float
    holds: bool

    def __str__(self) -> str:
        return f"{self.label}: {self.ours:.2f} vs {self.other:.2f}"


def compare(label: str, ours: float, other: float, holds: bool) -> Comparison:
    """A Comparison with its numbers as Python floats and bool."""
    return Comparison(label, float(ours), float(other), bool(holds))


def _below_software(name: str, rows: list[dict]) -> list[Comparison]:
    """AL(SH) and AL(HH) < AL(SW) at the same eps (C1, C9)."""
    al = _mean_al(rows)
    return [compare(f"{name} {k.model} {k.eps_space} {k.setting} {k.mode} eps {k.eps}, AL vs SW", v, sw, v < sw)
            for k, v in al.items() if k.mode in ("SH", "HH")
            if (sw := al.get(replace(k, physics="", setting="software", mode="SW"))) is not None]


def _c2(res):
    by_setting = group_values(res.get("fig4", []), lambda r: (r["model"], setting_label(r)), "CA")
    ca = {k: float(np.mean(v)) for k, v in by_setting.items()}
    checks = []
    for (model, setting), v in ca.items():
        if setting != "software" and (model, "software") in ca:
            checks.append(compare(f"fig4 {model} CA {setting} vs software", v, ca[(model, "software")],
                                 v < ca[(model, "software")]))
    for model in dict.fromkeys(m for m, _ in ca):
        for small, large in zip(SIZES, SIZES[1:]):
            a, b = ca.get((model, f"xbar{large}")), ca.get((model, f"xbar{small}"))
            if a is not None and b is not None:
                checks.append(compare(f"fig4 {model} CA xbar{large} vs xbar{small}", a, b, a < b))
    return checks


def _c3(res):
    al = _mean_al(res.get("table2", []))
    return [compare(f"table2 {k.mode} eps {k.eps} AL {k.setting} vs xbar{small}", v, other, v < other)
            for k, v in al.items() if k.mode in ("SH", "HH")
            for small, large in zip(SIZES, SIZES[1:]) if k.setting == f"xbar{large}"
            if (other := al.get(replace(k, setting=f"xbar{small}"))) is not None]


def _c4(res):
    al = _mean_al(res.get("table2", []))
    return [compare(f"table2 {k.setting} eps {k.eps} AL HH vs SH", v, sh, v < sh)
            for k, v in al.items() if k.mode == "HH" if (sh := al.get(replace(k, mode="SH"))) is not None]


def _c5(res):
    al = _mean_al(res.get("fig8a", []))
    return [compare(f"fig8a {k.mode} eps {k.eps} AL R_on 10k vs 20k", v, ref, v < ref)
            for k, v in al.items() if k.physics == "R_on 10k ON/OFF 10"
            if (ref := al.get(replace(k, physics="R_on 20k ON/OFF 10"))) is not None]


def _c6(res):
    al = _mean_al(res.get("fig8b", []))
    return [compare(f"fig8b {k.mode} eps {k.eps} AL {k.physics} vs ON/OFF 10 (tolerance {C6_TOLERANCE_PP:g} pp)", v, ref,
                   v >= ref - C6_TOLERANCE_PP)
            for k, v in al.items() if k.setting != "software" and k.physics != "R_on 20k ON/OFF 10"
            if (ref := al.get(replace(k, physics="R_on 20k ON/OFF 10"))) is not None]


def _c9(res):
    al = _mean_al(res.get("fig6", []))
    saturation = [compare(f"fig6 {k.setting} {k.mode} AL rise 8/255 -> 32/255 vs {C9_SATURATION_PP:g} pp",
                         v - low, C9_SATURATION_PP, v - low <= C9_SATURATION_PP)
                  for k, v in al.items() if k.setting != "software" and k.eps == "32/255"
                  if (low := al.get(replace(k, eps="8/255"))) is not None]
    return _below_software("fig5", res.get("fig5", [])) + _below_software("fig6", res.get("fig6", [])) + saturation


def _c7(res):
    """Fig. 9 (32x32, FGSM): discretized crossbar rows flat over eps 0.1..0.3; 4-bit input the lowest AL of the
    crossbar rows at eps 0.25 and 0.3; 2-bit input lower CA than 4-bit and a higher mean AL."""
    rows = res.get("fig9", [])
    al = _mean_al(rows)
    checks = []
    for k in dict.fromkeys(replace(k, eps="") for k in al if k.setting != "software" and k.input):
        values = [al[key] for e in ("0.1", "0.15", "0.2", "0.25", "0.3") if (key := replace(k, eps=e)) in al]
        if len(values) > 1:
            spread = max(values) - min(values)
            checks.append(compare(f"fig9 {k.setting} {k.mode} {k.input} AL spread eps 0.1..0.3 vs {C7_FLAT_PP:g} pp",
                                 spread, C7_FLAT_PP, spread <= C7_FLAT_PP))
    for k, v in al.items():
        if k.setting != "software" and k.input == "4-bit input" and k.eps in ("0.25", "0.3"):
            for other in ("", "8-bit input", "2-bit input"):
                if (o := al.get(replace(k, input=other))) is not None:
                    checks.append(compare(f"fig9 {k.setting} {k.mode} eps {k.eps} AL 4-bit input vs {other or 'no discretization'}",
                                         v, o, v < o))
    ca = group_values(rows, lambda r: (setting_label(r), r["mode"], input_label(r)), "CA")
    for (setting, mode, label), v in ca.items():
        if label == "2-bit input" and (four := ca.get((setting, mode, "4-bit input"))):
            checks.append(compare(f"fig9 {setting} {mode} CA 2-bit vs 4-bit input", np.mean(v), np.mean(four),
                                 np.mean(v) < np.mean(four)))
            al2 = [v2 for k2, v2 in al.items() if (k2.setting, k2.mode, k2.input) == (setting, mode, label)]
            al4 = [v2 for k2, v2 in al.items() if (k2.setting, k2.mode, k2.input) == (setting, mode, "4-bit input")]
            checks.append(compare(f"fig9 {setting} {mode} mean AL 2-bit vs 4-bit input", np.mean(al2), np.mean(al4),
                                 np.mean(al2) > np.mean(al4)))
    return checks


def _c8(res):
    al = _mean_al(res.get("table3", []))
    return [compare(f"table3 {k.setting} {k.mode} eps {k.eps} AL vgg8q vs vgg8", v, f, v < f)
            for k, v in al.items() if k.model == "vgg8q" and k.setting != "software"
            if (f := al.get(replace(k, model="vgg8"))) is not None]


def _c10(res):
    """Fig. 10 (VGG16, 32x32): FGSM: AL(SH) below 4-bit input and QUANOS (SW); PGD: QUANOS < SH < 4-bit input."""
    al = _mean_al(res.get("fig10", []))
    checks = []
    for k, sh in al.items():
        if k.model != "vgg16" or k.mode != "SH":
            continue
        four = al.get(replace(k, physics="", setting="software", mode="SW", input="4-bit input"))
        quanos = al.get(replace(k, model="vgg16q", physics="", setting="software", mode="SW"))
        if four is not None:
            checks.append(compare(f"fig10 {k.attack} eps {k.eps} AL SH vs 4-bit input", sh, four, sh < four))
        if quanos is not None and k.attack == "fgsm":
            checks.append(compare(f"fig10 fgsm eps {k.eps} AL SH vs QUANOS", sh, quanos, sh < quanos))
        elif quanos is not None:
            checks.append(compare(f"fig10 {k.attack} eps {k.eps} AL QUANOS vs SH", quanos, sh, quanos < sh))
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


def _verdict(checks: list[Comparison]) -> tuple[str, str]:
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
