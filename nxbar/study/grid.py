"""The study's experiments as grids of cells (docs/protocol.md section 9).

A cell is one number of the paper: (model, crossbar size or None for software, mode, physics overrides,
attack, chip seed, input discretization bits, and for the NF experiment a layer). Models "vgg8q"/"vgg16q" are
the QUANOS hybrid-precision networks: their weight file's layer_bits set each layer's precision on crossbars.
Modes: SW/SH/HH (docs/protocol.md section 5.4), "clean" (clean accuracy only, Fig. 4) and "nf" (non-ideality
factor, docs/protocol.md section 3: layer "tiles" = random tiles, else one mapped layer).
Hardware cells at FGSM 0.1 and PGD 8/255 run on the chip seeds CHIP_SEEDS (the paper reports one chip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nxbar.attacks import EPS_SPACES, eps_label
from nxbar.crossbar.config import PARASITIC_FIELDS, CrossbarConfig
from nxbar.evaluation import CHIP_SEEDS, METRICS, MODES, AttackConfig
from nxbar.models.arch import mvm_names

DATASET = "cifar10"  # CIFAR-10 is the stated substitute for CIFAR-100 (VGG16, Figs. 5, 6)
SIZES = (16, 32, 64)
QUICK_N = 16
FGSM_EPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
PGD_EPS = tuple(k / 255 for k in (2, 4, 8, 16, 32))
SEEDED = (("fgsm", 0.1), ("pgd", 8 / 255))  # hardware cells here run on CHIP_SEEDS
R_ON_OHM = 20e3
ON_OFF_RATIOS = (10, 100, 1000, 2000)
PHYSICS_FIELDS = ("r_on_ohm", "r_off_ohm", *PARASITIC_FIELDS, "sigma", "bits")
KEY_COLUMNS = ("model", "dataset", "xbar", "mode", "layer", "input_bits", *PHYSICS_FIELDS, "chip_seed",
               "attack", "eps", "eps_space", "steps", "alpha", "random_start", "attack_seed")
# layer_bits: the per-layer precision a hybrid-precision model's weight file gave its crossbars ('/'-joined)
COLUMNS = (*KEY_COLUMNS, "layer_bits", "n", "clean_correct", "adv_correct", *METRICS, "nf")
INPUT_BITS = (8, 4, 2)  # Fig. 9 input discretization widths; Fig. 10 uses 4


@dataclass(frozen=True)
class Cell:
    """One number to compute. physics: sorted (CrossbarConfig field, value) overrides of the defaults.
    input_bits: b-bit input discretization (`nxbar.defences.InputDiscretization`, straight-through gradient)
    in front of the model."""

    model: str
    size: int | None
    mode: str
    attack: AttackConfig | None = None
    physics: tuple = ()
    seed: int = 0
    layer: str = ""
    input_bits: int | None = None

    def config(self, base_physics: dict | None = None) -> CrossbarConfig:
        return CrossbarConfig(size=self.size, seed=self.seed, **{**(base_physics or {}), **dict(self.physics)})

    def key(self, base_physics: dict | None = None) -> tuple[str, ...]:
        """The cell's parameter columns, formatted as stored in the CSV."""
        row = {"model": self.model, "dataset": DATASET, "xbar": self.size or "software", "mode": self.mode,
               "layer": self.layer, "input_bits": self.input_bits}
        if self.size is not None:
            cfg = self.config(base_physics).as_dict()
            row.update({f: cfg[f] for f in PHYSICS_FIELDS}, chip_seed=self.seed)
        if self.attack is not None:
            a = self.attack.as_dict()
            row.update(a, attack_seed=a.pop("seed", None))
        return tuple(fmt(row.get(c)) for c in KEY_COLUMNS)

    def describe(self) -> str:
        """The cell in words, as the progress lines print it: "vgg8 32 HH eps 8/255 pixel chip 1"."""
        a = self.attack
        parts = [self.model, str(self.size or "software"), self.mode,
                 a and f"eps {eps_label(a.attack, a.eps)} {a.eps_space}",
                 self.input_bits and f"{self.input_bits}-bit inputs", self.physics and str(dict(self.physics)),
                 self.size and f"chip {self.seed}", self.layer]
        return " ".join(p for p in parts if p)


