"""Train VGG8 / VGG16 on CIFAR-10 in PyTorch and export them to nxbar's weight format (docs/protocol.md section 2).

    python3 tools/train_export.py --model vgg8 --epochs 15
    python3 tools/train_export.py --model vgg8 --epochs 15 --export-only

The PyTorch network is built from the same table as nxbar (nxbar.models.arch), with the same parameter
names and layouts: conv{k}.weight (no bias), bn{k}.*, fc{k}.weight/bias, FC input flattened in (C, H, W)
order. Its first operation is the per-channel normalisation (x - mean) / std of [0, 1] pixels.

Recipe: the 50,000 training images of the CIFAR-10 JPEG image folder, read once by nxbar's own loader into
uint8 memory; augmentation = random 32x32 crop of the zero-padded (4 pixels) image and a horizontal flip with
probability 1/2; SGD, Nesterov momentum 0.9, weight decay 5e-4 on every parameter; one-cycle learning rate
(linear warm-up from lr/25 to lr over the first 15% of the steps, then cosine to lr/1e4), stepped every
batch; plain softmax cross-entropy (no label smoothing, which would distort the gradients that attacks use).
Float32 by default; `--bf16` turns on bfloat16 autocast (slower on CPUs without native bfloat16, e.g. AVX2-only).

The run checkpoints (model, optimiser, schedule, random generator, position in the epoch, per-epoch log)
after every epoch and every --checkpoint-minutes inside an epoch, to a folder outside the repository
(default ~/.cache/nxbar/train/<model>_cifar10/); re-running the same command resumes where it stopped.
After the last epoch it exports <out-dir>/<model>_cifar10.{npz,json} in float32 through
nxbar.weights.save_weights, after a parity check of nxbar's NumPy engine against the PyTorch network
(eval mode, float32) on 256 embedded test images:
  logits:          max |z_nxbar - z_torch|                          < 1e-3
  input gradients: max |dx_nxbar - dx_torch| / max |dx_torch|       < 1e-6  (dx = d mean-CE / d pixel)
                   in float64, on the images without a tied max-pool window (see `parity`)
The json records the command, recipe, seed, epochs, final training loss, the parity numbers and the clean
accuracy measured by nxbar's engine on the embedded 1,000 lossless test images (and on their first 200, which
tests/test_shipped_weights.py recounts) and on the JPEG test split.
The per-epoch log goes to <results-dir>/<model>_cifar10.csv.

QUANOS (docs/protocol.md section 6.2): `--quanos-from weights/vgg8_cifar10 --epochs 3` fine-tunes the trained
network with quantisation-aware training into the hybrid-precision <model>q_cifar10. The per-layer bits come from nxbar:
the ANS of every MVM layer under FGSM (--ans-eps, pixel units) on the first --ans-n (un-augmented) training
images, measured on the full-precision network by `nxbar.quanos.attack_ans`, turned into bits by
`nxbar.quanos.bits_from_ans` with --widths. Each weight is fake-quantised in the forward pass (`fake_quantize`:
the values of `nxbar.crossbar.mapping.quantize_weights`, straight-through gradient); the export writes the
quantised weights W_q, with "model": "<model>q", "layer_bits" and the ANS record in the json, so nxbar's
software model is the quantised network and its crossbars map each layer at its own precision.
The schedule is the same one-cycle, from --lr (default 0.01 here, 0.1 for training from scratch).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nxbar.data.dataset import Dataset  # noqa: E402
from nxbar.data.image_folder import load_image_folder  # noqa: E402
from nxbar.data.load import load_dataset  # noqa: E402
from nxbar.models.arch import check_arch, param_shapes  # noqa: E402
from nxbar.crossbar.mapping import quantize_weights  # noqa: E402
from nxbar.evaluation import AttackConfig  # noqa: E402
from nxbar.models.arch import mvm_names  # noqa: E402
from nxbar.models.vgg import VGG  # noqa: E402
from nxbar.quanos import DEFAULT_WIDTHS, attack_ans, bits_from_ans  # noqa: E402
from nxbar.weights import file_sha256, load_model, save_weights, weight_paths  # noqa: E402

# CIFAR-10 training-set per-channel mean and standard deviation of [0, 1] pixels (the usual published values).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
BN_EPS = 1e-5
PAD = 4  # pixels of zero padding before the random crop
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
WARMUP_FRACTION, DIV_FACTOR, FINAL_DIV_FACTOR = 0.15, 25.0, 1e4
PARITY_IMAGES = 256
LOGIT_TOL = 1e-3  # float32 logits
GRAD_TOL = 1e-6  # float64 input gradients, relative to their largest magnitude
TIE_GAP = 1e-9  # relative gap below which two float64 max-pool inputs count as tied (rounding is ~1e-15)
REPO = Path(__file__).resolve().parents[1]


def fake_quantize(w: torch.Tensor, bits: int | None) -> torch.Tensor:
    """W_q = `nxbar.crossbar.mapping.quantize_weights`(W, bits) in the forward pass (the exported file holds
    the same values bit for bit), with the straight-through gradient dW_q/dW := 1 (w_max is a constant of
    the step). bits=None: W unchanged."""
    if bits is None:
        return w
    q = torch.from_numpy(quantize_weights(w.detach().cpu().numpy(), bits)).to(w.device)
    return w + (q - w).detach()


class TorchVGG(nn.Module):
    """The nxbar VGG in PyTorch: normalise, [conv3x3 + BN + ReLU | maxpool2]*, flatten (C, H, W), FC (+ ReLU)*.
    weight_bits {"conv1.weight": b, ...}: those weights are fake-quantised to b bits (QUANOS training)."""

    def __init__(self, arch: str, num_classes: int = 10, input_size: int = 32):
        super().__init__()
        self.arch, self.num_classes, self.input_size = arch, num_classes, input_size
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1), persistent=False)
        self.plan = []  # ("conv", k) | ("pool", None) | ("fc", j)
        shapes = param_shapes(arch, num_classes, input_size)
        k = 0
        for item in check_arch(arch)["features"]:
            if item == "M":
                self.plan.append(("pool", None))
                continue
            k += 1
            c_out, c_in = shapes[f"conv{k}.weight"][:2]
            setattr(self, f"conv{k}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
            setattr(self, f"bn{k}", nn.BatchNorm2d(c_out, eps=BN_EPS))
            self.plan.append(("conv", k))
        j = 1
        while f"fc{j}.weight" in shapes:
            n_out, n_in = shapes[f"fc{j}.weight"]
            setattr(self, f"fc{j}", nn.Linear(n_in, n_out))
            self.plan.append(("fc", j))
            j += 1
        self.num_fc = j - 1
        self.weight_bits: dict[str, int | None] = {}

    def weight(self, name: str) -> torch.Tensor:
        """Parameter `name` (e.g. "conv3.weight") as the forward pass uses it: fake-quantised if in weight_bits."""
        return fake_quantize(self.get_parameter(name), self.weight_bits.get(name))

    def forward(self, x: torch.Tensor, pool_inputs: list | None = None) -> torch.Tensor:
        """Logits of NCHW images x in [0, 1]; the inputs of the max-pools are appended to `pool_inputs`."""
        h = (x - self.mean) / self.std
        for kind, k in self.plan:
            if kind == "pool":
                if pool_inputs is not None:
                    pool_inputs.append(h.detach())
                h = F.max_pool2d(h, 2)
            elif kind == "conv":
                h = F.relu(getattr(self, f"bn{k}")(F.conv2d(h, self.weight(f"conv{k}.weight"), padding=1)))
            else:
                h = F.linear(h.flatten(1), self.weight(f"fc{k}.weight"), getattr(self, f"fc{k}").bias)
                h = F.relu(h) if k < self.num_fc else h
        return h


def to_params(model: TorchVGG) -> dict[str, np.ndarray]:
    """The model's parameters and BN running statistics as float32 NumPy arrays, named as in arch.param_shapes;
    weights in model.weight_bits quantised by nxbar's `quantize_weights` (the file then lies on its grids)."""
    state = model.state_dict()
    return {n: quantize_weights(state[n].detach().float().cpu().numpy().copy(), model.weight_bits.get(n))
            for n in param_shapes(model.arch, model.num_classes, model.input_size)}


