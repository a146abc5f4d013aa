"""The data a command reads is labelled in the order of the weight file's class names, or refused."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import _load_data
from nxbar.data.load import load_dataset
from nxbar.models.vgg import random_params
from nxbar.weights import load_model, resolve_weights, save_weights

CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset-python.tar.gz"
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def image_folder(root: Path, class_names) -> Path:
    """One 32x32 PNG per class; the folders are read in sorted order."""
    for k, name in enumerate(class_names):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), k, np.uint8)).save(root / name / "0.png")
    return root


@pytest.fixture(scope="module")
def reversed_model(tmp_path_factory):
    """A random VGG8 whose class names are CIFAR-10's in reverse order."""
    stem = tmp_path_factory.mktemp("w") / "vgg8_reversed"
    meta = {"arch": "vgg8", "dataset": "cifar10", "num_classes": 10, "input_size": 32,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "bn_eps": 1e-5,
            "class_names": list(reversed(CIFAR10_NAMES))}
    save_weights(stem, random_params("vgg8", num_classes=10, input_size=32), meta)
    return load_model(stem)[0]


def test_image_folder_is_relabelled_to_the_model_class_order(tmp_path, reversed_model):
    ds = _load_data(str(image_folder(tmp_path, CIFAR10_NAMES)), "test", None, reversed_model)
    assert ds.class_names == tuple(reversed(CIFAR10_NAMES))
    assert ds.images[:, 0, 0, 0].tolist() == list(range(10))  # airplane (pixel 0) .. truck (pixel 9)
    assert ds.labels.tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def test_other_class_names_are_refused(tmp_path, reversed_model):
    names = [("kitten" if c == "cat" else c) for c in CIFAR10_NAMES]
    with pytest.raises(ValueError, match="only in the data set: kitten; only in the model: cat$"):
        _load_data(str(image_folder(tmp_path, names)), "test", None, reversed_model)


ABSENT = pytest.mark.skipif(not CIFAR_SUBSET.exists(), reason=f"shared data file {CIFAR_SUBSET} not present")


@pytest.mark.parametrize("data", ["embedded", pytest.param(str(CIFAR_SUBSET), marks=ABSENT)])
def test_shipped_weights_take_the_cifar10_data_unchanged(data):
    net = load_model(resolve_weights("vgg8"))[0]
    ds = _load_data(data, "test", 10, net)
    assert ds.class_names == CIFAR10_NAMES == net.class_names
    assert ds.labels.tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the first ten CIFAR-10 test labels
    assert "relabelled" not in ds.source
    assert np.array_equal(ds.images, load_dataset("embedded").images[:10])
