"""Crossbar configuration: the physical parameters of SPEC section 3 as one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

PARASITIC_FIELDS = ("r_source_ohm", "r_sink_ohm", "r_wire_row_ohm", "r_wire_col_ohm")
MAX_BITS = 16


@dataclass(frozen=True)
class CrossbarConfig:
    """Physical parameters of the crossbars a network is mapped onto (SPEC section 3 defaults).

    size            rows = columns of one tile (inputs x outputs)
    r_on_ohm        resistance of a fully ON device;  G_max = 1 / r_on_ohm  (siemens)
    r_off_ohm       resistance of a fully OFF device; G_min = 1 / r_off_ohm (siemens), r_off_ohm > r_on_ohm
    r_source_ohm    series resistance of each row driver
    r_sink_ohm      resistance from the bottom of each column to the sense amplifier's virtual ground
    r_wire_row_ohm  one row-wire segment between adjacent cells
    r_wire_col_ohm  one column-wire segment between adjacent cells
    sigma           relative device-to-device variation sigma/mu (Gaussian); 0 = none
    bits            None = analog conductances; b = 2^b uniform levels of |W|/w_max
    seed            chip seed: one seed is one physical chip instance (its variation draw)

    A resistance of 0 is an exact ideal connection. Float fields are stored as Python floats
    so that `as_dict()` (and the cache key built from it) does not depend on how a value was typed.
    """

    size: int = 32
    r_on_ohm: float = 20e3
    r_off_ohm: float = 200e3
    r_source_ohm: float = 100.0
    r_sink_ohm: float = 100.0
    r_wire_row_ohm: float = 1.0
    r_wire_col_ohm: float = 1.0
    sigma: float = 0.10
    bits: int | None = None
    seed: int = 0

    def __post_init__(self):
        _check_int("size", self.size, 1)
        _check_float("r_on_ohm", self.r_on_ohm, "a finite number > 0", lambda v: v > 0)
        _check_float(
            "r_off_ohm", self.r_off_ohm, f"a finite number > r_on_ohm = {self.r_on_ohm!r}", lambda v: v > self.r_on_ohm
        )
        for name in PARASITIC_FIELDS:
            _check_float(name, getattr(self, name), "a finite number >= 0", lambda v: v >= 0)
        _check_float("sigma", self.sigma, "a finite number >= 0", lambda v: v >= 0)
        if self.bits is not None:
            _check_int("bits", self.bits, 1, MAX_BITS, "None (analog) or ")
        _check_int("seed", self.seed, 0)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, int(value) if f.name in ("size", "bits", "seed") else float(value))

    @property
    def g_max_s(self) -> float:
        """G_max = 1 / R_on, siemens."""
        return 1.0 / self.r_on_ohm

    @property
    def g_min_s(self) -> float:
        """G_min = 1 / R_off, siemens."""
        return 1.0 / self.r_off_ohm

    @property
    def parasitics_ohm(self) -> dict[str, float]:
        """The four parasitic resistances, as keyword arguments of `transfer_matrix`."""
        return {name: getattr(self, name) for name in PARASITIC_FIELDS}

    def as_dict(self) -> dict:
        """All fields as a JSON-serialisable dict (plain int, float, None)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> CrossbarConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def ideal(cls, **overrides) -> CrossbarConfig:
        """All four parasitic resistances 0 and sigma 0 (T == G, W' == W for analog), other fields default."""
        return cls(**{**{name: 0.0 for name in PARASITIC_FIELDS}, "sigma": 0.0, **overrides})


def _check_int(name, value, low, high=None, prefix=""):
    allowed = f"{prefix}an integer >= {low}" if high is None else f"{prefix}an integer in {low}..{high}"
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _check_float(name, value, allowed, condition):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not condition(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