def from_nxbar(net: VGG) -> TorchVGG:
    """The TorchVGG carrying an nxbar VGG's parameters, normalisation and BN epsilon, in eval mode (float32)."""
    model = TorchVGG(net.arch, net.num_classes, net.input_size)
    model.load_state_dict({n: torch.from_numpy(np.array(a, dtype=np.float32)) for n, a in net.params.items()})
    model.mean.copy_(torch.tensor(net.mean, dtype=torch.float32).view(1, 3, 1, 1))
    model.std.copy_(torch.tensor(net.std, dtype=torch.float32).view(1, 3, 1, 1))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = net.bn_eps
    return model.eval()


def augment(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Random-crop + flip of uint8 NHWC images: image i is cut at rows dy[i]..dy[i]+H-1 and columns
    dx[i]..dx[i]+W-1 of its copy zero-padded by PAD pixels on every side (0 <= dy, dx <= 2 PAD), then
    mirrored left-right where flip[i]. Returns float32 NCHW in [0, 1]."""
    n, h, w, _ = images.shape
    padded = F.pad(images, (0, 0, PAD, PAD, PAD, PAD))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = dx[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]
    out = padded[torch.arange(n)[:, None, None], rows, cols]
    return out.permute(0, 3, 1, 2).float().div_(255).contiguous()


def random_augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """augment() with offsets uniform in {0..2 PAD} and flips with probability 1/2, drawn from `gen`."""
    n = images.shape[0]
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    return augment(images, dy, dx, flip)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC NumPy images -> float32 NCHW tensor in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255).contiguous()


@torch.no_grad()
def torch_accuracy(model: TorchVGG, images: np.ndarray, labels: np.ndarray, bf16: bool, batch: int = 250) -> float:
    """Fraction of images the PyTorch model (eval mode) classifies correctly."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(to_tensor(images[i:i + batch]))
        correct += int((logits.argmax(1).numpy() == labels[i:i + batch]).sum())
    return correct / len(labels)


def nxbar_accuracy(net: VGG, images: np.ndarray, labels: np.ndarray, batch: int = 200) -> tuple[int, int]:
    """(correct, total) of nxbar's NumPy engine on uint8 images."""
    return int((net.predict(images, batch) == labels).sum()), len(labels)


def pool_near_ties(pool_inputs: list[torch.Tensor], rel_gap: float = TIE_GAP) -> np.ndarray:
    """Per image: the number of 2x2 max-pool windows whose maximum m > 0 beats the runner-up by less than
    rel_gap * m. There, which element is the maximum -- and so where the gradient goes -- is decided by
    float rounding, which differs between two correct implementations (e.g. flat image regions)."""
    counts = 0
    for h in pool_inputs:
        n, c, height, width = h.shape
        windows = h.reshape(n, c, height // 2, 2, width // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, -1, 4)
        top2 = windows.topk(2, dim=-1).values
        near = (top2[..., 0] > 0) & (top2[..., 0] - top2[..., 1] < rel_gap * top2[..., 0])
        counts = counts + near.sum(1).numpy()
    return counts


def _torch_loss_and_grad(model: TorchVGG, images: np.ndarray, labels: np.ndarray, dtype):
    """(logits, mean CE, dL/dx NHWC, max-pool inputs) of the PyTorch model for uint8 NHWC images."""
    x = torch.from_numpy(images).to(dtype).div(255).requires_grad_(True)
    pool_inputs: list = []
    logits = model(x.permute(0, 3, 1, 2), pool_inputs)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    (dx,) = torch.autograd.grad(loss, x)
    return logits.detach().numpy(), loss.item(), dx.numpy(), pool_inputs


def parity(model: TorchVGG, net: VGG, images: np.ndarray, labels: np.ndarray) -> dict:
    """Compare nxbar's NumPy engine with the PyTorch model (eval mode, no autocast) on uint8 images.

    Logits, float32: max |z_nxbar - z_torch| < LOGIT_TOL.
    Input gradient of the mean cross-entropy w.r.t. the [0, 1] pixels, float64 on both sides:
    max |dx_nxbar - dx_torch| over the images without a tied max-pool window (pool_near_ties), divided by
    max |dx_torch| over all images, < GRAD_TOL, and at least half of the images tie-free. At a tie both
    implementations send the gradient to the first maximum, but which element is the maximum is decided by
    rounding (flat image regions); in float32, rounding also flips near-ties, so float32 gradients are only
    reported (relative max difference over all images, cosine).
    """
    model.eval()
    z_t, loss_t, dx_t, _ = _torch_loss_and_grad(model, images, labels, torch.float32)
    loss_n, dx_n = net.loss_and_input_grad(images, labels)
    out = {
        "images": len(labels),
        "max_abs_logit_diff_float32": float(np.abs(net.forward(images) - z_t).max()),
        "logit_tolerance": LOGIT_TOL,
        "loss_torch_float32": loss_t, "loss_nxbar_float32": float(loss_n),
        "input_grad_rel_diff_float32_all": float(np.abs(dx_n - dx_t).max() / np.abs(dx_t).max()),
        "input_grad_cosine_float32_all": float((dx_n * dx_t).sum() / (np.linalg.norm(dx_n) * np.linalg.norm(dx_t))),
    }
    _, _, dx_t, pool_inputs = _torch_loss_and_grad(copy.deepcopy(model).double(), images, labels, torch.float64)
    _, dx_n = net.astype(np.float64).loss_and_input_grad(images, labels)
    tie_free = pool_near_ties(pool_inputs) == 0
    diff = np.abs(dx_n - dx_t).max(axis=(1, 2, 3)) / np.abs(dx_t).max()
    out.update({
        "input_grad_metric": "float64: max |dx_nxbar - dx_torch| over tie-free images / max |dx_torch|",
        "input_grad_rel_diff_float64_tie_free": float(diff[tie_free].max()) if tie_free.any() else None,
        "input_grad_tolerance": GRAD_TOL,
        "tie_free_images": int(tie_free.sum()), "tie_rel_gap": TIE_GAP,
        "input_grad_rel_diff_float64_all": float(diff.max()),
    })
    out["passed"] = bool(out["max_abs_logit_diff_float32"] < LOGIT_TOL and 2 * tie_free.sum() >= len(labels)
                         and out["input_grad_rel_diff_float64_tie_free"] < GRAD_TOL)
    return out


def export(model: TorchVGG, stem: Path, *, class_names, parity_set, eval_sets: dict, meta: dict) -> dict:
    """Check parity on `parity_set` (images, labels), measure nxbar's accuracy on each of `eval_sets`
    {name: (images, labels, description)}, write the weight file `stem`.{npz,json} and return its json record.
    Raises RuntimeError (and writes nothing) if parity fails."""
    params = to_params(model)
    num_classes, input_size = model.num_classes, model.input_size
    config = dict(num_classes=num_classes, input_size=input_size, mean=np.array(CIFAR10_MEAN),
                  std=np.array(CIFAR10_STD), bn_eps=BN_EPS)
    net = VGG(model.arch, params, dtype=np.float32, **config)
    check = parity(model, net, *parity_set)
    print(f"parity: {check}", flush=True)
    if not check["passed"]:
        raise RuntimeError(f"parity check failed, nothing exported: {check}")
    accuracy = {}
    for name, (images, labels, description) in eval_sets.items():
        t = time.time()
        correct, total = nxbar_accuracy(net, images, labels)
        accuracy[name] = {"correct": correct, "total": total, "accuracy": correct / total,
                          "data": description, "engine": "nxbar NumPy float32"}
        print(f"nxbar accuracy {name}: {correct}/{total} = {correct / total:.4f} ({time.time() - t:.0f} s)", flush=True)
    record = {
        "arch": model.arch, "dataset": "cifar10", "num_classes": num_classes, "input_size": input_size,
        "normalization": {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}, "bn_eps": BN_EPS,
        "class_names": list(class_names), **meta, "accuracy": accuracy, "parity": check,
    }
    save_weights(stem, params, record)
    loaded, _ = load_model(stem)
    probe = parity_set[0][:2]
    if not np.array_equal(loaded.forward(probe), net.forward(probe)):
        raise RuntimeError(f"{stem}: the written weight file does not reproduce the exported network")
    print(f"exported {stem}.npz / .json", flush=True)
    return record


# ---------------------------------------------------------------------------------------------- training
def one_cycle(step: int, total: int, lr: float) -> float:
    """Learning rate at `step` of `total`: linear lr/DIV_FACTOR -> lr over WARMUP_FRACTION of the steps,
    then cosine lr -> lr/FINAL_DIV_FACTOR."""
    warm = max(1, round(WARMUP_FRACTION * total))
    lo, end = lr / DIV_FACTOR, lr / FINAL_DIV_FACTOR
    if step < warm:
        return lo + (lr - lo) * step / warm
    t = (step - warm) / max(1, total - warm)
    return end + (lr - end) * 0.5 * (1 + math.cos(math.pi * t))


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a killed run never leaves a truncated checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_csv(path: Path, log: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds"])
        writer.writeheader()
        writer.writerows(log)


RECIPE_KEYS = ("model", "epochs", "batch_size", "lr", "seed", "limit_train", "bf16")
QUANOS_KEYS = ("quanos_from", "widths", "ans_n", "ans_eps")  # part of the recipe of a QUANOS fine-tune only


def recipe_of(args) -> dict:
    keys = RECIPE_KEYS + (QUANOS_KEYS if args.quanos_from else ())
    return {k: getattr(args, k) for k in keys}


def quanos_plan(args, train_set: Dataset) -> dict:
    """Per-layer bits of the QUANOS network: ANS of the full-precision --quanos-from network (nxbar's engine)
    under FGSM --ans-eps on the first --ans-n training images, then `bits_from_ans` with --widths."""
    net, meta = load_model(args.quanos_from)
    if net.arch != args.model:
        raise ValueError(f"--quanos-from {args.quanos_from} holds arch {net.arch!r}, not --model {args.model!r}")
    if "layer_bits" in meta:
        raise ValueError(f"--quanos-from {args.quanos_from} is already a hybrid-precision network; "
                         "give the full-precision one")
    if not 1 <= args.ans_n <= len(train_set.labels):
        raise ValueError(f"--ans-n {args.ans_n} must be in 1..{len(train_set.labels)} (the training images)")
    cfg = AttackConfig(attack="fgsm", eps=args.ans_eps)
    t = time.time()
    ans = attack_ans(net, train_set.images[:args.ans_n], train_set.labels[:args.ans_n], cfg)
    bits = bits_from_ans(ans, args.widths)
    print(f"ANS ({time.time() - t:.0f} s): " + ", ".join(f"{k} {v:.4f} -> {bits[k]} bits" for k, v in ans.items()),
          flush=True)
    return {"ans": ans, "bits": bits, "widths": list(args.widths), "attack": cfg.as_dict(),
            "ans_images": f"first {args.ans_n} training images of {train_set.source}, no augmentation",
            "rule": bits_from_ans.__doc__.split("\n\n")[1].strip(),
            "from": {"weights": str(weight_paths(args.quanos_from)[0]),
                     "npz_sha256": file_sha256(weight_paths(args.quanos_from)[0]), "accuracy": meta.get("accuracy")}}


def initial_model(args, plan: dict | None) -> TorchVGG:
    """A fresh network, or for QUANOS the full-precision one with its weights fake-quantised per `plan`."""
    if plan is None:
        return TorchVGG(args.model)
    model = from_nxbar(load_model(args.quanos_from)[0])
    model.weight_bits = {f"{name}.weight": b for name, b in plan["bits"].items()}
    return model


def train(args, ckpt_dir: Path, train_set, test_set, plan: dict | None = None) -> dict:
    """Run (or resume) training to args.epochs (from `plan`'s QUANOS start if given); return the final state."""
    recipe = recipe_of(args)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "checkpoint.pt"
    # Set here, after any nxbar work (the QUANOS ANS): torch and nxbar's parallel Numba kernels share one
    # OpenMP runtime, and a Numba parallel region sets its thread count back to Numba's (the number of cores).
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = initial_model(args, plan).to(memory_format=torch.channels_last)  # NHWC in oneDNN: ~1.07x here
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, nesterov=True,
                          weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.from_numpy(train_set.images)
    labels = torch.from_numpy(train_set.labels)
    steps = len(labels) // args.batch_size
    if steps == 0:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(labels)} training images")
    total = steps * args.epochs
    state = {"recipe": recipe, "command": _command(), "epoch": 0, "step": 0, "log": [], "perm": None,
             "sums": [0.0, 0, 0], "seconds": 0.0, "quanos": plan}
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        if state["recipe"] != recipe or state.get("quanos") != plan:
            raise ValueError(f"{ckpt_path} was made with {state['recipe']} (QUANOS plan {state.get('quanos')}), "
                             f"not {recipe} (plan {plan}); use the same options or another --checkpoint-dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        print(f"resumed from {ckpt_path}: epoch {state['epoch']} step {state['step']}", flush=True)
    last_save = time.time()

    def checkpoint():
        state.update(model=model.state_dict(), optimizer=opt.state_dict(), rng=gen.get_state())
        save_checkpoint(ckpt_path, state)

    while state["epoch"] < args.epochs:
        epoch = state["epoch"] + 1
        if state["perm"] is None:
            state["perm"] = torch.randperm(len(labels), generator=gen)
        model.train()
        t0, t_last, n_last = time.time(), time.time(), 0
        for step in range(state["step"], steps):
            idx = state["perm"][step * args.batch_size:(step + 1) * args.batch_size]
            x, y = random_augment(images[idx], gen).contiguous(memory_format=torch.channels_last), labels[idx]
            lr = one_cycle((epoch - 1) * steps + step, total, args.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums = state["sums"]
            sums[0] += loss.item() * len(y)
            sums[1] += int((logits.argmax(1) == y).sum())
            sums[2] += len(y)
            state["step"] = step + 1
            n_last += len(y)
            now = time.time()
            if (step + 1) % args.print_every == 0 or step + 1 == steps:
                rate = n_last / (now - t_last)
                left = (total - (epoch - 1) * steps - step - 1) * args.batch_size / rate
                print(f"epoch {epoch}/{args.epochs} step {step + 1}/{steps} lr {lr:.4f} "
                      f"loss {sums[0] / sums[2]:.4f} acc {sums[1] / sums[2]:.4f} {rate:.1f} img/s "
                      f"ETA {left / 3600:.2f} h", flush=True)
                t_last, n_last = now, 0
            if now - last_save > 60 * args.checkpoint_minutes and step + 1 < steps:
                state["seconds"] += now - t0
                t0 = now
                checkpoint()
                last_save = now
        state["seconds"] += time.time() - t0
        test_acc = torch_accuracy(model, test_set.images, test_set.labels, args.bf16)
        sums = state["sums"]
        state["log"].append({"epoch": epoch, "lr": f"{lr:.6g}", "train_loss": f"{sums[0] / sums[2]:.5f}",
                             "train_acc": f"{sums[1] / sums[2]:.5f}", "test_acc": f"{test_acc:.4f}",
                             "seconds": f"{state['seconds']:.0f}"})
        print(f"== epoch {epoch}: {state['log'][-1]}", flush=True)
        state.update(epoch=epoch, step=0, perm=None, sums=[0.0, 0, 0], seconds=0.0)
        checkpoint()
        last_save = time.time()
        write_csv(ckpt_dir / "log.csv", state["log"])
    model.load_state_dict(state["model"])
    state["torch_model"] = model
    return state


def _command() -> str:
    return "python3 tools/train_export.py " + shlex.join(sys.argv[1:])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["vgg8", "vgg16"], default="vgg8")
    p.add_argument("--epochs", type=int, default=None, help="default 15, or 3 with --quanos-from")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate of the one-cycle schedule; default 0.1, or 0.01 with --quanos-from")
    p.add_argument("--quanos-from", default=None,
                   help="QUANOS: fine-tune this full-precision nxbar weight file into <model>q (hybrid precision)")
    p.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                   help="QUANOS bit widths handed out by ANS rank, comma-separated")
    p.add_argument("--ans-n", type=int, default=512, help="QUANOS: training images for the ANS")
    p.add_argument("--ans-eps", type=float, default=0.1, help="QUANOS: FGSM eps (pixel units) for the ANS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(REPO.parent / "shared/data/cifar-10-images-jpeg.zip"),
                   help="CIFAR-10 image folder (zip or folder) with train/ and test/")
    p.add_argument("--out-dir", default=str(REPO / "weights"))
    p.add_argument("--results-dir", default=str(REPO / "reference_results/training"))
    p.add_argument("--checkpoint-dir", default=None, help="default ~/.cache/nxbar/train/<model>_cifar10")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, help="also checkpoint inside an epoch")
    p.add_argument("--export-only", action="store_true", help="export from the last checkpoint, no training")
    p.add_argument("--limit-train", type=int, default=None, help="use the first N training images (tests)")
    p.add_argument("--limit-eval", type=int, default=None, help="evaluate on the first N test images (tests)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast only with native bf16 CPUs)")
    p.add_argument("--print-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the training steps")
    args = p.parse_args(argv)
    quanos = args.quanos_from is not None
    args.epochs = args.epochs if args.epochs is not None else 3 if quanos else 15
    args.lr = args.lr if args.lr is not None else 0.01 if quanos else 0.1
    try:
        args.widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise ValueError(f"--widths {args.widths!r}: expected integers such as 2,4") from None
    for name in ("epochs", "batch_size", "print_every", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    return args


def training_data(args, embedded: Dataset) -> tuple[Dataset, Dataset]:
    """(training images of --data, the first --limit-train of them; the first --limit-eval embedded images)."""
    t = time.time()
    train_set = load_image_folder(args.data, split="train")
    if args.limit_train:
        n = args.limit_train
        train_set = Dataset(train_set.images[:n], train_set.labels[:n], train_set.class_names,
                            f"{train_set.source}, first {n}")
    print(f"loaded {len(train_set.labels)} training images in {time.time() - t:.0f} s", flush=True)
    n = args.limit_eval
    return train_set, Dataset(embedded.images[:n], embedded.labels[:n], embedded.class_names, embedded.source)


def main(argv=None) -> dict:
    args = parse_args(argv)
    name = f"{args.model}q" if args.quanos_from else args.model
    stem = f"{name}_cifar10"
    ckpt_dir = Path(args.checkpoint_dir or Path.home() / ".cache/nxbar/train" / stem).expanduser()
    embedded = load_dataset("embedded")
    emb = (embedded.images[:args.limit_eval], embedded.labels[:args.limit_eval])
    if args.export_only:
        state = torch.load(ckpt_dir / "checkpoint.pt", weights_only=False)
        if state["epoch"] < state["recipe"]["epochs"]:
            raise ValueError(f"{ckpt_dir}: training stopped at epoch {state['epoch']} of "
                             f"{state['recipe']['epochs']}; run without --export-only to finish it")
        model = initial_model(args, state.get("quanos"))
        model.load_state_dict(state["model"])
    else:
        train_set, test_set = training_data(args, embedded)
        plan = quanos_plan(args, train_set) if args.quanos_from else None
        state = train(args, ckpt_dir, train_set, test_set, plan)
        model = state["torch_model"]
    jpeg_test = load_image_folder(args.data, split="test")
    if list(jpeg_test.class_names) != list(embedded.class_names):
        raise ValueError(f"{args.data}: classes {jpeg_test.class_names} differ from {embedded.class_names}")
    jpeg = (jpeg_test.images[:args.limit_eval], jpeg_test.labels[:args.limit_eval])
    log = state["log"]
    meta = {"training": {
        "command": state["command"], "export_command": _command(), "framework": f"torch {torch.__version__}",
        "recipe": {**state["recipe"], "optimizer": "SGD", "momentum": MOMENTUM, "nesterov": True,
                   "weight_decay": WEIGHT_DECAY, "schedule": "one-cycle per batch: linear warm-up "
                   f"lr/{DIV_FACTOR:g} -> lr over {WARMUP_FRACTION:g} of the steps, cosine to lr/{FINAL_DIV_FACTOR:g}",
                   "augmentation": f"random crop 32x32 of the {PAD}-pixel zero-padded image, horizontal flip p=0.5",
                   "loss": "softmax cross-entropy (mean)", "train_data": args.data + " train/ (JPEG)"},
        "epochs": state["epoch"], "final_train_loss": float(log[-1]["train_loss"]),
        "final_train_acc": float(log[-1]["train_acc"]), "seconds": sum(float(r["seconds"]) for r in log),
    }}
    if state.get("quanos"):
        plan = state["quanos"]
        meta.update(model=name, layer_bits=[plan["bits"][n.rsplit(".", 1)[0]] for n in mvm_names(args.model)],
                    quanos=plan)
        meta["training"]["recipe"]["quantisation"] = ("QAT: weights fake-quantised per layer (layer_bits), "
                                                      "straight-through gradient; exported quantised")
    n = min(PARITY_IMAGES, len(emb[1]))
    export(model, Path(args.out_dir) / stem, class_names=embedded.class_names,
           parity_set=(emb[0][:n], emb[1][:n]),
           eval_sets={"embedded_lossless_test": (*emb, embedded.source),
                      "embedded_lossless_test_first200": (emb[0][:200], emb[1][:200], embedded.source + ", first 200"),
                      "jpeg_test": (*jpeg, jpeg_test.source + " (JPEG test images)")},
           meta=meta)
    write_csv(Path(args.results_dir) / f"{stem}.csv", log)
    return state


if __name__ == "__main__":
    main()
