"""The shipped weight files (weights/, docs/protocol.md section 2): each loads, is at most 64 MB, reaches its
accuracy target, and nxbar's engine counts exactly the recorded number of correct answers on the first 200 embedded images."""

import json

import pytest

from nxbar.data.load import load_dataset
from nxbar.evaluation import count_correct
from nxbar.weights import load_model, shipped_weights_dir, weight_paths

SHIPPED = sorted(p.with_suffix("") for p in shipped_weights_dir().glob("*.json"))
MAX_BYTES = 64 * 2**20
TARGET = {"vgg8": 0.90, "vgg16": 0.90}  # clean accuracy on the 1,000 embedded images (docs/protocol.md section 2)


@pytest.mark.parametrize("stem", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_weights_load_and_give_the_recorded_accuracy(stem):
    net, meta = load_model(stem)  # validates shapes, dtype, finiteness, hash (and the grids of a hybrid file)
    assert weight_paths(stem)[0].stat().st_size <= MAX_BYTES
    acc = meta["accuracy"]
    first200 = acc["embedded_lossless_test_first200"]
    ds = load_dataset("embedded")
    assert first200["total"] == 200
    assert count_correct(net, ds.images[:200], ds.labels[:200]) == first200["correct"]
    full = acc["embedded_lossless_test"]
    assert full["total"] == 1000
    name = meta.get("model", meta["arch"])
    if name in TARGET:
        assert full["accuracy"] >= TARGET[name], f"{name}: {full['accuracy']:.4f} < {TARGET[name]}"
    assert json.loads(weight_paths(stem)[1].read_text())["training"]["epochs"] >= 1
