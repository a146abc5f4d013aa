"""Measure how the stored cheap cells move across OpenBLAS kernels; write reference_results/reproducibility.json.

    python tools/kernel_drift.py [--kernels Haswell,SkylakeX,Sandybridge,Zen] [--reference Haswell]

Each kernel runs in its own process with OPENBLAS_CORETYPE set (the process checks that OpenBLAS really runs
it), computes the per-image outcomes of the FGSM cells below on the 1,000 embedded images and the input
gradients the attack stepped along. The record gives, per kernel and cell: the counts, the images whose
outcome differs from the reference kernel's and their margins under both, how many gradient components
changed sign and how large they were relative to the image's largest component, and how many components
lie below float32 resolution (|g| < 2^-23 max|g|). The reference kernel's per-image outcomes are stored too:
tests/test_reference_results.py checks recomputed cells against them. A kernel the CPU cannot run (e.g.
SkylakeX without AVX-512) is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "reference_results"
sys.path.insert(0, str(REPO))

import nxbar  # noqa: E402
from nxbar import reproducibility as rx  # noqa: E402
from nxbar.evaluation import as_float  # noqa: E402
from nxbar.study.results import read_rows  # noqa: E402
from nxbar.study.runner import cell_runner  # noqa: E402

# The stored cells recomputed here: FGSM (one gradient per image) at 0.1, software and 16x16 crossbars,
# full-precision and QUANOS networks.
CELLS = [
    ("table1", {"mode": "SW", "eps": "0.1", "eps_space": "pixel"}),
    ("table1", {"mode": "HH", "xbar": "16", "eps": "0.1", "eps_space": "pixel", "chip_seed": "0"}),
    ("table3", {"model": "vgg8q", "mode": "HH", "xbar": "16", "eps": "0.1", "chip_seed": "0"}),
    ("fig10", {"model": "vgg16q", "attack": "fgsm", "eps": "0.1"}),
]
FLOAT32_RESOLUTION = 2.0**-23


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    return next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), platform.machine())


def stored_row(name: str, match: dict) -> dict:
    return next(r for r in read_rows(RESULTS / f"{name}.csv") if all(r[k] == v for k, v in match.items()))


def worker(out: Path, cache_dir: str) -> None:
    """In this process's kernel: outcomes and clean-image input gradients of every cell, into `out` (npz)."""
    arrays = {key: np.array(value) for key, value in rx.blas().items()}
    for i, (name, match) in enumerate(CELLS):
        cell, runner = cell_runner(name, stored_row(name, match), cache_dir=cache_dir)
        for key, value in rx.outcomes(runner, cell).items():
            arrays[f"{i}_{key}"] = value
        net = runner.network(cell)
        grads = [net.loss_and_input_grad(as_float(runner.images[s : s + 200], net.dtype), runner.labels[s : s + 200])[1]
                 for s in range(0, len(runner.labels), 200)]
        arrays[f"{i}_grad"] = np.concatenate(grads)
        print(f"  {name} {match}: {int(arrays[f'{i}_adv_correct'].sum())} adversarial images correct", flush=True)
    np.savez(out, **arrays)


