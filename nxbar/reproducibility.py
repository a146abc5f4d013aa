"""What a stored number promises on another CPU: per-image outcomes of a cell, and how far two runs are apart.

nxbar's engine is deterministic: the same cell on the same CPU kind with the same library versions gives the
same counts bit for bit. Across CPU kinds it is not: OpenBLAS picks a float32 GEMM kernel per CPU (Haswell,
SkylakeX, Zen, ...), the kernels sum in different orders, and logits and input gradients differ in their last
bits. FGSM steps every pixel by +-eps along sign(dL/dx). Where the network is near a tie (a ReLU input or two
max-pool candidates within rounding of each other) the two kernels route the gradient differently: measured,
7-8% of the images get some input-gradient components of the other sign (tens per image, up to 9% of the
image's largest component, so not components at float32 resolution), FGSM moves those pixels the other way,
and their adversarial margins change by up to about one logit. An image whose margin is small then flips
its outcome. Every other image's margin agrees to float32 rounding (measured: within 4e-5 logits).
The measurement (tools/kernel_drift.py, stored in reference_results/reproducibility.json) sets the tolerances
below, which tests/test_reference_results.py asserts on any other kernel.

An image's outcome: whether the evaluated network classifies it correctly, clean and attacked, and its
adversarial margin m = z_y - max_{j != y} z_j (logits z of the attacked image, label y; m > 0: correct).
"""

from __future__ import annotations

import ctypes
from itertools import product
from pathlib import Path

import numpy as np

# Images per cell whose outcome (clean or adversarial correctness) may differ from the stored one on another CPU
# kind, for cells of 1,000 images. Measured: at most 1 per cell under SkylakeX and Sandybridge; 3 leaves room for
# kernels not measured.
TOLERANCE_IMAGES = 3
# An image's adversarial margin "moved" when it differs by more than this from the stored one (float32 rounding
# alone stays below 4e-5 logits), and at most this fraction of a cell's images may move so on another kernel
# (measured: at most 8.1%). A real change of the cell (another eps, chip, model, physics or attack) moves the
# margin of nearly every image.
MARGIN_TOLERANCE_LOGITS = 1e-3
MARGIN_MOVED_FRACTION = 0.2


def blas() -> dict:
    """{"kernel": the OpenBLAS core in use (e.g. 'Haswell'), "config": OpenBLAS's build string}, read from
    numpy's bundled OpenBLAS; None values when numpy uses another BLAS."""
    import numpy

    libs = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("libscipy_openblas*.so*")):
        lib = ctypes.CDLL(str(path))  # already loaded by numpy: the same library, not a second copy
        for prefix, suffix in product(("scipy_", ""), ("64_", "", "_64")):
            corename = getattr(lib, f"{prefix}openblas_get_corename{suffix}", None)
            config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
            if corename is not None and config is not None:
                corename.restype = config.restype = ctypes.c_char_p
                return {"kernel": corename().decode(), "config": config().decode()}
    return {"kernel": None, "config": None}


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """m_i = z_{i,y_i} - max_{j != y_i} z_{i,j} (float64): positive where image i is classified correctly."""
    z = np.asarray(logits, dtype=np.float64)
    true = z[np.arange(len(labels)), labels]
    others = z.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return true - others.max(axis=1)


def logits(net, images: np.ndarray, batch_size: int = 200) -> np.ndarray:
    """The network's logits of `images` (uint8 or float in [0, 1]), in batches."""
    from nxbar.evaluation import as_float

    return np.concatenate([net.forward(as_float(images[s : s + batch_size], net.dtype))
                           for s in range(0, len(images), batch_size)])


def outcomes(runner, cell, clean_memo: dict | None = None) -> dict[str, np.ndarray]:
    """Per-image outcomes of `cell` on the runner's images (`nxbar.study.runner.Runner`): clean_correct and
    adv_correct (bool), adv_margin (float64). Their sums are the cell's clean_correct and adv_correct counts.
    `clean_memo` (a dict) keeps the clean margins of the last network evaluated, for the next cell on it."""
    net = runner.network(cell)
    key = runner.net_key(cell)
    if clean_memo is not None and key in clean_memo:
        clean = clean_memo[key]
    else:
        clean = margins(logits(net, runner.images), runner.labels)
        if clean_memo is not None:
            clean_memo.clear()
            clean_memo[key] = clean
    adv = margins(logits(net, runner.adversarial_inputs(cell, net)), runner.labels)
    return {"clean_correct": clean > 0, "adv_correct": adv > 0, "adv_margin": adv}


def bits(flags) -> str:
    """Per-image flags as JSON text: a string of 0/1, image i is character i."""
    return "".join("01"[int(b)] for b in flags)


def from_bits(text: str) -> np.ndarray:
    """The inverse of `bits` (bool array)."""
    return np.array([c == "1" for c in text], dtype=bool)


def to_record(out: dict[str, np.ndarray]) -> dict:
    """Outcomes as JSON: the correct flags as `bits`, margins to 6 digits."""
    return {"clean_correct": bits(out["clean_correct"]), "adv_correct": bits(out["adv_correct"]),
            "adv_margin": [float(f"{m:.6g}") for m in out["adv_margin"]]}


def from_record(record: dict) -> dict[str, np.ndarray]:
    """The inverse of `to_record` (margins as stored, to 6 digits)."""
    return {"clean_correct": from_bits(record["clean_correct"]), "adv_correct": from_bits(record["adv_correct"]),
            "adv_margin": np.asarray(record["adv_margin"], dtype=np.float64)}


def moved(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of the images whose clean or adversarial outcome differs between two runs of a cell (`other`
    may cover only the first images of `reference`)."""
    n = len(other["adv_correct"])
    differ = (reference["adv_correct"][:n] != other["adv_correct"]) | (
        reference["clean_correct"][:n] != other["clean_correct"])
    return np.flatnonzero(differ)


def margin_moved(reference: dict[str, np.ndarray], other: dict[str, np.ndarray],
                 tolerance: float = MARGIN_TOLERANCE_LOGITS) -> np.ndarray:
    """Indices of the images whose adversarial margin differs by more than `tolerance` logits between two runs
    of a cell (`other` may cover only the first images of `reference`)."""
    n = len(other["adv_margin"])
    return np.flatnonzero(np.abs(reference["adv_margin"][:n] - other["adv_margin"]) > tolerance)
