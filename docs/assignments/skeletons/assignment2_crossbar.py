"""Assignment 2: crossbar (docs/assignments/assignment2_crossbar.md). Fill in every TODO; NumPy only.
A file that imports nxbar (or torch, tensorflow, jax) scores 0 on the cases that run that code.

Units: siemens, ohm, volt, ampere. Every resistance is > 0. Node order of the unknowns x (length 2RC):
x[i*C + j] = v_r(i, j) (row nodes, row-major), x[R*C + i*C + j] = v_c(i, j) (column nodes, row-major).
Grade with:  nxbar grade 2 assignment2_crossbar.py
"""

import numpy as np


def nodal_system(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """KCL at every node of the tile G (R, C) driven by v (R,) volts: return (A (2RC, 2RC), b (2RC,)), A x = b.

    A[p, p] = + the sum of the conductances at node p (the sink's 1/r_sink_ohm too, at the bottom column nodes),
    A[p, q] = - the conductance joining p and q; b[r(i, 0)] = + v[i] / r_source_ohm, 0 elsewhere."""
    raise NotImplementedError("TODO: nodal_system")


def node_voltages(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """Solve A x = b; return (v_row (R, C), v_col (R, C), i_out (C,)), i_out[j] = current through column j's sink."""
    raise NotImplementedError("TODO: node_voltages")


def transfer_matrix(G, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """T (R, C) in siemens with I = V T: row k of T = i_out for v = e_k (1 V on row k, 0 V elsewhere)."""
    raise NotImplementedError("TODO: transfer_matrix")


def padded_tile_transfer(block, size, g_off_s, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """block (r, c), r, c <= size, programmed in the top-left corner of a size x size tile whose other cells
    hold OFF devices of conductance g_off_s; return the (r, c) top-left part of that tile's T."""
    raise NotImplementedError("TODO: padded_tile_transfer")


def nonideality_factor(G, T, n_inputs=64, seed=0):
    """NF = mean over inputs k and columns j of (I_ideal - I) / I_ideal, I_ideal = V G, I = V T, with
    V = np.random.default_rng(seed).uniform(0.0, 1.0, (n_inputs, R)). Return a float."""
    raise NotImplementedError("TODO: nonideality_factor")
