"""Throughput of the NumPy VGG engine against PyTorch CPU float32 on the same network, same process.

VGG8, random weights, batch 128 of 32x32 images: images/s for the forward pass (logits) and for
forward + input gradient (what an attack step costs). Each measurement is the best of several
repeats, NumPy and PyTorch interleaved, so a shared machine penalises both alike. Beside the ratio to PyTorch it
prints each engine's nominal GFLOP/s (2 flops per multiply-add of the matrix-product form) as a share of the
machine's float32 GEMM rate measured in the same run (benchmarks/rates.py).
Targets (README, 'Status and measured speed'): NumPy >= 1.2x PyTorch and >= 65% of the GEMM rate.

    python3 -m benchmarks.bench_engine [--batch 128] [--repeats 5]      (from the repository root)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.rates import gemm_gflops, vgg_gflops
from nxbar.models.vgg import VGG, random_params

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)


def rate(fn, n_images: int) -> float:
    """Images per second of one call of fn() that processes `n_images` images."""
    t = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = VGG("vgg8", random_params("vgg8", num_classes=10, input_size=32), num_classes=10, input_size=32,
                mean=MEAN, std=STD)
    rng = np.random.default_rng(1)
    x = rng.random((args.batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    model.loss_and_input_grad(x[:2], y[:2])  # compile the Numba kernels outside the timing
    runs = {"forward": lambda: model.forward(x), "forward+input grad": lambda: model.loss_and_input_grad(x, y)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        from tools.train_export import from_nxbar

        net = from_nxbar(model)
        for p in net.parameters():
            p.requires_grad_(False)
        xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)

        def torch_forward():
            with torch.no_grad():
                net(xt)

        def torch_grad():
            xg = xt.clone().requires_grad_(True)
            torch.nn.functional.cross_entropy(net(xg), yt).backward()

        torch_runs = {"forward": torch_forward, "forward+input grad": torch_grad}
        torch_forward(), torch_grad()  # warm-up
    gemm = gemm_gflops()
    print(f"VGG8, 32x32, batch {args.batch}, best of {args.repeats}" +
          (f", torch {torch.__version__} with {torch.get_num_threads()} threads" if torch else ", torch not installed"))
    print(f"float32 GEMM (NumPy, 2048x2048): {gemm:.0f} GFLOP/s")
    passes = {"forward": 1, "forward+input grad": 2}
    for name, fn in runs.items():
        rates_np, rates_t = [], []
        for _ in range(args.repeats):  # interleave so background load hits both
            rates_np.append(rate(fn, args.batch))
            if torch is not None:
                rates_t.append(rate(torch_runs[name], args.batch))
        def share(r):
            return f"{r:7.1f} img/s ({vgg_gflops(r, passes[name]) / gemm:4.0%} of GEMM)"

        line = f"{name:20s} numpy {share(max(rates_np))}"
        if torch is not None:
            line += f"   torch {share(max(rates_t))}   ratio numpy/torch {max(rates_np) / max(rates_t):.2f}"
        print(line)


if __name__ == "__main__":
    main()