def fmt(value) -> str:
    """CSV text of a value: '' for None, repr for floats (exact round trip), str otherwise."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _seeds(attack: str, eps: float, seeded: bool) -> tuple[int, ...]:
    return CHIP_SEEDS if seeded and any(attack == s and np.isclose(eps, e) for s, e in SEEDED) else (0,)


def _attack_cells(model, attack, eps_list, *, eps_spaces=("pixel",), sizes=SIZES, physics_list=((),),
                  seeded=True, input_bits=None) -> list[Cell]:
    """SW, then SH and HH per size, physics variant and chip seed, for each eps (attack-major order)."""
    cells = []
    for space in eps_spaces:
        for eps in eps_list:
            a = AttackConfig(attack=attack, eps=eps, eps_space=space)
            cells.append(Cell(model, None, MODES[0], a, input_bits=input_bits))
            cells += [Cell(model, size, mode, a, physics, seed, input_bits=input_bits)
                      for size in sizes for physics in physics_list for seed in _seeds(attack, eps, seeded)
                      for mode in MODES[1:]]
    return cells


def _defence_cells(attack, eps_list, seeded) -> list[Cell]:
    """Fig. 10, VGG16 per eps: SW (no defence), SH on 32x32, 4-bit input discretization and QUANOS in software."""
    cells = []
    for eps in eps_list:
        a = AttackConfig(attack=attack, eps=eps)
        cells += [Cell("vgg16", None, "SW", a), *[Cell("vgg16", 32, "SH", a, seed=s) for s in _seeds(attack, eps, seeded)],
                  Cell("vgg16", None, "SW", a, input_bits=4), Cell("vgg16q", None, "SW", a)]
    return cells


def _physics(r_on_ohm: float, ratio: float) -> tuple:
    return (("r_off_ohm", r_on_ohm * ratio), ("r_on_ohm", r_on_ohm))


def _nf_cells(sizes) -> list[Cell]:
    return [Cell("vgg8", s, "nf", layer=layer) for s in sizes for layer in ("tiles", *mvm_names("vgg8"))]


def experiment_cells(name: str, quick: bool = False) -> list[Cell]:
    """The grid of experiment `name` (see EXPERIMENTS); `quick` = a small smoke version of it."""
    q = quick
    fgsm_eps, pgd_eps = ((0.1,), (8 / 255,)) if q else (FGSM_EPS, PGD_EPS)
    spaces = EPS_SPACES[:1] if q else EPS_SPACES
    sizes = (64,) if q else SIZES
    ratios = (10, 2000) if q else ON_OFF_RATIOS
    grids = {
        "table1": lambda: _attack_cells("vgg8", "fgsm", fgsm_eps, eps_spaces=spaces, sizes=sizes, seeded=not q),
        "table2": lambda: _attack_cells("vgg8", "pgd", pgd_eps, sizes=sizes, seeded=not q),
        "fig4": lambda: [Cell(m, s, "clean") for m in ("vgg8", "vgg16") for s in (None, *sizes)],
        "fig8a": lambda: _attack_cells("vgg8", "pgd", pgd_eps, sizes=(32,), seeded=not q,
                                       physics_list=[_physics(r, 10) for r in (20e3, 10e3)]),
        "fig8b": lambda: _attack_cells("vgg8", "pgd", pgd_eps, sizes=(32,), seeded=not q,
                                       physics_list=[_physics(R_ON_OHM, r) for r in ratios]),
        "fig5": lambda: _attack_cells("vgg16", "fgsm", fgsm_eps, eps_spaces=spaces, sizes=sizes, seeded=not q),
        "fig6": lambda: _attack_cells("vgg16", "pgd", pgd_eps, sizes=sizes, seeded=not q),
        "nf": lambda: _nf_cells(sizes),
        "table3": lambda: [c for m in ("vgg8", "vgg8q")
                           for c in _attack_cells(m, "fgsm", fgsm_eps, sizes=(16,), seeded=not q)],
        "fig9": lambda: [c for b in (None, *((4,) if q else INPUT_BITS))
                         for c in _attack_cells("vgg8", "fgsm", fgsm_eps, sizes=(32,), seeded=not q, input_bits=b)],
        "fig10": lambda: _defence_cells("fgsm", fgsm_eps, not q) + _defence_cells("pgd", pgd_eps, not q),
    }
    if name not in grids:
        raise ValueError(f"experiment {name!r} unknown; allowed: {', '.join(grids)}")
    return grids[name]()


EXPERIMENTS = {
    "table1": "FGSM, VGG8 CIFAR-10, eps 0.05..0.3 in pixel and normalized units; SW, SH/HH on 16/32/64 (Table I)",
    "table2": "PGD, VGG8 CIFAR-10, eps 2..32/255; SW, SH/HH on 16/32/64 (Table II)",
    "fig4": "clean accuracy in software and on 16/32/64 crossbars, VGG8 and VGG16 (Fig. 4)",
    "fig8a": "PGD AL vs eps on 32x32, R_on 20 kOhm and 10 kOhm, ON/OFF 10 (Fig. 8a)",
    "fig8b": "PGD AL vs eps on 32x32, R_on 20 kOhm, ON/OFF 10, 100, 1000, 2000 (Fig. 8b)",
    "fig5": "FGSM, VGG16 on CIFAR-10 (substitute for CIFAR-100), as table1 (Fig. 5)",
    "fig6": "PGD, VGG16 on CIFAR-10 (substitute for CIFAR-100), as table2 (Fig. 6)",
    "nf": "NF of random tiles and of every VGG8 layer on 16/32/64 crossbars, default physics "
          "(docs/protocol.md section 3)",
    "table3": "FGSM, VGG8 full precision vs QUANOS hybrid precision (vgg8q); SW, SH/HH on 16x16 (Table III)",
    "fig9": "FGSM, VGG8 on 32x32 with no, 8-, 4- and 2-bit input discretization; SW, SH, HH (Fig. 9)",
    "fig10": "VGG16 (CIFAR-10 substitute), FGSM and PGD: SW, SH on 32x32, 4-bit input discretization and "
             "QUANOS (vgg16q) in software (Fig. 10)",
}
