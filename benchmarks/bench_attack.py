"""PGD throughput: nxbar's hand-written attack on the NumPy engine against the same attack written in PyTorch
(CPU, float32) on the same network, in the same process.

VGG8 with random He-scaled weights (the cost does not depend on the values), 32x32 images, L-infinity PGD with
eps 8/255, alpha 2/255, random start. Images per second of the whole attack; NumPy and PyTorch runs interleaved,
best of --repeats; each also as a share of the machine's float32 GEMM rate measured in the same run (nominal
flops: 2 matrix-product passes per step, benchmarks/rates.py). Target (README, 'Status and measured speed'):
NumPy >= 1.2x PyTorch.

    python3 -m benchmarks.bench_attack [--batch 128] [--steps 10] [--repeats 3]     (from the repository root)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.rates import gemm_gflops, vgg_gflops
from nxbar.attacks import PGD_ALPHA, pgd
from nxbar.models.vgg import VGG, random_params
from tools.train_export import CIFAR10_MEAN, CIFAR10_STD, from_nxbar

EPS, ALPHA = 8 / 255, PGD_ALPHA


def torch_pgd(net, x, y, eps, alpha, steps, gen):
    """The PyTorch twin of nxbar.attacks.pgd: random start, signed-gradient steps, projection after each."""
    x_adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps).clamp(x - eps, x + eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = (x_adv.detach() + alpha * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    return x_adv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = VGG("vgg8", random_params("vgg8", num_classes=10, input_size=32), num_classes=10, input_size=32,
                mean=CIFAR10_MEAN, std=CIFAR10_STD)
    net = from_nxbar(model)
    for p in net.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 32, 32, 3), dtype=np.float32)
    y = model.predict(x)
    xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)

    def run_numpy():
        pgd(model, x, y, EPS, steps=args.steps, alpha=ALPHA, rng=np.random.default_rng(0))

    def run_torch():
        torch_pgd(net, xt, yt, EPS, ALPHA, args.steps, gen)

    model.loss_and_input_grad(x[:2], y[:2])  # compile the Numba kernels outside the timing
    run_torch()  # warm-up
    best = {"numpy": 0.0, "torch": 0.0}
    for _ in range(args.repeats):  # interleaved, so background load hits both
        for name, fn in (("numpy", run_numpy), ("torch", run_torch)):
            t = time.perf_counter()
            fn()
            best[name] = max(best[name], args.batch / (time.perf_counter() - t))
    gemm = gemm_gflops()
    print(f"PGD on VGG8, 32x32, batch {args.batch}, {args.steps} steps, best of {args.repeats}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"float32 GEMM (NumPy, 2048x2048) {gemm:.0f} GFLOP/s")
    share = {k: vgg_gflops(r, 2 * args.steps) / gemm for k, r in best.items()}
    print(f"numpy {best['numpy']:.1f} img/s ({share['numpy']:.0%} of GEMM)   torch {best['torch']:.1f} img/s "
          f"({share['torch']:.0%} of GEMM)   ratio numpy/torch {best['numpy'] / best['torch']:.2f}")


if __name__ == "__main__":
    main()
