"""Run the tests against this checkout's package."""

import sys
from pathlib import Path

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