def compare(ref: dict, other: dict, i: int) -> dict:
    """One cell under another kernel against the reference kernel."""
    a, b = (dict((k, d[f"{i}_{k}"]) for k in ("clean_correct", "adv_correct", "adv_margin")) for d in (ref, other))
    moved = rx.moved(a, b)
    g_ref, g = ref[f"{i}_grad"], other[f"{i}_grad"]
    scale = np.abs(g_ref).reshape(len(g_ref), -1).max(axis=1).reshape(-1, 1, 1, 1)
    flipped = np.sign(g_ref) != np.sign(g)
    relative = np.abs(g_ref) / scale
    per_image_flips = flipped.reshape(len(g), -1).sum(axis=1)
    return {
        "clean_correct": int(b["clean_correct"].sum()), "adv_correct": int(b["adv_correct"].sum()),
        "moved_images": [int(k) for k in moved],
        "moved_margin_reference": [round(float(a["adv_margin"][k]), 6) for k in moved],
        "moved_margin_here": [round(float(b["adv_margin"][k]), 6) for k in moved],
        "moved_sign_flips": [int(per_image_flips[k]) for k in moved],
        "images_with_sign_flips": int(np.count_nonzero(per_image_flips)),
        "gradient_sign_flips": int(flipped.sum()),
        "largest_flipped_relative_gradient": float(relative[flipped].max()) if flipped.any() else 0.0,
        "max_abs_margin_change": float(np.max(np.abs(a["adv_margin"] - b["adv_margin"]))),
        "max_abs_margin_change_without_sign_flips": float(np.max(np.abs(a["adv_margin"] - b["adv_margin"])[
            per_image_flips == 0])),
        "margin_moved_images": len(rx.margin_moved(a, b)),
        "components_below_float32_resolution": int(np.sum(relative < FLOAT32_RESOLUTION)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default="Haswell,SkylakeX,Sandybridge,Zen")
    parser.add_argument("--reference", default="Haswell",
                        help="The kernel whose per-image outcomes are stored (it must give the stored counts).")
    parser.add_argument("--out", default=str(RESULTS / "reproducibility.json"))
    parser.add_argument("--work", default=None,
                        help="Folder for each kernel's outcomes (KERNEL.npz) [default: a new temporary folder]; "
                             "a kernel whose file is there already is not run again, so a stopped run resumes.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker), args.cache_dir)

    kernels = args.kernels.split(",")
    if args.reference not in kernels:
        kernels.insert(0, args.reference)
    runs, skipped = {}, {}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    for kernel in kernels:
        path = work / f"{kernel}.npz"
        print(f"{kernel}:" + (f" kept from {path}" if path.is_file() else ""), flush=True)
        if not path.is_file():
            env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
            done = subprocess.run([sys.executable, __file__, "--worker", str(path), "--cache-dir", str(work / kernel)],
                                  env=env, capture_output=True, text=True)
            print(done.stdout, end="", flush=True)
            if done.returncode != 0:
                skipped[kernel] = (done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                                   else f"exit {done.returncode}")
                continue
        with np.load(path) as f:
            runs[kernel] = dict(f)
        if str(runs[kernel]["kernel"]) != kernel:  # OpenBLAS falls back to another kernel when told an unknown one
            skipped[kernel] = f"OpenBLAS ran {runs.pop(kernel)['kernel']} instead"
    ref = runs[args.reference]
    cells = []
    for i, (name, match) in enumerate(CELLS):
        row = stored_row(name, match)
        out = {k: ref[f"{i}_{k}"] for k in ("clean_correct", "adv_correct", "adv_margin")}
        counts = {"clean_correct": int(out["clean_correct"].sum()), "adv_correct": int(out["adv_correct"].sum())}
        stored = {"clean_correct": int(row["clean_correct"]), "adv_correct": int(row["adv_correct"])}
        if counts != stored:
            raise SystemExit(f"{name} {match}: the reference kernel {args.reference} gives {counts}, the stored "
                             f"table {stored}; choose the kernel that made the stored tables as --reference")
        cells.append({"experiment": name, "match": match, "n": len(out["adv_correct"]), "stored": stored,
                      "outcomes": rx.to_record(out)})
    record = {
        "how": "python tools/kernel_drift.py --kernels " + ",".join(kernels) + f" --reference {args.reference}",
        "description": __doc__.split("\n\n")[2].replace("\n", " ").strip(),
        "cpu": cpu_name(), "versions": nxbar.versions(),
        "blas_config": str(ref["config"]), "reference_kernel": args.reference,
        "kernels_run": sorted(runs), "kernels_skipped": skipped,
        "tolerance_images": rx.TOLERANCE_IMAGES, "margin_tolerance_logits": rx.MARGIN_TOLERANCE_LOGITS,
        "margin_moved_fraction": rx.MARGIN_MOVED_FRACTION, "cells": cells,
        "drift": {k: [compare(ref, runs[k], i) for i in range(len(CELLS))] for k in runs if k != args.reference},
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
