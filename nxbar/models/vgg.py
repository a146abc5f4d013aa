"""VGG8 / VGG16 inference and backpropagation in NumPy (docs/protocol.md section 2), built from the tables in arch.py.

The network is: input normalisation, then per feature entry either conv3x3 (no bias) + BatchNorm
(inference form) + ReLU or a 2x2 max-pool, then flatten in PyTorch (C, H, W) order, then the FC layers
with ReLU between them. Layers are those of layers.py, except that each conv + BatchNorm + ReLU (+ the
max-pool after it) runs as one Winograd block (winograd.py), value for value the same layers one by one;
this module only strings them together.

A model is immutable: parameters are stored once (read-only views, PyTorch layouts, model dtype); each FC
weight matrix is unrolled and each conv weight Winograd-transformed once, on first use. `with_params` builds
a new model with some arrays swapped (the crossbar mapper's effective weights W', docs/protocol.md section 4.6).
"""

from __future__ import annotations

import numpy as np

from nxbar.models import layers as L
from nxbar.models import winograd
from nxbar.models.arch import IN_CHANNELS, check_arch, mvm_names, param_shapes

# Images per pass through the network: bounds the memory of the activations and of the backward caches;
# the results do not depend on it (an image's rounding does not depend on the other images of its pass).
_CHUNK = 128


def _channel_vector(name: str, value, dtype: np.dtype, positive: bool) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.shape != (IN_CHANNELS,) or not np.all(np.isfinite(v)) or (positive and not np.all(v > 0)):
        need = "positive " if positive else ""
        raise ValueError(f"{name} must be {IN_CHANNELS} finite {need}numbers (one per channel), got {value!r}")
    return v.astype(dtype)


