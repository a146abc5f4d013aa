"""Speed of the exact tile solve: each method of transfer_matrix against a plain scipy splu baseline.

Per tile, at 16, 32, 64 and 128 (the defaults of docs/protocol.md section 3: random G in [1/200k, 1/20k] S,
R_source = R_sink = 100 ohm, wires 1 ohm): the baseline below (nodal matrix assembled here, independently of nxbar,
scipy.sparse.linalg.splu with its default options, all R unit inputs as right-hand sides), "dense"
(where feasible), "sparse", "fast" one tile per call and "fast" batched; every result is checked
against the baseline.  Then whole-model workloads: every tile of both polarities of VGG8 at 32x32
and 64x64 and of VGG16 at 16x16, solved in one batched call.
Targets (README, 'Status and measured speed'): fast >= 10x the baseline at 64x64, >= 5x at 16x16 and
32x32 batched; VGG8 under 15 s at 32x32 and 30 s at 64x64, VGG16 at 16x16 under 60 s.  The machine may be shared: the load
average is printed with the numbers.

    python3 -m benchmarks.bench_circuit [--batch 256] [--no-models]     (from the repository root)
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from nxbar.crossbar import transfer_matrix
from nxbar.crossbar.tiling import tile_grid
from nxbar.models.arch import mvm_names, param_shapes

PRESET = dict(r_source_ohm=100.0, r_sink_ohm=100.0, r_wire_row_ohm=1.0, r_wire_col_ohm=1.0)
G_MIN, G_MAX = 1 / 200e3, 1 / 20e3


def baseline_splu(G, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    """T of one tile (all resistances > 0): nodal matrix of the 2RC nodes, splu, I_j = v_c(R-1,j) / R_sink."""
    R, C = G.shape
    r = np.arange(R * C).reshape(R, C)
    c = r + R * C
    # Two-terminal conductances (a, b, g); b = -1 is ground (source and sink ends: the source is a
    # Norton equivalent, current V_i / R_source into r(i,0)).
    a = np.concatenate([r.ravel(), r[:, :-1].ravel(), c[:-1].ravel(), r[:, 0], c[-1]])
    b = np.concatenate([c.ravel(), r[:, 1:].ravel(), c[1:].ravel(), np.full(R + C, -1)])
    g = np.concatenate(
        [
            G.ravel(),
            np.full(R * (C - 1), 1 / r_wire_row_ohm),
            np.full((R - 1) * C, 1 / r_wire_col_ohm),
            np.full(R, 1 / r_source_ohm),
            np.full(C, 1 / r_sink_ohm),
        ]
    )
    m = b >= 0
    rows = np.concatenate([a, b[m], a[m], b[m]])
    cols = np.concatenate([a, b[m], b[m], a[m]])
    vals = np.concatenate([g, g[m], -g[m], -g[m]])
    A = scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(2 * R * C, 2 * R * C))
    rhs = np.zeros((2 * R * C, R))
    rhs[r[:, 0], np.arange(R)] = 1 / r_source_ohm
    v = scipy.sparse.linalg.splu(A).solve(rhs)
    return v[c[-1]].T / r_sink_ohm


def per_tile(fn, tiles):
    """Wall seconds per tile of fn over tiles (after one warm-up call), and the results."""
    fn(tiles[0])
    t0 = time.perf_counter()
    out = [fn(t) for t in tiles]
    return (time.perf_counter() - t0) / len(tiles), np.stack(out)


def rel(a, b):
    return float(np.max(np.abs(a - b) / np.abs(b)))


def bench_sizes(batch: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{'size':>5} {'baseline':>11} {'dense':>11} {'sparse':>11} {'fast 1':>11} {'fast batch':>11}"
          f" {'base/fast1':>10} {'base/batch':>10} {'max rel diff':>12}")
    for n, n_base, n_dense in ((16, 8, 4), (32, 4, 1), (64, 2, 0), (128, 1, 0)):
        n_batch = batch if n <= 64 else max(batch // 16, n_base)  # 128x128 tiles take ~0.1-0.2 s each
        G = rng.uniform(G_MIN, G_MAX, (n_batch, n, n))
        t_base, T_base = per_tile(lambda g: baseline_splu(g, **PRESET), G[:n_base])
        times, diffs = {}, []
        for method, k in (("dense", n_dense), ("sparse", n_base), ("fast", n_base)):
            if k:
                times[method], T = per_tile(lambda g: transfer_matrix(g, **PRESET, method=method), G[:k])
                diffs.append(rel(T, T_base[:k]))
        transfer_matrix(G[:2], **PRESET)  # warm-up (compiled code loaded)
        t0 = time.perf_counter()
        T = transfer_matrix(G, **PRESET)
        t_batch = (time.perf_counter() - t0) / len(G)
        diffs.append(rel(T[:n_base], T_base))
        ms = lambda t: f"{t * 1e3:9.3f}ms"  # noqa: E731
        print(f"{n:>5} {ms(t_base):>11} {ms(times['dense']) if 'dense' in times else '-':>11} "
              f"{ms(times['sparse']):>11} {ms(times['fast']):>11} {ms(t_batch):>11} "
              f"{t_base / times['fast']:>9.1f}x {t_base / t_batch:>9.1f}x {max(diffs):>12.1e}")
    print(f"(fast batch = {batch} tiles in one call, {batch // 16} at 128; baseline = plain per-tile splu)")


def model_tiles(arch: str, size: int) -> int:
    """Tiles of both polarities (G+ and G-) of every MVM layer of `arch` (CIFAR, 10 classes) at `size`."""
    shapes = param_shapes(arch, 10, 32)
    count = 0
    for name in mvm_names(arch):
        w = shapes[name]
        rows = int(np.prod(w[1:]))  # C_in k k inputs (conv) or `in` (FC)
        grid = tile_grid((rows, w[0]), size)
        count += grid[0] * grid[1]
    return 2 * count


def bench_models() -> None:
    for arch, size, target_s in (("vgg8", 32, 15.0), ("vgg8", 64, 30.0), ("vgg16", 16, 60.0)):
        n = model_tiles(arch, size)
        G = np.random.default_rng(1).uniform(G_MIN, G_MAX, (n, size, size))
        t0, c0 = time.perf_counter(), time.process_time()
        transfer_matrix(G, **PRESET)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{arch} at {size}x{size}: {n} tiles in {dt:.1f} s wall ({dt / n * 1e3:.3f} ms/tile), "
              f"{cpu:.1f} s CPU over all threads; target {target_s:.0f} s")
        del G


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="tiles per batched fast call")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model workloads")
    args = parser.parse_args()
    print(f"numba threads {numba.get_num_threads()}, cpus {os.cpu_count()}, load average {os.getloadavg()}")
    bench_sizes(args.batch)
    if not args.no_models:
        bench_models()
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
