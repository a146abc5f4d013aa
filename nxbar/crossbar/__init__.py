"""Memristive crossbar tiles: exact circuit solve (SPEC section 3) and layer mapping (SPEC section 4)."""

from nxbar.crossbar.circuit import node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.spice import netlist, run_ngspice
