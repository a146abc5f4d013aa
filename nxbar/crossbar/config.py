"""Crossbar configuration: the physical parameters of docs/protocol.md section 3 as one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from nxbar.crossbar.checks import check_integer, check_number
from nxbar.crossbar.circuit import MAX_TILE_SIZE, TILE_SOLVE_LIMIT_BYTES, tile_solve_bytes

PARASITIC_FIELDS = ("r_source_ohm", "r_sink_ohm", "r_wire_row_ohm", "r_wire_col_ohm")
MAX_BITS = 16


@dataclass(frozen=True)
class CrossbarConfig:
    """Physical parameters of the crossbars a network is mapped onto (defaults: docs/protocol.md section 3).

    size            rows = columns of one tile (inputs x outputs); at most MAX_TILE_SIZE, whose circuit solve
                    fits TILE_SOLVE_LIMIT_BYTES (`nxbar.crossbar.circuit.tile_solve_bytes`)
    r_on_ohm        resistance of a fully ON device;  G_max = 1 / r_on_ohm  (siemens)
    r_off_ohm       resistance of a fully OFF device; G_min = 1 / r_off_ohm (siemens), r_off_ohm > r_on_ohm
    r_source_ohm    series resistance of each row driver
    r_sink_ohm      resistance from the bottom of each column to the sense amplifier's virtual ground
    r_wire_row_ohm  one row-wire segment between adjacent cells
    r_wire_col_ohm  one column-wire segment between adjacent cells
    parasitic_scale s >= 0, one factor on all four parasitic resistances: the circuit is solved with
                    s r_source_ohm, s r_sink_ohm, s r_wire_row_ohm and s r_wire_col_ohm (`parasitics_ohm`), so one
                    number sets the parasitic strength of a technology (docs/protocol.md section 3)
    sigma           relative device-to-device variation sigma/mu (Gaussian); 0 = none
    bits            None = analog conductances; b = 2^b uniform levels of |W|/w_max
    seed            chip seed: one seed is one physical chip instance (its variation draw)
    layer_bits      None = every layer uses `bits`; else one entry per MVM layer, in network order
                    (entry i is layer_index i): None (analog) or b, each layer at its own precision
                    (a hybrid-precision network, QUANOS, docs/protocol.md section 6.2). Needs bits=None, so
                    that one field decides.

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
    parasitic_scale: float = 1.0
    sigma: float = 0.10
    bits: int | None = None
    seed: int = 0
    layer_bits: tuple[int | None, ...] | None = None

    def __post_init__(self):
        check_integer("size", self.size, 1)
        need, limit = tile_solve_bytes(self.size), TILE_SOLVE_LIMIT_BYTES
        if need > limit:
            raise ValueError(
                f"size {self.size} is too large: the circuit solve of one {self.size}x{self.size} tile needs "
                f"8 (6 n^2 + 4 n) = {need:,} bytes ({need / 2**30:.3g} GiB), over the limit of {limit:,} bytes "
                f"({limit / 2**30:.3g} GiB); allowed sizes: 1..{MAX_TILE_SIZE}")
        check_number("r_on_ohm", self.r_on_ohm, "a finite number > 0", lambda v: v > 0)
        check_number(
            "r_off_ohm", self.r_off_ohm, f"a finite number > r_on_ohm = {self.r_on_ohm!r}", lambda v: v > self.r_on_ohm
        )
        for name in PARASITIC_FIELDS:
            check_number(name, getattr(self, name), "a finite number >= 0", lambda v: v >= 0)
        check_number("parasitic_scale", self.parasitic_scale, "a finite number >= 0", lambda v: v >= 0)
        check_number("sigma", self.sigma, "a finite number >= 0", lambda v: v >= 0)
        if self.bits is not None:
            check_integer("bits", self.bits, 1, MAX_BITS, "None (analog) or ")
        check_integer("seed", self.seed, 0)
        if self.layer_bits is not None:
            self._check_layer_bits()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "layer_bits":
                if value is not None:  # a tuple of plain int / None (a JSON list comes back as a tuple)
                    object.__setattr__(self, f.name, tuple(None if b is None else int(b) for b in value))
            elif value is not None:
                object.__setattr__(self, f.name, int(value) if f.name in ("size", "bits", "seed") else float(value))

    def _check_layer_bits(self):
        allowed = f"None or a non-empty sequence of None (analog) or integers in 1..{MAX_BITS}, one per MVM layer"
        lb = self.layer_bits
        if not isinstance(lb, (tuple, list)) or not lb:
            raise ValueError(f"layer_bits must be {allowed}, got {lb!r}")
        for i, b in enumerate(lb):
            if b is not None:
                check_integer(f"layer_bits[{i}]", b, 1, MAX_BITS, "None (analog) or ")
        if self.bits is not None:
            raise ValueError(f"bits must be None when layer_bits is given (layer_bits sets every layer), got {self.bits!r}")

    def bits_of(self, layer_index: int) -> int | None:
        """Conductance precision of MVM layer `layer_index`: layer_bits[layer_index] if given, else bits."""
        if self.layer_bits is None:
            return self.bits
        if not 0 <= layer_index < len(self.layer_bits):
            raise ValueError(f"layer_index {layer_index!r} has no entry in layer_bits "
                             f"(allowed: 0..{len(self.layer_bits) - 1})")
        return self.layer_bits[layer_index]

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
        """The four parasitic resistances the circuit is solved with, each times `parasitic_scale` (ohm), as
        keyword arguments of `transfer_matrix`."""
        return {name: self.parasitic_scale * getattr(self, name) for name in PARASITIC_FIELDS}

    def as_dict(self) -> dict:
        """All fields as a JSON-serialisable dict (plain int, float, None; layer_bits a tuple or None)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> CrossbarConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_weight_precision(self, layer_bits: tuple[int | None, ...] | None) -> CrossbarConfig:
        """This configuration for a hybrid-precision weight file whose layers have `layer_bits`
        (`nxbar.weights.layer_bits`): each layer at its own precision, unless this configuration already
        sets a precision (bits or layer_bits), which then wins. None (a plain file) changes nothing."""
        if layer_bits is None or self.bits is not None or self.layer_bits is not None:
            return self
        return self.replace(layer_bits=tuple(layer_bits))

    @classmethod
    def ideal(cls, **overrides) -> CrossbarConfig:
        """All four parasitic resistances 0 and sigma 0 (T == G, W' == W for analog), other fields default."""
        return cls(**{**{name: 0.0 for name in PARASITIC_FIELDS}, "sigma": 0.0, **overrides})
