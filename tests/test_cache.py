"""nxbar.cache: an entry that cannot be read, or that is not what its caller expects, is a miss and is rewritten."""

import json

import numpy as np
import pytest

from nxbar import cache as disk_cache
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_model

CONFIG = CrossbarConfig(size=8)  # wire resistances: W' differs from W, so a software weight is told apart


class TinyNet:
    """The part of the VGG interface map_model uses, with two small MVM layers."""

    mvm_names = ("conv1.weight", "fc1.weight")

    def __init__(self, params):
        self.params = params

    def with_params(self, replacements):
        return TinyNet({**self.params, **replacements})


@pytest.fixture
def net():
    rng = np.random.default_rng(0)
    return TinyNet({"conv1.weight": rng.normal(size=(4, 3, 3, 3)), "fc1.weight": rng.normal(size=(5, 40))})


@pytest.fixture
def first(net, tmp_path):
    """The tiny net mapped once, its entry stored in tmp_path."""
    mapped = map_model(net, CONFIG, cache_dir=tmp_path)
    assert not mapped.cached and map_model(net, CONFIG, cache_dir=tmp_path).cached
    return mapped


def _entry(tmp_path, suffix):
    (path,) = tmp_path.glob(f"mapped-*{suffix}")
    return path


def _mapped_again_and_rewritten(net, first, tmp_path):
    """Map once more: the entry is a miss, the mapping is the first one, and the rewritten entry is a hit."""
    again = map_model(net, CONFIG, cache_dir=tmp_path)
    assert not again.cached
    assert [{**r, "solve_s": 0} for r in again.report] == [{**r, "solve_s": 0} for r in first.report]
    for name in net.mvm_names:
        np.testing.assert_array_equal(again.params[name], first.params[name])
        assert not np.array_equal(again.params[name], net.params[name])  # W', not the software weight
    assert map_model(net, CONFIG, cache_dir=tmp_path).cached


def test_empty_npz_is_a_miss_and_is_rewritten(net, first, tmp_path):
    _entry(tmp_path, ".npz").write_bytes(b"")  # what a crash can leave
    _mapped_again_and_rewritten(net, first, tmp_path)
    assert _entry(tmp_path, ".npz").stat().st_size > 0


@pytest.mark.parametrize("damage", ["missing layer", "extra array", "other shape", "other dtype"])
def test_entry_with_other_arrays_is_a_miss(net, first, tmp_path, damage):
    arrays = {name: first.params[name] for name in net.mvm_names}
    if damage == "missing layer":
        del arrays["fc1.weight"]
    elif damage == "extra array":
        arrays["fc2.weight"] = np.zeros((2, 5))
    elif damage == "other shape":
        arrays["fc1.weight"] = arrays["fc1.weight"][:, :20]
    else:
        arrays["fc1.weight"] = arrays["fc1.weight"].astype(np.float32)
    np.savez(_entry(tmp_path, ".npz"), **arrays)
    _mapped_again_and_rewritten(net, first, tmp_path)


@pytest.mark.parametrize("report", [{"conv1.weight": {}}, [], "[", [{"name": "conv1.weight"}, "fc1.weight"],
                                    [{"name": "fc1.weight"}, {"name": "conv1.weight"}]])
def test_report_of_the_wrong_shape_is_a_miss(net, first, tmp_path, report):
    _entry(tmp_path, ".json").write_text(report if isinstance(report, str) else json.dumps(report))
    _mapped_again_and_rewritten(net, first, tmp_path)


def test_load_checks_the_arrays_the_caller_expects(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    disk_cache.save("k", {"x_adv": x}, {"made": "here"}, tmp_path, kind="adversarial")
    arrays, report = disk_cache.load("k", tmp_path, "adversarial", expect={"x_adv": ((2, 3), np.float32)})
    np.testing.assert_array_equal(arrays["x_adv"], x)
    assert arrays["x_adv"].dtype == np.float32 and report == {"made": "here"}
    for expect in ({"x_adv": ((3, 2), np.float32)}, {"x_adv": ((2, 3), np.float64)}, {"x": ((2, 3), np.float32)},
                   {"x_adv": ((2, 3), np.float32), "labels": ((2,), np.int64)}):
        assert disk_cache.load("k", tmp_path, "adversarial", expect=expect) is None
    assert disk_cache.load("k", tmp_path, "adversarial", expect={"x_adv": ((2, 3), np.float32)},
                           report_ok=lambda r: r == {"made": "elsewhere"}) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adversarial-k.json", "adversarial-k.npz"]  # no temp files
