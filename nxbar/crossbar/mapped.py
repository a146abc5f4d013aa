"""Crossbar-mapped layers and networks (docs/protocol.md section 4): the software network with W' in place of W.

Mapping one layer (`map_layer`), in the order of docs/protocol.md section 4:
  4.1 unroll the weight into its crossbar matrix W (rows = inputs, columns = outputs);
  4.3 differential pair G+, G- (optionally quantised to 2^b levels), w_max = max |W|;
  4.2 pad each with G_min to multiples of the crossbar size and cut into tiles;
  4.4 device variation on every device of every tile (padded ones too), one random stream
      per (chip seed, layer index, polarity);
  4.5 one batched exact circuit solve of all tiles of both polarities: T = transfer_matrix(G);
  4.6 W' = (T+ - T-) w_max / (G_max - G_min), assembled from the tiles and cut to the layer.
Padded rows are driven at 0 V and padded columns are not read, so cutting T back to the
layer's shape is exact; the padded devices still load the wires and so change T.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nxbar import cache as disk_cache
from nxbar.crossbar.circuit import nonideality_factor, transfer_matrix
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapping import (
    NEGATIVE,
    POSITIVE,
    apply_variation,
    chip_rng,
    conductance_pair,
    effective_weights,
)
from nxbar.crossbar.tiling import from_tiles, to_tiles
from nxbar.models.layers import conv_weight_to_matrix, fc_weight_to_matrix, matrix_to_conv_weight, matrix_to_fc_weight

# Random input vectors per layer for the NF in the report: the NF is averaged over every tile of
# the layer too, so a few vectors per tile already give a stable mean.
LAYER_NF_INPUTS = 8


def weight_to_matrix(w: np.ndarray) -> np.ndarray:
    """Crossbar matrix (inputs, outputs) of a conv (C_out, C_in, 3, 3) or FC (out, in) weight
    (docs/protocol.md section 4.1)."""
    if np.ndim(w) == 4:
        return conv_weight_to_matrix(w)
    if np.ndim(w) == 2:
        return fc_weight_to_matrix(w)
    raise ValueError(f"w must be a conv (C_out, C_in, 3, 3) or FC (out, in) weight, got shape {np.shape(w)}")


def matrix_to_weight(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `weight_to_matrix` for a weight of `shape`."""
    return matrix_to_conv_weight(m, shape[1]) if len(shape) == 4 else matrix_to_fc_weight(m)


def map_layer(w: np.ndarray, config: CrossbarConfig, layer_index: int) -> tuple[np.ndarray, dict]:
    """Map one conv/FC weight `w` onto crossbars; return (W' in w's layout and dtype, report dict).

    `layer_index` (0-based position among the network's MVM layers) selects the layer's random
    streams on chip `config.seed` and its precision `config.bits_of(layer_index)`. Report (JSON types): matrix_shape, grid (tile rows, tile
    columns), tiles (number of tiles, both polarities), w_max, nf (docs/physics.md section 6 NF over all the
    layer's tiles, programmed G vs solved T), mean_abs_dw_over_wmax = mean |W' - W| / w_max,
    solve_s (seconds in transfer_matrix).
    """
    if not isinstance(layer_index, (int, np.integer)) or isinstance(layer_index, bool) or layer_index < 0:
        raise ValueError(f"layer_index must be an integer >= 0, got {layer_index!r}")
    w = np.asarray(w)
    matrix = weight_to_matrix(w)
    g_min, g_max, size = config.g_min_s, config.g_max_s, config.size
    g_plus, g_minus, w_max = conductance_pair(matrix, g_min, g_max, config.bits_of(layer_index))
    tiles = []
    for polarity, g in ((POSITIVE, g_plus), (NEGATIVE, g_minus)):
        t, grid = to_tiles(g, size, g_min)
        tiles.append(apply_variation(t, config.sigma, chip_rng(config.seed, layer_index, polarity), g_min))
    g_tiles = np.concatenate(tiles)  # positive tiles, then negative tiles, each in row-major grid order
    start = time.perf_counter()
    t_tiles = transfer_matrix(g_tiles, **config.parasitics_ohm)
    solve_s = time.perf_counter() - start
    n = len(g_tiles) // 2
    w_eff = from_tiles(effective_weights(t_tiles[:n], t_tiles[n:], w_max, g_min, g_max), grid, matrix.shape)
    report = {
        "matrix_shape": list(matrix.shape),
        "grid": list(grid),
        "tiles": 2 * n,
        "w_max": w_max,
        "bits": config.bits_of(layer_index),
        "nf": nonideality_factor(g_tiles, t_tiles, n_inputs=LAYER_NF_INPUTS, seed=layer_index),
        "mean_abs_dw_over_wmax": float(np.mean(np.abs(w_eff - matrix)) / w_max) if w_max > 0 else 0.0,
        "solve_s": solve_s,
    }
    return matrix_to_weight(w_eff, w.shape).astype(w.dtype), report


