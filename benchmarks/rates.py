"""The machine's float32 GEMM rate, measured in the benchmark's own process: the physical limit an engine built on
matrix products is compared with, beside PyTorch."""

from __future__ import annotations

import time

import numpy as np

from nxbar.models.arch import multiply_adds


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of NumPy's float32 matrix product of two n x n matrices (2 n^3 flops), best of `repeats`."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, a, out=out)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.matmul(a, a, out=out)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def vgg_gflops(images_per_s: float, passes: float, arch: str = "vgg8") -> float:
    """The nominal GFLOP/s of an engine that runs `images_per_s` images through `passes` matrix-product passes
    each (forward 1; forward + input gradient 2; PGD-k about 2k): 2 flops per multiply-add of
    `arch.multiply_adds`, whatever algorithm the engine uses."""
    return images_per_s * passes * 2 * multiply_adds(arch, 10, 32) / 1e9
