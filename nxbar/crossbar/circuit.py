"""Exact circuit solve of one crossbar tile: the transfer matrix T with I = V T (docs/physics.md sections 1-5).

The circuit (R rows, C columns; docs/physics.md has the figure and a 2x2 example worked by hand):
  - cell (i, j) has a row node r(i,j) and a column node c(i,j); the device G[i,j] (siemens) joins them;
  - source V_i (volts) in series with R_source drives r(i,0); R_wire_row joins r(i,j) and r(i,j+1);
  - R_wire_col joins c(i,j) and c(i+1,j); R_sink joins c(R-1,j) to ground (0 V);
  - the output I_j (amperes) is the current through the sink resistor of column j.
Column j is a chain that touches the rest of the circuit only through its devices and ground only
through its sink, so by KCL on that chain
    I_j = sum_i G[i,j] (v_r(i,j) - v_c(i,j)),                                        (1)
which holds for every value of R_sink, 0 included.  T[i,j] = I_j for V = e_i (1 V on row i, 0 V on
the others), so I = V T for any V (the circuit is linear).

A resistance of 0 ohm is an ideal connection, handled exactly (merged nodes, or infinite conductances
that IEEE arithmetic carries through the ladder formulas below); with all four resistances 0, T == G.

Three methods, all exact, agreeing to ~1e-12 relative:
  "dense"  nodal analysis (KCL at every node) solved by np.linalg.solve: the readable reference;
  "sparse" the same nodal matrix, scipy.sparse.linalg.splu, one factorisation per tile;
  "fast"   structured elimination (rows first, then a block-tridiagonal sweep down the columns),
           compiled with Numba, parallel over tiles.  "auto" = "fast".
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from numba import njit, prange

from nxbar.crossbar.checks import check_conductances, check_integer, check_resistances, check_tile_and_input

METHODS = ("auto", "dense", "sparse", "fast")
TILE_SOLVE_LIMIT_BYTES = 2**30  # the largest tile solve allowed (CrossbarConfig refuses larger sizes): 1 GiB


def tile_solve_bytes(size: int) -> int:
    """Memory (bytes) that the "fast" solve of one size x size tile allocates, float64 throughout:
    the checked copy of the tile G and its transfer matrix T (size^2 each), the row port K (size^2), the
    work array W = [F | E | Y] (size x 3 size) and four vectors of `size` (beta and the ladder terms left,
    right, div):
        8 (6 size^2 + 4 size) bytes,
    e.g. 194 KiB at 64, 772 KiB at 128, 1 GiB at 4,729. A mapped layer holds at least two such tiles (one
    per polarity) and every thread of the parallel solve its own K and W, so this is a lower bound."""
    return 8 * (6 * size * size + 4 * size)


# the largest size whose tile_solve_bytes is within TILE_SOLVE_LIMIT_BYTES (root of 48 n^2 + 32 n = limit)
MAX_TILE_SIZE = (math.isqrt(4 + 6 * (TILE_SOLVE_LIMIT_BYTES // 8)) - 2) // 6


# ----------------------------------------------------------------------------------------------
# Nodal analysis ("dense" and "sparse"): KCL at every node
# ----------------------------------------------------------------------------------------------
def _find(parent: list[int], a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def nodal_system(G, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """Nodal equations A x = B V of one tile G (R, C), solved for the free node voltages x.

    Nodes: r(i,j) = i C + j, c(i,j) = R C + i C + j, source terminal s_i = 2 R C + i (held at V_i),
    ground = 2 R C + R (held at 0).  Elements: conductance g = 1/R for every resistor, G[i,j] for every
    device.  A zero resistance merges its two nodes (union-find); a merged class that holds s_i is
    fixed at V_i, one that holds ground is fixed at 0; every other class is a free node.
    KCL at free node a, each element (a, b, g) contributing the current g (v_a - v_b) out of a:
        sum_b g_ab (x_a - x_b) [b free] + sum_b g_ab x_a [b fixed] = sum_b g_ab V(b) [b fixed],
    i.e. A[a,a] += g, A[a,b] -= g for free b, B[a,k] += g when b is fixed at V_k (ground adds nothing).
    Returns A (n_free x n_free, scipy.sparse csc), B (n_free x R) and `row` (2RC,): the index in the
    stacked vector [x; V; 0] of each r/c node's voltage.
    """
    R, C = G.shape
    n_cell = R * C
    ground = 2 * n_cell + R
    r = np.arange(n_cell).reshape(R, C)
    c = r + n_cell
    s = 2 * n_cell + np.arange(R)
    # The resistors as (nodes a, nodes b, ohm); the devices G[i,j] between r(i,j) and c(i,j) come first below.
    resistors = [
        (s, r[:, 0], r_source_ohm),
        (r[:, :-1], r[:, 1:], r_wire_row_ohm),
        (c[:-1, :], c[1:, :], r_wire_col_ohm),
        (c[-1, :], np.full(C, ground), r_sink_ohm),
    ]
    parent = list(range(ground + 1))
    a_list, b_list, g_list = [r.ravel()], [c.ravel()], [G.ravel()]
    for a, b, ohm in resistors:
        a, b = a.ravel(), b.ravel()
        if ohm == 0:  # ideal connection: merge the two nodes
            for p, q in zip(a.tolist(), b.tolist()):
                parent[_find(parent, p)] = _find(parent, q)
        else:
            a_list.append(a)
            b_list.append(b)
            g_list.append(np.full(a.size, 1.0 / ohm))
    root = np.array([_find(parent, k) for k in range(ground + 1)])
    # Row of [x; V; 0] holding each class: free classes 0..n_free-1, then the R sources, then ground.
    is_fixed = np.zeros(ground + 1, dtype=bool)
    is_fixed[root[s]] = True
    is_fixed[root[ground]] = True
    free_roots = np.unique(root[~is_fixed[root]])
    n_free = free_roots.size
    row_of_root = np.empty(ground + 1, dtype=np.int64)
    row_of_root[free_roots] = np.arange(n_free)
    row_of_root[root[s]] = n_free + np.arange(R)
    row_of_root[root[ground]] = n_free + R
    row = row_of_root[root]  # row of every node in [x; V; 0]

    a = row[np.concatenate(a_list)]
    b = row[np.concatenate(b_list)]
    g = np.concatenate(g_list)
    ii, jj, vv = [], [], []
    bi, bk, bv = [], [], []
    for p, q in ((a, b), (b, a)):  # each element seen from both of its ends
        free_p = p < n_free
        ii.append(p[free_p])
        jj.append(p[free_p])
        vv.append(g[free_p])
        both = free_p & (q < n_free)
        ii.append(p[both])
        jj.append(q[both])
        vv.append(-g[both])
        to_source = free_p & (q >= n_free) & (q < n_free + R)
        bi.append(p[to_source])
        bk.append(q[to_source] - n_free)
        bv.append(g[to_source])
    A = scipy.sparse.coo_matrix(
        (np.concatenate(vv), (np.concatenate(ii), np.concatenate(jj))), shape=(n_free, n_free)
    ).tocsc()
    B = np.zeros((n_free, R))
    np.add.at(B, (np.concatenate(bi), np.concatenate(bk)), np.concatenate(bv))
    return A, B, row[: 2 * n_cell]


def _column_currents(G, volts):
    """Equation (1) for every input k: I[k, j] = sum_i G[i,j] (v_r(i,j)[k] - v_c(i,j)[k]); volts (2RC, K)."""
    R, C = G.shape
    v_r = volts[: R * C].reshape(R, C, -1)
    v_c = volts[R * C :].reshape(R, C, -1)
    return np.einsum("ij,ijk->kj", G, v_r - v_c)


def _solve_dense(A, B):
    return np.linalg.solve(A.toarray(), B)


def _solve_sparse(A, B):
    if A.shape[0] == 0:  # every node is fixed (all resistances 0): nothing to solve
        return B
    # The nodal matrix is symmetric: order for A^T + A (minimum degree).
    return scipy.sparse.linalg.splu(A, permc_spec="MMD_AT_PLUS_A").solve(B)


def _transfer_nodal(G, resistances, solve):
    """T of one tile (R, C) by nodal analysis: x = A^-1 B (all R unit inputs at once), then equation (1)."""
    A, B, row = nodal_system(G, **resistances)
    R = G.shape[0]
    x_v_ground = np.vstack([solve(A, B), np.eye(R), np.zeros((1, R))])
    return _column_currents(G, x_v_ground[row])


def node_voltages(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """Every node voltage of one tile G (R, C) driven by v (R,) volts, by dense nodal analysis.

    Returns v_row (R, C) = v_r(i,j), v_col (R, C) = v_c(i,j) in volts and i_out (C,) = I_j in amperes
    (equation (1)).
    """
    G, v, res = check_tile_and_input(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm)
    R, C = G.shape
    A, B, row = nodal_system(G, **res)
    x_v_ground = np.concatenate([_solve_dense(A, B @ v), v, [0.0]])
    volts = x_v_ground[row]
    return volts[: R * C].reshape(R, C), volts[R * C :].reshape(R, C), _column_currents(G, volts[:, None])[0]


# ----------------------------------------------------------------------------------------------
# "fast": structured elimination (docs/physics.md, section "Fast elimination")
# ----------------------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _row_port(g, r_source, r_wire, K, beta):
    """Eliminate the row nodes r(i,:) of one row with devices g = G[i,:] (siemens).

    With M the row's nodal matrix (chain Laplacian of 1/r_wire, plus 1/r_source at node 0, plus
    diag(g)), the row seen from its column nodes c(i,:) is the C-port
        K = diag(g) - diag(g) M^-1 diag(g)      (siemens; admittance, source at 0 V),
        beta = diag(g) M^-1 e_0 / r_source      (amperes per volt; currents into c(i,:) held at 0 V).
    M^-1 comes from two ladder reductions, all terms positive (no cancellation):
        left[0] = 1/r_source,  left[j] = 1 / (r_wire + 1/(left[j-1] + g[j-1]))   (looking left of j),
        right[C-1] = 0,        right[j] = 1 / (r_wire + 1/(right[j+1] + g[j+1])) (looking right of j),
        M^-1[j,j] = 1 / (left[j] + g[j] + right[j]),
        M^-1[j,l] = M^-1[j,l-1] * div[l]  for l > j,  div[l] = 1 / (1 + r_wire (right[l] + g[l]))
    (a voltage at r(i,l-1) divides along the wire into r(i,l)), and M^-1 e_0 / r_source = the voltage
    at r(i,l) per source volt = u[0] div[1] ... div[l], u[0] = 1 / (1 + r_source (right[0] + g[0])).
    Zero resistances are exact: 1/0 = inf makes left infinite (node held fixed, M^-1 row 0) and div = 1.
    """
    C = g.size
    left = np.empty(C)
    right = np.empty(C)
    div = np.empty(C)
    left[0] = 1.0 / r_source
    for j in range(1, C):
        left[j] = 1.0 / (r_wire + 1.0 / (left[j - 1] + g[j - 1]))
    right[C - 1] = 0.0
    for j in range(C - 2, -1, -1):
        right[j] = 1.0 / (r_wire + 1.0 / (right[j + 1] + g[j + 1]))
    for l in range(C):
        div[l] = 1.0 / (1.0 + r_wire * (right[l] + g[l]))
    for j in range(C):
        z = 1.0 / (left[j] + g[j] + right[j])
        K[j, j] = g[j] - g[j] * g[j] * z
        for l in range(j + 1, C):
            z *= div[l]
            K[j, l] = -g[j] * g[l] * z
            K[l, j] = K[j, l]
    u = 1.0 / (1.0 + r_source * (right[0] + g[0]))
    for l in range(C):
        if l > 0:
            u *= div[l]
        beta[l] = g[l] * u


@njit(cache=True, error_model="numpy", inline="always")
def _subtract_rows(t, a0, a1, a2, a3, f0, f1, f2, f3):
    """t -= f0 a0 + f1 a1 + f2 a2 + f3 a3, one pass over t (fewer loads and stores than four)."""
    for q in range(t.size):
        t[q] -= f0 * a0[q] + f1 * a1[q] + f2 * a2[q] + f3 * a3[q]


@njit(cache=True, error_model="numpy", inline="always")
def _subtract_row(t, a0, f0):
    """t -= f0 a0."""
    for q in range(t.size):
        t[q] -= f0 * a0[q]


@njit(cache=True, error_model="numpy")
def _solve_in_place(W, c0, n, c1):
    """Overwrite W[:, c0+n:c1] with F^-1 W[:, c0+n:c1], F = W[:, c0:c0+n] symmetric positive definite.

    Gaussian elimination without pivoting (stable for SPD F), row by row: row i -= (W[i,p] / U[p,p])
    row p for the finished rows p < i in order, which leaves F's upper triangle U; then back
    substitution row by row on the right-hand sides: row i = (row i - sum_{p>i} U[i,p] row p) / U[i,i].
    Rows p are applied four per pass over row i; inner loops run over slices of rows of W from 0,
    the form LLVM vectorises.
    """
    for i in range(n):
        wi = W[i]
        p = 0
        while p + 4 <= i:
            k = c0 + p
            u0, u1, u2, u3 = W[p], W[p + 1], W[p + 2], W[p + 3]
            # multipliers of the four rows, each after the updates of row i by the earlier ones
            f0 = wi[k] / u0[k]
            wi[k + 1] -= f0 * u0[k + 1]
            wi[k + 2] -= f0 * u0[k + 2]
            wi[k + 3] -= f0 * u0[k + 3]
            f1 = wi[k + 1] / u1[k + 1]
            wi[k + 2] -= f1 * u1[k + 2]
            wi[k + 3] -= f1 * u1[k + 3]
            f2 = wi[k + 2] / u2[k + 2]
            wi[k + 3] -= f2 * u2[k + 3]
            f3 = wi[k + 3] / u3[k + 3]
            rest = slice(k + 4, c1)
            _subtract_rows(wi[rest], u0[rest], u1[rest], u2[rest], u3[rest], f0, f1, f2, f3)
            p += 4
        for r in range(p, i):  # the rows left over
            k = c0 + r
            _subtract_row(wi[k + 1 : c1], W[r, k + 1 : c1], wi[k] / W[r, k])
    r0 = c0 + n
    for i in range(n - 1, -1, -1):
        t = W[i, r0:c1]
        u = W[i, c0 : c0 + n]
        p = i + 1
        while p + 4 <= n:
            a0, a1, a2, a3 = W[p, r0:c1], W[p + 1, r0:c1], W[p + 2, r0:c1], W[p + 3, r0:c1]
            _subtract_rows(t, a0, a1, a2, a3, u[p], u[p + 1], u[p + 2], u[p + 3])
            p += 4
        for r in range(p, n):
            _subtract_row(t, W[r, r0:c1], u[r])
        inv = 1.0 / u[i]
        for q in range(t.size):
            t[q] *= inv


@njit(cache=True, error_model="numpy")
def _transfer_tile(G, r_source, r_sink, r_wire_row, r_wire_col, T):
    """T (R, C) of one tile G (R, C), written into T: row elimination, then a block sweep down the columns.

    With (K_i, beta_i) the port of row i (_row_port) the column nodes obey, row block by row block,
        beta_i V_i - K_i c_i + (c_{i-1} - c_i)/r_wire_col [i > 0] + (c_{i+1} - c_i)/r_wire_col [i < R-1]
        - c_{R-1}/r_sink [i = R-1] = 0.
    Forward elimination in resistance form (exact for zero resistances, no cancellation):
        E_0 = K_0,  E_i = K_i + X_{i-1},  X_i = (I + r_wire_col E_i)^-1 E_i,
        Y_i = [(I + r_wire_col E_{i-1})^-1 Y_{i-1} | beta_i],
        T^T = (I + r_sink E_{R-1})^-1 Y_{R-1}   (column k = output currents for 1 V on row k).
    X_i is the admittance of rows 0..i seen from c_{i+1} through the column wires, Y_i[:, k] the
    current that 1 V on row k pushes down the column wires into row i+1.
    Work array W = [F | E | Y] (C x (2C + R)); one elimination per row solves [X | Y] together.
    """
    R, C = G.shape
    K = np.empty((C, C))
    beta = np.empty(C)
    W = np.zeros((C, 2 * C + R))
    for i in range(R):
        _row_port(G[i], r_source, r_wire_row, K, beta)
        last = i == R - 1
        r_down = r_sink if last else r_wire_col
        f0 = C if last else 0  # the last step stores F over E (E no longer needed)
        for a in range(C):
            for b in range(C):
                e = K[a, b] + W[a, C + b]
                W[a, C + b] = e
                W[a, f0 + b] = r_down * e
            W[a, f0 + a] += 1.0
            W[a, 2 * C + i] = beta[a]
        _solve_in_place(W, f0, C, 2 * C + i + 1)
    for k in range(R):
        for j in range(C):
            T[k, j] = W[j, 2 * C + k]


@njit(cache=True, parallel=True, error_model="numpy")
def _transfer_tiles(G, r_source, r_sink, r_wire_row, r_wire_col, T):
    """_transfer_tile for every tile of G (N, R, C), in parallel over the tiles."""
    for n in prange(G.shape[0]):
        _transfer_tile(G[n], r_source, r_sink, r_wire_row, r_wire_col, T[n])


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------
def transfer_matrix(G, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm, method="auto"):
    """Transfer matrix T (siemens, float64, shape of G) of each tile: I = V T (docs/physics.md section 3).

    G: (R, C) or (N, R, C) device conductances in siemens, finite and >= 0.  Resistances in ohm,
    finite and >= 0 (0 = ideal connection).  T[i, j] = current out of column j through its sink
    resistor per volt on row i, all other rows at 0 V.  method: "dense", "sparse", "fast" or "auto"
    (= "fast"); all exact, they agree to ~1e-12 relative.  With all four resistances 0, every device sits
    between an ideal source and ground, so T = G; "auto" returns that copy without solving (the other
    methods compute it, bit for bit the same).
    """
    G = check_conductances(G)
    res = check_resistances(
        r_source_ohm=r_source_ohm, r_sink_ohm=r_sink_ohm, r_wire_row_ohm=r_wire_row_ohm, r_wire_col_ohm=r_wire_col_ohm
    )
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "auto" and not any(res.values()):
        return G
    tiles = G.reshape((-1,) + G.shape[-2:])
    if method in ("auto", "fast"):
        T = np.empty(tiles.shape)
        args = (res["r_source_ohm"], res["r_sink_ohm"], res["r_wire_row_ohm"], res["r_wire_col_ohm"])
        if len(tiles) == 1:  # one tile: no parallel launch (its thread wake-up costs more than the solve)
            _transfer_tile(tiles[0], *args, T[0])
        else:
            _transfer_tiles(tiles, *args, T)
    else:
        solve = _solve_dense if method == "dense" else _solve_sparse
        T = np.stack([_transfer_nodal(tile, res, solve) for tile in tiles])
    return T.reshape(G.shape)


def nonideality_factor(G, T, n_inputs=64, seed=0):
    """Non-ideality factor NF (docs/physics.md section 6), dimensionless.

    NF = mean over tiles, inputs and columns j of (I_ideal_j - I_j) / I_ideal_j, with I_ideal = V G and
    I = V T, for n_inputs random input vectors V ~ U[0, 1]^R per tile drawn from
    np.random.default_rng(seed).  G, T: (R, C) or (N, R, C), same shape.
    """
    G = check_conductances(G)
    T = np.asarray(T, dtype=np.float64)
    if T.shape != G.shape or not np.isfinite(T).all():
        raise ValueError(f"T must be finite with the shape of G {G.shape}, got shape {T.shape}")
    check_integer("n_inputs", n_inputs, 1)
    G3 = G.reshape((-1,) + G.shape[-2:])
    T3 = T.reshape(G3.shape)
    zero = np.argwhere(G3.sum(axis=1) == 0)
    if zero.size:
        where = tuple(int(k) for k in zero[0])
        raise ValueError(f"G has a column of zero conductance (tile, column) = {where}: NF undefined")
    V = np.random.default_rng(seed).uniform(0.0, 1.0, (G3.shape[0], n_inputs, G3.shape[1]))
    i_ideal = V @ G3
    return float(np.mean((i_ideal - V @ T3) / i_ideal))
