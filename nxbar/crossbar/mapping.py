"""Weights to conductances and back (docs/protocol.md sections 4.3-4.6, docs/physics.md section 8), one equation
per function.

Units: conductances in siemens, weights in the network's own units. Matrices are crossbar
matrices (rows = inputs, columns = outputs), see nxbar.models.layers for the unrolling (4.1)
and nxbar.crossbar.tiling for padding and cutting into tiles (4.2).
"""

from __future__ import annotations

import numpy as np

# Polarity of a crossbar in the differential pair; part of the chip's random-stream key.
POSITIVE, NEGATIVE = 0, 1

# Floor of a varied conductance, as a fraction of G_min (docs/protocol.md section 4.4: G stays > 0).
# G (1 + sigma z) <= 0 happens when z <= -1/sigma: probability 8e-24 at sigma = 0.1 (never in
# practice), 4e-4 at sigma = 0.3, 2% at sigma = 0.5. A real device cannot have G <= 0; the
# draw is read as a device left practically open, G_floor = 1e-3 G_min (200 MOhm at the
# default R_off = 200 kOhm). Clipping (rather than redrawing) keeps every other device's draw,
# and so the chip for a given seed, unchanged whatever sigma is.
G_FLOOR_FRACTION = 1e-3


def weight_scale(matrix: np.ndarray) -> float:
    """w_max = max |W| over the layer (docs/protocol.md section 4.3); the weight that maps onto G_max."""
    return float(max(np.max(matrix), -np.min(matrix)))


def quantize_levels(u: np.ndarray, bits: int | None) -> np.ndarray:
    """Round u in [0, 1] to the nearest of the 2^b uniform levels k / (2^b - 1), k = 0..2^b-1
    (docs/protocol.md section 4.3).

    u_q = round(u (2^b - 1)) / (2^b - 1); exact halves round to the even k (numpy's rint).
    bits=None returns u unchanged (analog conductances).
    """
    if bits is None:
        return u
    n = 2**bits - 1
    return np.rint(u * n) / n


def quantize_weights(weights: np.ndarray, bits: int | None) -> np.ndarray:
    """The weights a layer represents at `bits` precision with ideal devices (docs/protocol.md sections 4.3 and
    6.2, QUANOS):

        W_q = sign(W) w_max q(|W| / w_max),    w_max = max |W| over the layer,  q = `quantize_levels`

    the differential pair's (G+ - G-) w_max / (G_max - G_min) without variation and parasitics, so a
    network whose weights are W_q maps onto `bits`-level conductances without further rounding.
    Any shape (a conv weight and its crossbar matrix hold the same values); the dtype is kept.
    bits=None returns the weights unchanged.
    """
    weights = np.asarray(weights)
    if bits is None:
        return weights
    w_max = weight_scale(weights)
    if w_max == 0:
        return weights.copy()
    q = quantize_levels(np.abs(weights.astype(np.float64)) / w_max, bits)
    return (np.sign(weights) * w_max * q).astype(weights.dtype)


def conductance_pair(
    matrix: np.ndarray, g_min_s: float, g_max_s: float, bits: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Differential pair of one layer's crossbar matrix W (docs/protocol.md section 4.3); returns
    (G_plus, G_minus, w_max).

        G+ = G_min + (G_max - G_min) q(max(W, 0) / w_max)
        G- = G_min + (G_max - G_min) q(max(-W, 0) / w_max)

    with q the optional `bits` quantisation of |W| / w_max (`quantize_levels`). Conductances in
    siemens, float64. A layer of all-zero weights (w_max = 0) gives G+ = G- = G_min.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if not np.all(np.isfinite(matrix)):
        raise ValueError("matrix must hold finite weights, got NaN or infinity")
    w_max = weight_scale(matrix)
    scale = 1.0 / w_max if w_max > 0 else 0.0
    span = g_max_s - g_min_s
    g_plus = g_min_s + span * quantize_levels(np.maximum(matrix, 0.0) * scale, bits)
    g_minus = g_min_s + span * quantize_levels(np.maximum(-matrix, 0.0) * scale, bits)
    return g_plus, g_minus, w_max


def chip_rng(seed: int, layer_index: int, polarity: int) -> np.random.Generator:
    """Random stream of one crossbar polarity of one layer of chip `seed` (docs/protocol.md section 4.4).

    The stream is the SeedSequence child of `seed` with spawn key (layer_index, polarity), so
    each layer's draw depends only on (seed, layer_index, polarity), never on other layers.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(layer_index, polarity)))


def apply_variation(g: np.ndarray, sigma: float, rng: np.random.Generator, g_min_s: float) -> np.ndarray:
    """Device-to-device variation (docs/protocol.md section 4.4):
    G <- max(G (1 + sigma z), G_FLOOR_FRACTION G_min), z ~ N(0, 1).

    One independent z per device of `g` (padded devices included), drawn from `rng` in C order.
    """
    varied = rng.standard_normal(np.shape(g))
    varied *= sigma  # in place, one array for the layer: G (1 + sigma z), then the floor
    varied += 1.0
    varied *= g
    return np.maximum(varied, G_FLOOR_FRACTION * g_min_s, out=varied)


def effective_weights(
    t_plus: np.ndarray, t_minus: np.ndarray, w_max: float, g_min_s: float, g_max_s: float
) -> np.ndarray:
    """Effective weights read back from the solved crossbars (docs/protocol.md section 4.6):
    W' = (T+ - T-) w_max / (G_max - G_min)."""
    return (t_plus - t_minus) * (w_max / (g_max_s - g_min_s))
