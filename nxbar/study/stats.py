"""Paired statistics of per-image outcomes (docs/protocol.md section 12.4): a two-level bootstrap confidence
interval, McNemar's exact test, Holm's correction and the three-way verdict.

A comparison is an array d of shape (chips, images): for each chip and image, the outcome on "our" side minus
the outcome on the other side (1/0 correctness, so d is in {-1, 0, 1} for CA or AA, and in {-2, ..., 2} for
AL = clean - adversarial). The effect is 100 * mean(d), in percentage points.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

ALPHA = 0.05  # significance level after Holm's correction, and 1 - the confidence level of the intervals
RESAMPLES = 10_000
SEED = 0
VERDICTS = ("holds", "reversed", "not distinguishable")


def effect_pp(d: np.ndarray) -> float:
    """100 * mean(d): the difference in percentage points."""
    return 100.0 * float(np.mean(d))


def bootstrap_ci(d: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED,
                 level: float = 1 - ALPHA) -> tuple[float, float]:
    """Percentile confidence interval (pp) of 100 * mean(d), d of shape (chips, images), by a two-level paired
    bootstrap: each replicate draws the chips with replacement (the outer level) and the images with replacement
    (one draw for both sides, so the pairing is kept, and for every chip, since all chips see the same images).

    Replicate b's statistic: sum_c sum_i w_bc v_bi d_ci / (C n), with multinomial counts w (chips) and v
    (images). With one chip, this is the plain paired bootstrap over images. Vectorised in chunks.
    """
    d = np.atleast_2d(np.asarray(d, dtype=np.float64))
    n_chips, n = d.shape
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for s in range(0, resamples, 1000):
        b = min(1000, resamples - s)
        v = rng.multinomial(n, np.full(n, 1.0 / n), size=b)  # image counts, (b, n)
        w = rng.multinomial(n_chips, np.full(n_chips, 1.0 / n_chips), size=b)  # chip counts, (b, C)
        out[s : s + b] = np.einsum("bc,bc->b", w, v @ d.T) / (n_chips * n)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(100.0 * out, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_summary(d: np.ndarray, *, resamples: int = RESAMPLES) -> tuple[float, tuple[float, float], float]:
    """(effect in pp, its 95% CI, McNemar's exact p) of a comparison d (chips, images): `effect_pp`,
    `bootstrap_ci`, `paired_p`."""
    d = np.atleast_2d(d)
    return effect_pp(d), bootstrap_ci(d, resamples=resamples), paired_p(d)


def mcnemar_exact(ours_only: int, other_only: int) -> float:
    """McNemar's exact test (two-sided): among the pairs where the two sides disagree, `ours_only` favour our
    side and `other_only` the other; under no difference each is Binomial(ours_only + other_only, 1/2).
    p = 1 when no pair disagrees."""
    discordant = int(ours_only) + int(other_only)
    return 1.0 if discordant == 0 else float(stats.binomtest(int(ours_only), discordant, 0.5).pvalue)


def paired_p(d: np.ndarray) -> float:
    """McNemar's exact test on the images of a comparison d (chips, images): an image favours our side when its
    difference summed over the chips is positive, the other side when negative. With one chip and 1/0 outcomes
    this is McNemar's test on the 2x2 table of the paired outcomes; over several chips it is the exact sign test
    over images, which stay the independent units."""
    s = np.atleast_2d(np.asarray(d)).sum(axis=0)
    return mcnemar_exact(int(np.sum(s > 0)), int(np.sum(s < 0)))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order): with p_(1) <= ... <= p_(m),
    p_adj_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def verdict(diff: float, ci: tuple[float, float], p_holm: float, direction: int, alpha: float = ALPHA) -> str:
    """'holds' when the difference is significant in the claimed `direction` (+1: ours higher, -1: lower),
    'reversed' when significant against it, else 'not distinguishable'. Significant: Holm-corrected p < alpha
    and the confidence interval excludes 0 (both, so that the test and the interval never disagree)."""
    lo, hi = ci
    if not (p_holm < alpha and (lo > 0 or hi < 0)):
        return VERDICTS[2]
    return VERDICTS[0] if np.sign(diff) == direction else VERDICTS[1]


def verdict_no_gain(diff: float, ci: tuple[float, float], p_holm: float, gain: int, tolerance_pp: float,
                    alpha: float = ALPHA) -> str:
    """A claim that one side adds no robustness (gain = +1: a gain is a higher value, -1: a lower one):
    'reversed' when it is significantly better ('verdict' in the gain direction), 'holds' when the interval
    rules out a gain larger than `tolerance_pp`, else 'not distinguishable'."""
    lo, hi = ci
    if verdict(diff, ci, p_holm, gain, alpha) == VERDICTS[0]:
        return VERDICTS[1]
    bound = hi if gain > 0 else -lo
    return VERDICTS[0] if bound <= tolerance_pp else VERDICTS[2]


def claim_verdict(verdicts: list[str]) -> str:
    """A claim over several comparisons: 'reversed' if any is reversed, 'holds' if all hold, else 'not
    distinguishable'."""
    if not verdicts:
        return VERDICTS[2]
    if VERDICTS[1] in verdicts:
        return VERDICTS[1]
    return VERDICTS[0] if all(v == VERDICTS[0] for v in verdicts) else VERDICTS[2]
