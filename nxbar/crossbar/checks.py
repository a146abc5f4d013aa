"""Input validation of the crossbar's numbers (configuration fields, resistances, conductances, one tile and its
input voltages): a clear ValueError "NAME must be ALLOWED, got VALUE" for anything else."""

from __future__ import annotations

import math
import numbers

import numpy as np


def check_integer(name, value, low, high=None, prefix="") -> None:
    """A ValueError "name must be an integer >= low (or in low..high), got value" unless `value` is one (bools
    are not); `prefix` goes before the allowed range ("None (analog) or ")."""
    allowed = f"{prefix}an integer >= {low}" if high is None else f"{prefix}an integer in {low}..{high}"
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_number(name, value, allowed: str, condition) -> None:
    """A ValueError "name must be <allowed>, got value" unless `value` is a finite real number (not a bool) for
    which condition(value) holds."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not condition(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_resistances(**resistances) -> dict[str, float]:
    """Each resistance must be a finite real number >= 0 ohm; returns them as floats."""
    for name, value in resistances.items():
        check_number(name, value, "a finite number >= 0 (ohm)", lambda v: v >= 0)
    return {name: float(value) for name, value in resistances.items()}


def check_conductances(G, name: str = "G") -> np.ndarray:
    """G must be a non-empty (R, C) or (N, R, C) array of finite conductances >= 0 siemens; float64 copy."""
    try:
        G = np.array(G, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of conductances in siemens, got {type(G).__name__}") from err
    if G.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (R, C) or (N, R, C), got shape {G.shape}")
    if G.size == 0:
        raise ValueError(f"{name} must be non-empty, got shape {G.shape}")
    bad = ~np.isfinite(G) | (G < 0)
    if bad.any():
        index = tuple(int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite and >= 0 siemens, got {float(G[index])!r} at index {index}")
    return G


def check_tile_and_input(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """Validate one tile G (R, C), its input voltages v (R,) and the four resistances; return (G, v, res)."""
    G = check_conductances(G)
    if G.ndim != 2:
        raise ValueError(f"G must be one tile of shape (R, C), got shape {G.shape}")
    res = check_resistances(
        r_source_ohm=r_source_ohm, r_sink_ohm=r_sink_ohm, r_wire_row_ohm=r_wire_row_ohm, r_wire_col_ohm=r_wire_col_ohm
    )
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (G.shape[0],) or not np.isfinite(v).all():
        raise ValueError(f"v must be {G.shape[0]} finite voltages (shape ({G.shape[0]},)), got shape {v.shape}")
    return G, v, res
