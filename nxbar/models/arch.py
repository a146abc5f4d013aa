"""Architecture tables of the VGG networks (docs/protocol.md section 2), the single source of layer names and shapes.

Parameter names (PyTorch layouts, float32 in weight files):
  conv{k}.weight          (C_out, C_in, 3, 3), no bias
  bn{k}.weight, bn{k}.bias, bn{k}.running_mean, bn{k}.running_var   (C_out,)
  fc{k}.weight            (out, in);  fc{k}.bias (out,)
The FC input is the last feature map flattened in (C, H, W) order, as PyTorch does.
"""

from __future__ import annotations

import numpy as np

# "M" is a 2x2 max-pool; integers are 3x3 conv (pad 1) + BatchNorm + ReLU with that many channels.
ARCHITECTURES: dict[str, dict] = {
    "vgg8": {"features": (128, 128, "M", 256, 256, "M", 512, 512, "M"), "hidden_fc": (1024,)},
    "vgg16": {
        "features": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
        "hidden_fc": (),
    },
}
INPUT_SIZES = (32, 64)
IN_CHANNELS = 3


def check_arch(arch: str) -> dict:
    """Return the table of `arch`, or raise ValueError naming the allowed names."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]


def param_shapes(arch: str, num_classes: int, input_size: int) -> dict[str, tuple[int, ...]]:
    """Ordered mapping parameter name -> shape for `arch` with `num_classes` outputs at `input_size`."""
    table = check_arch(arch)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if input_size not in INPUT_SIZES:
        raise ValueError(f"input_size must be one of {INPUT_SIZES}, got {input_size!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    c_in, size, k = IN_CHANNELS, input_size, 0
    for item in table["features"]:
        if item == "M":
            size //= 2
            continue
        k += 1
        shapes[f"conv{k}.weight"] = (item, c_in, 3, 3)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"bn{k}.{s}"] = (item,)
        c_in = item
    n_in = c_in * size * size
    for j, n_out in enumerate((*table["hidden_fc"], num_classes), start=1):
        shapes[f"fc{j}.weight"] = (n_out, n_in)
        shapes[f"fc{j}.bias"] = (n_out,)
        n_in = n_out
    return shapes


def mvm_names(arch: str) -> tuple[str, ...]:
    """Names of the weights that go onto crossbars (every conv and FC weight), in network order."""
    return tuple(n for n in param_shapes(arch, 10, 32) if n.endswith(".weight") and n[:2] in ("co", "fc"))


def multiply_adds(arch: str, num_classes: int, input_size: int) -> int:
    """Multiply-adds of one image's forward pass through the MVM layers as matrix products (conv: H*W*9*C_in*C_out
    at the layer's resolution; FC: in*out); VGG8 at 32x32: about 616 M. The nominal work that engines' speeds
    are measured against (a Winograd convolution does fewer multiplications for the same result)."""
    table, shapes = check_arch(arch), param_shapes(arch, num_classes, input_size)
    total, size, k = 0, input_size, 0
    for item in table["features"]:
        if item == "M":
            size //= 2
            continue
        k += 1
        total += size * size * int(np.prod(shapes[f"conv{k}.weight"]))
    return total + sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith("fc") and n.endswith(".weight"))
