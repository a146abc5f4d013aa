"""The report section "Adaptive attackers" (docs/protocol.md section 13.4): per threat matrix, how much of the
chips' adversarial accuracy over software survives each attacker; APGD against PGD-10; stochastic hardware."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nxbar.reproducibility import from_bits
from nxbar.study import stats
from nxbar.study.adaptive import Adaptive, threat_files
from nxbar.study.nonideality import attack_label
from nxbar.study.results import markdown_table, read_rows
from nxbar.study.robustness import folder, load_outcomes
from nxbar.threats import KNOWS

ATTACKER_MODE = {"software": "SH", "white-box": "HH"}


def _ci(diff, lo, hi) -> str:
    return f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def threat_gains(report: dict) -> list[dict]:
    """Per attacker: AA on the chips minus AA of SW (the white-box attack on the software model), pp, paired per
    image with the victim chips as the outer level; CI, McNemar p, Holm p over the attackers, verdict (claimed:
    the chips keep more)."""
    rows = {(r["attacker"], r["victim"]): r for r in report["rows"]}
    sw = from_bits(rows[("white-box", "software")]["outcomes"]["adv_correct"]).astype(np.int8)
    out = []
    for (attacker, victim), r in rows.items():
        if victim == "chips":
            adv = np.stack([from_bits(p["outcomes"]["adv_correct"]) for p in r["per_seed"]]).astype(np.int8)
            d = adv - sw[None]
            diff, ci, p = stats.paired_summary(d)
            out.append({"attacker": attacker, "AA": r["AA"], "diff": diff, "ci": ci, "p": p})
    for g, p in zip(out, stats.holm([g["p"] for g in out])):
        g["p_holm"], g["verdict"] = float(p), stats.verdict(g["diff"], g["ci"], p, 1)
    return out


def _threat_lines(path: Path, names: tuple, size: int) -> list[str]:
    if not path.is_file():
        return [f"`threats/{path.name}` ({'/'.join(names)} {size}x{size}): not run yet.", ""]
    report = json.loads(path.read_text())
    gains = threat_gains(report)
    checks = [c for cs in report["checks"].values() for c in cs]
    body = [[g["attacker"] + (f" ({ATTACKER_MODE[g['attacker']]})" if g["attacker"] in ATTACKER_MODE else ""),
             KNOWS[g["attacker"]], f"{g['AA']:.2f}", _ci(g["diff"], *g["ci"]), g["verdict"]] for g in gains]
    by = {g["attacker"]: g for g in gains}
    sh = by.get("software")
    survives = [g["attacker"] for g in gains if g["verdict"] == "holds" and g["attacker"] != "software"]
    if sh is None or sh["verdict"] != "holds":
        verdict = "SH keeps no more adversarial images than software beyond noise here, so there is no advantage to lose."
    else:
        verdict = (f"SH's advantage over software, {_ci(sh['diff'], *sh['ci'])} pp, survives "
                   + (", ".join(survives) if survives else "none of the adaptive attackers") + ".")
    a = report["attack"]
    return [f"`threats/{path.name}`: {'/'.join(names)} point, {size}x{size}, {a['attack'].upper()}-{a['steps']} "
            f"eps {a['eps'] * 255:g}/255, {report['n_images']} images, victim chips "
            f"{', '.join(map(str, report['victims']))}; sanity checks {sum(c['passed'] for c in checks)}/"
            f"{len(checks)} pass. {verdict}", "",
            markdown_table(["attacker", "knows", "AA chips (%)", "AA gained over SW (pp, 95% CI)", "verdict"], body), ""]


def _apgd_lines(study_dir: Path, design: Adaptive) -> list[str]:
    rows = read_rows(study_dir / "adaptive.csv")
    if not rows:
        return ["APGD: not run yet.", ""]
    same = ("mode", "xbar", "chip_seed", "r_on_ohm", "r_off_ohm", "sigma", "parasitic_scale", "attack_seed")
    pgd = {tuple(r[k] for k in same): r for r in read_rows(study_dir / "attacks.csv")
           if r["attack"] == "pgd" and abs(float(r["eps"]) - design.apgd.eps) < 1e-12 and r["mode"] in ("SW", "HH")}
    body, steps = [], ""
    for r in rows:
        other = pgd.get(tuple(r[k] for k in same))
        if other is None:
            continue
        steps = other["steps"]
        a = load_outcomes(study_dir / "outcomes" / r["outcomes"])["adv_correct"]
        b = load_outcomes(study_dir / "outcomes" / other["outcomes"])["adv_correct"][: len(a)]
        d = (a.astype(np.int8) - b.astype(np.int8))[None]
        diff, ci, _ = stats.paired_summary(d)
        body.append([r["mode"], r["xbar"], r["chip_seed"] or "-", f"{100 * b.mean():.1f}", f"{100 * a.mean():.1f}",
                     _ci(diff, *ci)])
    pgd_label = f"PGD-{steps}"
    return [f"{attack_label(design.apgd)} beside the robustness study's {pgd_label} from the same start (first "
            f"{design.n} images; AA in %):", "",
            markdown_table(["mode", "xbar", "chip", f"AA {pgd_label}", f"AA {attack_label(design.apgd)}",
                 f"APGD - {pgd_label} (pp, CI)"], body), ""]


def _stochastic_lines(path: Path) -> list[str]:
    if not path.is_file():
        return ["Stochastic hardware: not run yet.", ""]
    rec = json.loads(path.read_text())
    cfg, a = rec["config"], rec["attack"]
    body = [[name, f"{c['CA']:.1f}", f"{c['AA']:.1f}"] for name, c in rec["cells"].items()]
    comp = [[c["comparison"], c["view"], _ci(c["diff"], c["ci_low"], c["ci_high"]), f"{c['p_holm']:.3g}", c["verdict"]]
            for c in rec["vs_SH"]]
    by = {(c["comparison"], c["view"]): c["verdict"] for c in rec["vs_SH"]}
    one = by.get(("HH one read vs SH", "AA"))
    eot = [k for k in rec["variants"] if k.startswith("HH EOT")]
    weaker = ("appears: HH with one read's gradient keeps significantly more images correct than SH" if one == "holds"
              else "does not appear: HH with one read's gradient does not keep more images correct than SH beyond noise")
    after = ", ".join(f"{k}: {by.get((f'{k} vs SH', 'AA'))}" for k in eot)
    return [f"Stochastic hardware ({cfg['size']}x{cfg['size']}, {rec['point']} point, sigma {cfg['sigma']:g} drawn "
            f"afresh at every read, PGD-{a['steps']} eps {a['eps'] * 255:g}/255, {rec['n']} images): C4's direction "
            f"(HH weaker than SH) {weaker}. Against SH with EOT: {after}.", "",
            markdown_table(["variant", "CA (%)", "AA (%)"], body), "",
            markdown_table(["comparison", "view", "diff (pp, 95% CI)", "p Holm", "verdict (claimed: HH weaker)"], comp), ""]


def section(out: str | Path, design: Adaptive) -> list[str]:
    """The report's "Adaptive attackers" lines for the adaptive runs stored in `out`."""
    out = Path(out)
    study_dir = folder(out, design.study.quick)
    lines = ["## Adaptive attackers (docs/protocol.md section 13)", ""]
    points_path = study_dir / "points.json"
    if not points_path.is_file():
        return lines + ["Not run: the robustness study has not chosen its points yet (`nxbar robustness`).", ""]
    points = json.loads(points_path.read_text())["points"]
    lines += ["Made by `nxbar adaptive` at the robustness study's points. AA gained = AA of an attacker's images on "
              "the chips minus AA of SW, paired per image, chips as the outer level (95% bootstrap CI, McNemar's "
              "exact test, Holm over a matrix's attackers).", ""]
    for path, (names, size, _) in threat_files(design, points, out).items():
        lines += _threat_lines(path, names, size)
    return lines + _apgd_lines(study_dir, design) + _stochastic_lines(study_dir / "stochastic.json")