class MappedModel:
    """A network whose MVM weights are the crossbar effective weights W' (docs/protocol.md section 4.6).

    Behaves as the software network with W' in place of W: every attribute not defined here
    (forward, predict, loss_and_input_grad, loss_and_grads, params, mvm_names, ...) is that of
    `hardware = software.with_params(W')`, so inference and its gradients are the software
    network's own exact code. Also: `software` (the original network), `config`, `report`
    (one dict per MVM layer, see `map_layer`, plus its name) and `cached` (loaded from disk).
    """

    def __init__(self, software, hardware, config: CrossbarConfig, report: list[dict], cached: bool = False):
        self.software, self.hardware, self.config, self.report, self.cached = software, hardware, config, report, cached

    def __getattr__(self, name):
        hardware = self.__dict__.get("hardware")  # via __dict__: no recursion while unpickling/copying
        if hardware is None:
            raise AttributeError(name)
        return getattr(hardware, name)

    def astype(self, dtype) -> MappedModel:
        """The same mapped network with parameters cast to `dtype` (e.g. float64 for gradient checks)."""
        software, hardware = self.software.astype(dtype), self.hardware.astype(dtype)
        return MappedModel(software, hardware, self.config, self.report, self.cached)


def map_model(
    model,
    config: CrossbarConfig,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> MappedModel:
    """Map every MVM layer of `model` (a VGG) onto crossbars of `config`; return the MappedModel.

    The i-th name of `model.mvm_names` is layer_index i (and config.layer_bits[i] its precision). With `cache` (default) the effective
    weights and report are loaded from / stored in the disk cache (nxbar.cache; `cache_dir`
    overrides its directory); an entry that is damaged, or does not hold every layer's W' with W's
    shape and dtype and its report, is mapped again and replaced. `progress(layer_name, layer_index, n_layers)` is called once per
    layer, after it is mapped (on a cache hit: for every layer, after loading).
    """
    if not isinstance(config, CrossbarConfig):
        raise ValueError(f"config must be a CrossbarConfig, got {type(config).__name__}")
    names = tuple(model.mvm_names)
    if config.layer_bits is not None and len(config.layer_bits) != len(names):
        raise ValueError(f"config.layer_bits has {len(config.layer_bits)} entries, the model has {len(names)} "
                         f"MVM layers ({', '.join(names)}); give one entry per layer")
    weights = {name: model.params[name] for name in names}
    key = disk_cache.mapping_key(weights, config.as_dict())
    expect = {name: (w.shape, w.dtype) for name, w in weights.items()}
    hit = (disk_cache.load(key, cache_dir, expect=expect, report_ok=lambda r: _reports_layers(r, names))
           if cache else None)
    mapped, report = hit if hit is not None else ({}, [])
    for i, name in enumerate(names):
        if hit is None:
            mapped[name], info = map_layer(weights[name], config, i)
            report.append({"name": name, **info})
        if progress is not None:
            progress(name, i, len(names))
    if cache and hit is None:
        disk_cache.save(key, mapped, report, cache_dir)
    return MappedModel(model, model.with_params(mapped), config, report, cached=hit is not None)


def _reports_layers(report: object, names: tuple[str, ...]) -> bool:
    """Whether a stored mapping report is a list of one dict per layer, named as `names` in that order."""
    return (isinstance(report, list) and len(report) == len(names)
            and all(isinstance(r, dict) and r.get("name") == name for r, name in zip(report, names)))


def random_tile_nf(config: CrossbarConfig, n_tiles: int = 16, seed: int = 0, n_inputs: int = 64) -> float:
    """NF (docs/physics.md section 6) of `n_tiles` random tiles of `config.size`, G uniform in [G_min, G_max],
    no variation.

    Only the size, R_on, R_off and the four parasitic resistances of `config` matter: the NF
    isolates the parasitics. `seed` seeds both the conductances and the input vectors.
    """
    if not isinstance(n_tiles, int) or n_tiles < 1:
        raise ValueError(f"n_tiles must be an integer >= 1, got {n_tiles!r}")
    rng = np.random.default_rng(seed)
    g = rng.uniform(config.g_min_s, config.g_max_s, size=(n_tiles, config.size, config.size))
    t = transfer_matrix(g, **config.parasitics_ohm)
    return nonideality_factor(g, t, n_inputs=n_inputs, seed=seed)