class VGG:
    """A VGG network with hand-written forward and backward passes.

    VGG(arch, params, *, num_classes, input_size, mean, std, bn_eps=1e-5, dtype=np.float32)
      arch        "vgg8" or "vgg16" (nxbar.models.arch)
      params      dict name -> array, exactly the names and shapes of arch.param_shapes (PyTorch layouts)
      mean, std   per-channel input normalisation, (x - mean) / std on [0, 1] pixels
      bn_eps      BatchNorm epsilon
      dtype       float32 (default) or float64 (gradient checks)
    """

    def __init__(self, arch, params, *, num_classes, input_size, mean, std, bn_eps=1e-5, dtype=np.float32):
        table = check_arch(arch)
        shapes = param_shapes(arch, num_classes, input_size)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if not (isinstance(bn_eps, (int, float)) and np.isfinite(bn_eps) and bn_eps > 0):
            raise ValueError(f"bn_eps must be a positive finite number, got {bn_eps!r}")
        missing = [n for n in shapes if n not in params]
        extra = sorted(set(params) - set(shapes))
        if missing:
            raise ValueError(f"params for {arch} lack the array(s) {', '.join(missing)}")
        if extra:
            raise ValueError(f"params for {arch} have unexpected array(s) {', '.join(extra)}")
        stored = {}
        for name, shape in shapes.items():
            a = np.asarray(params[name])
            if a.shape != shape:
                raise ValueError(f"array {name} has shape {a.shape}, expected {shape}")
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"array {name} has dtype {a.dtype}, expected a floating type")
            view = np.asarray(a, dtype=dtype).view()
            view.flags.writeable = False
            stored[name] = view
        self.arch = arch
        self.num_classes = num_classes
        self.input_size = input_size
        self.mean = _channel_vector("mean", mean, dtype, positive=False)
        self.std = _channel_vector("std", std, dtype, positive=True)
        self.bn_eps = float(bn_eps)
        self.dtype = dtype
        self.params = stored
        self.mvm_names = mvm_names(arch)
        self._mats: dict[str, np.ndarray] = {}  # unrolled FC weights, filled once per name by _matrix
        self._wino: dict[str, np.ndarray] = {}  # Winograd transforms U of the conv weights, once per name
        plan, k, features = [], 0, table["features"]
        for i, item in enumerate(features):
            if item != "M":  # a conv block, with the max-pool that follows it (every "M" follows a conv)
                k += 1
                plan.append(("block_pool" if features[i + 1:i + 2] == ("M",) else "block", f"{k}"))
        plan.append(("flatten", None))
        n_fc = len(table["hidden_fc"]) + 1
        for j in range(1, n_fc + 1):
            plan.append(("fc", f"fc{j}"))
            if j < n_fc:
                plan.append(("relu", None))
        self._plan = tuple(plan)

    def __repr__(self) -> str:
        return (f"VGG({self.arch!r}, num_classes={self.num_classes}, input_size={self.input_size}, "
                f"dtype={self.dtype.name})")

    def _matrix(self, name: str) -> np.ndarray:
        """The crossbar-layout matrix of FC weight `name` (layers.fc_weight_to_matrix), unrolled once (a conv
        weight enters the network as its Winograd transform, `_winograd`)."""
        m = self._mats.get(name)
        if m is None:
            m = self._mats[name] = L.fc_weight_to_matrix(self.params[name])
        return m

    def _winograd(self, name: str) -> np.ndarray:
        """U = winograd.weight_transform of conv weight `name` in the model dtype, computed once."""
        u = self._wino.get(name)
        if u is None:
            w_mat = L.conv_weight_to_matrix(self.params[name])
            u = self._wino[name] = winograd.weight_transform(w_mat, self.dtype)
        return u

    # ------------------------------------------------------------------------- derived models
    def _config(self) -> dict:
        return dict(num_classes=self.num_classes, input_size=self.input_size, mean=self.mean, std=self.std,
                    bn_eps=self.bn_eps)

    def with_params(self, replacements: dict) -> "VGG":
        """A new model with the arrays in `replacements` swapped in; the other arrays are shared."""
        unknown = sorted(set(replacements) - set(self.params))
        if unknown:
            raise ValueError(f"replacements name unknown array(s) {', '.join(unknown)}; "
                             f"allowed: the names of {self.arch}'s params")
        new = VGG(self.arch, {**self.params, **replacements}, dtype=self.dtype, **self._config())
        new._mats.update((n, m) for n, m in self._mats.items() if n not in replacements)
        new._wino.update((n, u) for n, u in self._wino.items() if n not in replacements)
        return new

    def astype(self, dtype) -> "VGG":
        """The same network computing in `dtype` (float32 or float64)."""
        return VGG(self.arch, self.params, dtype=dtype, **self._config())

    # ------------------------------------------------------------------------- inputs
    def _images(self, x) -> np.ndarray:
        x = np.asarray(x)
        s = self.input_size
        if x.ndim != 4 or x.shape[1:] != (s, s, IN_CHANNELS):
            raise ValueError(f"x must have shape (N, {s}, {s}, {IN_CHANNELS}) (NHWC), got {x.shape}")
        if x.dtype == np.uint8:
            return x.astype(self.dtype) / self.dtype.type(255)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"x must be uint8 or floating images in [0, 1], got dtype {x.dtype}")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _labels(self, y, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must be {n} integer labels (one per image), got shape {y.shape} dtype {y.dtype}")
        if n and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got range [{y.min()}, {y.max()}]")
        return y

    # ------------------------------------------------------------------------- passes
    def _forward(self, h: np.ndarray, caches: list | None, acts: dict | None = None) -> np.ndarray:
        """Logits of [0, 1] images h (model dtype); appends every layer's cache to `caches` unless None and
        stores each MVM layer's output in `acts[layer name]` unless None (see `activations`)."""
        h, c = L.normalize_forward(h, self.mean, self.std)
        if caches is not None:
            caches.append(c)
        p = self.params
        for kind, key in self._plan:
            if kind.startswith("block"):  # conv{key} + bn{key} + ReLU (+ max-pool)
                u, pool = self._winograd(f"conv{key}.weight"), kind == "block_pool"
                bn = tuple(p[f"bn{key}.{q}"] for q in ("weight", "bias", "running_mean", "running_var"))
                if acts is None:
                    h, c = winograd.conv_bn_relu_forward(h, u, bn, self.bn_eps, pool)
                else:  # layer by layer, to keep the convolution's output: the same values
                    h, c = winograd.conv3x3_forward(h, u)
                    acts[f"conv{key}"] = h
                    h, c = L.batchnorm_relu_forward(h, *bn, self.bn_eps)
                    if pool:
                        h, c = L.maxpool2_forward(h)
            elif kind == "relu":
                h, c = L.relu_forward(h)
            elif kind == "flatten":
                h, c = L.flatten_forward(h)
            else:
                h, c = L.linear_forward(h, self._matrix(f"{key}.weight"), p[f"{key}.bias"])
                if acts is not None:
                    acts[key] = h
            if caches is not None:
                caches.append(c)
        return h

    def _backward(self, dlogits: np.ndarray, caches: list, grads: dict | None) -> np.ndarray:
        """Input gradient from dlogits; adds parameter gradients into `grads` unless it is None."""
        want = grads is not None
        d = dlogits
        for (kind, key), c in zip(reversed(self._plan), reversed(caches[1:])):
            if kind.startswith("block"):
                d, dw, dg, db = winograd.conv_bn_relu_backward(d, c, param_grads=want)
                new = {f"conv{key}.weight": dw, f"bn{key}.weight": dg, f"bn{key}.bias": db}
            elif kind == "relu":
                d, new = L.relu_backward(d, c), {}
            elif kind == "flatten":
                d, new = L.flatten_backward(d, c), {}
            else:
                d, dw, db = L.linear_backward(d, c, param_grads=want)
                new = {f"{key}.weight": dw, f"{key}.bias": db}
            if want:
                for name, g in new.items():
                    grads[name] = grads[name] + g if name in grads else g
        return L.normalize_backward(d, caches[0])

    def forward(self, x) -> np.ndarray:
        """Logits (N, num_classes) of NHWC images x in [0, 1] (uint8 images are divided by 255)."""
        x = self._images(x)
        logits = np.empty((len(x), self.num_classes), dtype=self.dtype)
        for i in range(0, len(x), _CHUNK):
            logits[i:i + _CHUNK] = self._forward(x[i:i + _CHUNK], None)
        return logits

    def activations(self, x) -> dict[str, np.ndarray]:
        """Output of every MVM layer for NHWC images x in [0, 1]: dict layer name -> array, in network order
        (the i-th entry is the layer of mvm_names[i]). Conv layer k ("conv{k}"): the convolution output
        (N, H, W, C_out), before BatchNorm; FC layer j ("fc{j}"): x W^T + b (N, out), before the ReLU
        (the last one is the logits)."""
        x = self._images(x)
        if len(x) == 0:
            raise ValueError("x must hold at least one image")
        chunks: list[dict] = []
        for i in range(0, len(x), _CHUNK):
            chunks.append({})
            self._forward(x[i:i + _CHUNK], None, chunks[-1])
        names = [name.rsplit(".", 1)[0] for name in self.mvm_names]
        return {name: np.concatenate([c[name] for c in chunks]) for name in names}

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predicted labels (int64), evaluating `batch_size` images at a time. Logits that are not finite
        (NaN or inf: overflowing weights or inputs) predict nothing, so they are refused, not counted."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        x = np.asarray(x)
        out, non_finite = [], 0
        for i in range(0, len(x), batch_size):
            logits = self.forward(x[i:i + batch_size])
            non_finite += int(np.count_nonzero(~np.isfinite(logits).all(axis=1)))
            out.append(logits.argmax(axis=1))
        if non_finite:
            raise ValueError(f"{non_finite} of {len(x)} images gave non-finite logits (NaN or inf), so no class "
                             f"can be predicted; the likely cause is the weights (too large, or not finite) or "
                             f"the inputs (not finite)")
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    def _loss_and_grads(self, x, y, grads: dict | None):
        x = self._images(x)
        n = x.shape[0]
        y = self._labels(y, n)
        if n == 0:
            raise ValueError("x must hold at least one image")
        loss, dx = 0.0, np.empty_like(x)
        for i in range(0, n, _CHUNK):
            sl = slice(i, i + _CHUNK)
            caches: list = []
            logits = self._forward(x[sl], caches)
            chunk_loss, dlogits = L.softmax_cross_entropy(logits, y[sl])
            w = len(logits) / n  # mean over the batch = chunk means weighted by chunk size
            loss += chunk_loss * w
            dx[sl] = self._backward(dlogits * dlogits.dtype.type(w), caches, grads)
        return loss, dx

    def loss_and_input_grad(self, x, y):
        """(mean softmax cross-entropy as a float, dL/dx with x's shape in the model dtype).

        dx is the gradient with respect to the [0, 1] pixels (for uint8 input: with respect to x / 255).
        No weight gradient is computed.
        """
        return self._loss_and_grads(x, y, None)

    def loss_and_grads(self, x, y):
        """(loss, dx, grads): grads maps every trainable array (conv/fc weights, fc biases, bn weight/bias)
        to dL/d(array) in its PyTorch layout and the model dtype."""
        grads: dict = {}
        loss, dx = self._loss_and_grads(x, y, grads)
        return loss, dx, grads


def random_params(arch: str, *, num_classes: int, input_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 parameters for tests and benchmarks: He-normal conv/FC weights (std sqrt(2 / fan_in)),
    small random biases, BatchNorm gamma ~ U[0.5, 1.5], beta ~ N(0, 0.1^2), running mean ~ N(0, 0.1^2),
    running var ~ U[0.5, 1.5], so that every layer is non-trivial and activations keep their scale."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(arch, num_classes, input_size).items():
        kind = name.split(".")[1]
        if name.startswith(("conv", "fc")) and kind == "weight":
            a = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif kind == "weight" or kind == "running_var":
            a = rng.uniform(0.5, 1.5, shape)
        else:
            a = rng.normal(0.0, 0.1, shape)
        params[name] = a.astype(np.float32)
    return params
