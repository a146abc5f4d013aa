"""Memristive crossbar tiles: exact circuit solve (docs/physics.md) and layer mapping (docs/protocol.md section 4)."""

from nxbar.crossbar.circuit import node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.spice import netlist, run_ngspice
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import MappedModel, map_layer, map_model, random_tile_nf

__all__ = [
    "CrossbarConfig",
    "MappedModel",
    "map_layer",
    "map_model",
    "netlist",
    "node_voltages",
    "nonideality_factor",
    "random_tile_nf",
    "run_ngspice",
    "transfer_matrix",
]
