"""The study's report (docs/protocol.md section 10): `<out>/README.md` with our tables beside the paper's, a
verdict for each claim C1..C11 (for the claims that compare AL, also made on AA alone, since a lower clean
accuracy lowers AL too), and from the stored `nxbar threats` matrices (`<out>/threats/*.json`) which attacker
the chips' robustness survives, with the gradient-masking sanity checks."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from nxbar.attacks import eps_label
from nxbar.evaluation import METRICS
from nxbar.sanity import describe
from nxbar.study.claims import (C6_TOLERANCE_PP, C7_FLAT_PP, C9_SATURATION_PP, CLAIMS, SATURATED_AA_PCT,
                                saturated_failures, verdicts, verdicts_in_aa)
from nxbar.study import adaptive_report, robustness_report
from nxbar.study.adaptive import FULL_ADAPTIVE
from nxbar.study.grid import DATASET, EXPERIMENTS, experiment_cells
from nxbar.study.nonideality import FULL
from nxbar.study.results import (group_values, load_results, load_threats, markdown_table, paper_table, series_values,
                                 setting_label, timed_cells)
from nxbar.threats import KNOWS, robustness
from nxbar.weights import shipped_weights_dir

def _stat(values: list[float]) -> str:
    """A value, or the mean ± sample std over the chip seeds."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({len(values)} chips)"


def _attack_table(rows: list[dict], paper: dict) -> str:
    """One markdown table per (attack, eps space): a row per series, a column per eps, chip-seed means."""
    means = series_values(rows, "AL")
    out = []
    for attack, space in dict.fromkeys((k.attack, k.eps_space) for k in means):
        keys = [k for k in means if (k.attack, k.eps_space) == (attack, space)]
        cols = list(dict.fromkeys(k.eps for k in keys))
        body = []
        for g in dict.fromkeys(replace(k, eps="") for k in keys):
            cells = []
            for eps in cols:
                key = replace(g, eps=eps)
                ours = _stat(means[key]) if key in means else "-"
                ref = None if g.input else paper.get((g.model, g.setting, g.mode, eps),
                                                     paper.get((None, g.setting, g.mode, eps)))
                cells.append(ours if ref is None else f"{ours} / {ref:g}")
            body.append([g.model, g.physics or "-", g.input or "-", g.setting, g.mode, *cells])
        note = " (ours / paper)" if paper else ""
        out.append(f"{attack.upper()}: AL in percentage points, eps in {space} units{note}:\n\n"
                   + markdown_table(["model", "physics", "input", "setting", "mode", *cols], body))
    return "\n\n".join(out)


def _clean_table(rows: list[dict]) -> str:
    ca = group_values(rows, lambda r: (r["model"], setting_label(r)), "CA")
    cols = list(dict.fromkeys(s for _, s in ca))
    body = [[m, *[_stat(ca[(m, c)]) if (m, c) in ca else "-" for c in cols]] for m in dict.fromkeys(m for m, _ in ca)]
    return "Clean accuracy CA in percent:\n\n" + markdown_table(["model", *cols], body)


