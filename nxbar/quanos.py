"""QUANOS (Panda, arXiv 2004.11233), docs/protocol.md section 6.2: Adversarial Noise Sensitivity (ANS) of every
MVM layer and the rule that turns ANS into per-layer bit widths.

    ANS_l = (1/N) sum_n ||a_l(x_adv_n) - a_l(x_n)||_2 / ||a_l(x_n)||_2

a_l(x_n) = all outputs of MVM layer l for image n (`VGG.activations`: a conv layer's output before
BatchNorm, an FC layer's x W^T + b before the ReLU); the norm runs over all of them. Batch average:
the mean of the per-image ratios (every image weighs the same whatever its activation norm), not the
pooled ratio sum_n ||diff_n|| / sum_n ||a_n||. ANS is dimensionless.

Rule ANS -> bits (`bits_from_ans`): the most sensitive layers get the fewest bits (QUANOS: a layer
that amplifies adversarial noise is made less precise, which dampens the noise).
"""

from __future__ import annotations

import numbers

import numpy as np

from nxbar.crossbar.config import MAX_BITS
from nxbar.evaluation import AttackConfig, make_adversarial

# Widths handed out by ANS rank when none are given: the more sensitive half of the layers 2 bits, the rest 4.
DEFAULT_WIDTHS = (2, 4)


def adversarial_noise_sensitivity(model, x, x_adv, *, batch_size: int = 64) -> dict[str, float]:
    """ANS_l of every MVM layer of `model` (anything with `activations(x) -> {layer: (N, ...)}`, e.g. a VGG
    or a MappedModel) for clean images x and their adversarial versions x_adv (same shape, NHWC, [0, 1]).

    Returns {layer name: ANS_l} in network order. `batch_size` images are propagated at a time; the
    result does not depend on it. An image whose clean activation of a layer is all zero has no ratio:
    ValueError.
    """
    x, x_adv = np.asarray(x), np.asarray(x_adv)
    if x.shape != x_adv.shape or x.ndim == 0 or len(x) == 0:
        raise ValueError(f"x and x_adv must be batches of the same non-zero shape, got {x.shape} and {x_adv.shape}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    total: dict[str, float] = {}
    for s in range(0, len(x), batch_size):
        clean, adv = model.activations(x[s:s + batch_size]), model.activations(x_adv[s:s + batch_size])
        for name, a in clean.items():
            a = a.reshape(len(a), -1).astype(np.float64)
            diff = adv[name].reshape(len(a), -1).astype(np.float64) - a
            norm = np.linalg.norm(a, axis=1)
            if np.any(norm == 0):
                n = s + int(np.argmax(norm == 0))
                raise ValueError(f"layer {name} has an all-zero clean activation for image {n}: ANS undefined")
            total[name] = total.get(name, 0.0) + float(np.sum(np.linalg.norm(diff, axis=1) / norm))
    return {name: v / len(x) for name, v in total.items()}


def attack_ans(model, images, labels, cfg: AttackConfig, *, batch_size: int = 64) -> dict[str, float]:
    """ANS of every MVM layer of `model` under attack `cfg`, the adversarial images made on `model` itself
    (`nxbar.evaluation.make_adversarial`); images NHWC uint8 or floats in [0, 1]."""
    x_adv = make_adversarial(model, images, labels, cfg, batch_size=batch_size)
    return adversarial_noise_sensitivity(model, images, x_adv, batch_size=batch_size)


def bits_from_ans(ans: dict[str, float], widths) -> dict[str, int]:
    """Per-layer bit widths from ANS; returns {layer name: bits} in the order of `ans` (network order, so
    `tuple(result.values())` is a CrossbarConfig.layer_bits).

    Rule: rank the layers by ANS, highest first (equal ANS: network order); cut the ranking into
    len(widths) consecutive groups whose sizes differ by at most one, the larger groups first
    (numpy.array_split); group g gets the g-th smallest width. So the most sensitive layers get the
    fewest bits. Example: 7 layers, widths (2, 4) -> the 4 highest-ANS layers 2 bits, the other 3 4 bits.
    """
    names = list(ans)
    values = np.array([ans[n] for n in names], dtype=np.float64)
    if not names or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"ans must map at least one layer name to a finite ANS >= 0, got {ans!r}")
    widths = tuple(widths)
    ok = all(isinstance(b, numbers.Integral) and not isinstance(b, bool) and 1 <= b <= MAX_BITS for b in widths)
    if not widths or not ok or len(set(widths)) != len(widths) or len(widths) > len(names):
        raise ValueError(f"widths must be 1..{len(names)} distinct integers in 1..{MAX_BITS} "
                         f"(at most one per layer), got {widths!r}")
    ranking = np.argsort(-values, kind="stable")
    bits = {}
    for width, group in zip(sorted(widths), np.array_split(ranking, len(widths))):
        bits.update((names[i], int(width)) for i in group)
    return {n: bits[n] for n in names}
