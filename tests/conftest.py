"""Run the tests against this checkout's package."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A VGG8 weight file with random (He-scaled) weights and CIFAR-10's class names: enough to exercise every
    command on the embedded images."""
    from nxbar.data.load import load_dataset
    from nxbar.models.vgg import random_params
    from nxbar.weights import save_weights

    meta = {
        "arch": "vgg8", "dataset": "cifar10", "num_classes": 10, "input_size": 32,
        "normalization": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}, "bn_eps": 1e-5,
        "class_names": list(load_dataset("embedded").class_names),
    }
    stem = tmp_path_factory.mktemp("w") / "vgg8_random"
    save_weights(stem, random_params("vgg8", num_classes=10, input_size=32), meta)
    return str(stem)


class LinearNet:
    """logits = flatten(x) W^T + b, mean softmax cross-entropy; the VGG interface map_model and the attacks use."""

    mvm_names = ("fc1.weight",)
    std = np.array([0.25, 0.5, 0.125])
    dtype = np.dtype(np.float64)

    def __init__(self, params):
        self.params = params

    def with_params(self, replacements):
        return LinearNet({**self.params, **replacements})

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.params["fc1.weight"].T + self.params["fc1.bias"]

    def predict(self, x):
        return np.argmax(self.forward(x), axis=1)

    def loss_and_input_grad(self, x, y):
        z = self.forward(x)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y]))
        p[np.arange(len(y)), y] -= 1
        return loss, (p @ self.params["fc1.weight"] / len(y)).reshape(x.shape)