def _nf_table(rows: list[dict]) -> str:
    sizes = list(dict.fromkeys(r["xbar"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    nf = {(r["layer"], r["xbar"]): float(r["nf"]) for r in rows}
    body = [[layer, *[f"{nf[(layer, s)]:.4f}" if (layer, s) in nf else "-" for s in sizes]] for layer in layers]
    return ("NF (docs/protocol.md section 3); layer 'tiles' = 64 random tiles:\n\n"
            + markdown_table(["layer", *[f"xbar{s}" for s in sizes]], body))


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
        lines += [markdown_table(["attacker", "knows", "AL software", "AL chips", "gap to SW (pp)", "of it CA lost",
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
                  markdown_table(["target", "check", "verdict", "numbers"], body), ""]
    return lines


def _file_names(text: str) -> str:
    """`text` with every absolute path in it cut to its file name, so that the report reads the same wherever it
    is made and does not print the folders of the machine that made a record: a weight file's json records its
    training data as "/data/cifar-10-images-jpeg.zip", and the report prints "cifar-10-images-jpeg.zip"."""
    path = r"(?<![^\s(`'\"])/[^\s,;`'\"()]*[^\s,;`'\"().]"  # starts after a space, '(', '`' or a quote
    return re.sub(path, lambda m: os.path.basename(m.group(0)), text)


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
              markdown_table(["weight file", "model", "epochs", "final training loss", "1,000 embedded lossless test",
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
                  f"on the {_file_names(plan['ans_images'])}, measured on "
                  f"`{_file_names(plan['from']['weights'])}`. {' '.join(plan['rule'].split())}", "",
                  markdown_table(["layer", "ANS", "bits"], per_layer), "",
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
                 *(f"{row[k]:.2f}" for k in METRICS)] for row in r["results"]]
        lines += [f"`{r['command']}` ({name}): {r['model']['name']} on {r['data']['n_images']} images of "
                  f"{_file_names(r['data']['source'])}; wall time {t['total_s']:.0f} s "
                  f"(mapping {t.get('map_s', 0):.0f} s, attacks and evaluation {t['attack_s']:.0f} s), "
                  f"nxbar {r['versions'].get('nxbar', '?')}.", "",
                  markdown_table(["mode", "eps", *METRICS], body), ""]
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
    moved = "; ".join(f"{k}: {cell['experiment']} {' '.join(cell['match'].values())} image {i}, margin {a:+.4f} "
                      f"-> {b:+.4f}"
                      for k, cells in drift.items() for cell, c in zip(record["cells"], cells)
                      for i, a, b in zip(c["moved_images"], c["moved_margin_reference"], c["moved_margin_here"]))
    return ["## Reproducibility", "",
            f"A stored cell recomputes bit for bit on the BLAS kernel and library versions that made it: OpenBLAS's "
            f"{record['reference_kernel']} kernel" + (f" (and {', '.join(same)}, identical on every measured image)"
                                                      if same else "")
            + f", {record['blas_config'].split()[1]}, with the versions in `reproducibility.json`"
            + "".join(f" (OPENBLAS_CORETYPE={k}: {why})" for k, why in record["kernels_skipped"].items())
            + ". Another CPU kind "
            "runs another float32 kernel, which sums in another order, so logits and input gradients differ in "
            "their last bits; where the network is near a tie (a ReLU or max-pool decision within rounding) the "
            "gradient takes another path, FGSM moves some pixels the other way, and an image with a small margin "
            f"can flip. Measured with `{record['how']}` on {len(record['cells'])} FGSM cells of 1,000 images under "
            f"{', '.join(sorted(drift))}: {min(flipped)} to {max(flipped)} images per cell moved their adversarial "
            f"margin by more than {record['margin_tolerance_logits']:g} logits, all of them images with "
            "input-gradient components of the other sign (the images without agreed within "
            f"{max(c['max_abs_margin_change_without_sign_flips'] for c in runs):.0e} logits), and "
            f"{max(len(c['moved_images']) for c in runs)} image at most per cell and kernel changed its outcome "
            f"({moved or 'none'}). "
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


def write_report(out: str | Path, *, weights_dir: str | Path | None = None) -> Path:
    """Write `<out>/README.md` from the stored CSVs and threat matrices: claim verdicts with the sanity checks
    behind them, the networks of `weights_dir` (default: the shipped weights; accuracies, ANS and bits of the
    QUANOS ones), each table beside the paper's (`<out>/paper/`) with its figure (`<NAME>.png`, when drawn), then
    the threat-model section. Absolute paths in the records are printed as their file names."""
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
    lines += [markdown_table(["claim", "statement", "verdict", "numbers", "same comparisons in AA",
                         f"failures with AA <= {SATURATED_AA_PCT:g}% on both sides"], body), "",
              "AL = CA - AA, so a lower AL can come from a lower clean accuracy alone, which is no robustness. The "
              "fifth column makes each claim's AL comparisons on 100 - AA instead (the AL at 100% clean accuracy): "
              "it holds only where the better setting keeps more adversarial images correct. The last column counts "
              f"the failed comparisons that are saturated: both cells keep at most {SATURATED_AA_PCT:g}% of the images "
              "under attack, so AL is about CA on both sides and the comparison is one of clean accuracy (on 100 - AA "
              f"both sides lie within {SATURATED_AA_PCT:g} pp of 100, and a strict '<' fails on a tie).", "",
              _sanity_summary(threats), ""]
    lines += robustness_report.section(out, FULL)
    lines += adaptive_report.section(out, FULL_ADAPTIVE)
    lines += _reproducibility_section(out)
    lines += _networks_section(Path(weights_dir or shipped_weights_dir()))
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
                 else _attack_table(rows, paper_table(out, name)))
        lines += [table, ""]
        if (out / f"{name}.png").is_file():
            lines += [f"![{name}]({name}.png)", ""]
    lines += _threats_section(threats)
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
