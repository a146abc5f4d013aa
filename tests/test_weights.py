"""Weight files: exact round trip, and every kind of bad file refused with a message naming the defect."""

import json
import zipfile

import numpy as np
import pytest

from nxbar.models.arch import param_shapes
from nxbar.models.vgg import random_params
from nxbar.weights import WeightFileError, load_weights, save_weights, weight_paths

META = {
    "arch": "vgg8",
    "dataset": "cifar10",
    "num_classes": 10,
    "input_size": 32,
    "normalization": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]},
    "bn_eps": 1e-5,
    "class_names": [f"c{i}" for i in range(10)],
    "training": {"note": "random test weights"},
}


@pytest.fixture(scope="module")
def params():
    return random_params("vgg8", num_classes=10, input_size=32)


@pytest.fixture
def saved(tmp_path, params):
    save_weights(tmp_path / "vgg8_cifar10", params, META)
    return tmp_path / "vgg8_cifar10"


def test_round_trip_is_exact(saved, params):
    loaded, meta = load_weights(saved)
    assert list(loaded) == list(param_shapes("vgg8", 10, 32))
    for name, arr in params.items():
        assert loaded[name].dtype == np.float32
        assert np.array_equal(loaded[name], arr)
    assert meta["training"] == META["training"] and meta["class_names"] == META["class_names"]
    with zipfile.ZipFile(saved.with_suffix(".npz")) as z:  # every array deflated, none stored
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    # the same file is reachable by its stem, its .npz and its .json
    for p in (saved, saved.with_suffix(".npz"), weight_paths(saved)[1]):
        assert np.array_equal(load_weights(p)[0]["fc2.bias"], params["fc2.bias"])


def test_load_model_gives_a_vgg(saved):
    from nxbar.weights import load_model

    model, meta = load_model(saved)
    assert model.arch == "vgg8" and model.num_classes == 10 and meta["dataset"] == "cifar10"


def rewrite_json(saved, **changes):
    path = weight_paths(saved)[1]
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def rewrite_npz(saved, arrays):
    """Replace the npz and record its new hash, so that only the array defect is left to find."""
    npz, js = weight_paths(saved)
    np.savez(npz, **arrays)
    from nxbar.weights import file_sha256

    rewrite_json(saved, npz_sha256=file_sha256(npz))


def expect(saved, *fragments):
    with pytest.raises(WeightFileError) as info:
        load_weights(saved)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_missing_files(tmp_path, saved):
    expect(tmp_path / "nothing", "nothing.json", "not found")
    weight_paths(saved)[0].unlink()
    expect(saved, "vgg8_cifar10.npz", "not found")


def test_hash_mismatch(saved):
    npz = weight_paths(saved)[0]
    data = bytearray(npz.read_bytes())
    data[-100] ^= 0xFF
    npz.write_bytes(bytes(data))
    expect(saved, "vgg8_cifar10.npz", "does not match npz_sha256")


def test_bad_json(saved):
    weight_paths(saved)[1].write_text("{not json")
    expect(saved, "vgg8_cifar10.json", "not valid JSON")


def test_unknown_architecture(saved):
    rewrite_json(saved, arch="vgg11")
    expect(saved, "unknown architecture 'vgg11'", "vgg16")


def test_wrong_format_version(saved):
    rewrite_json(saved, format_version=99)
    expect(saved, "format_version 99")


def test_missing_field(saved):
    path = weight_paths(saved)[1]
    meta = json.loads(path.read_text())
    del meta["class_names"]
    path.write_text(json.dumps(meta))
    expect(saved, "missing field(s) class_names")


def test_bad_normalization(saved):
    rewrite_json(saved, normalization={"mean": [0, 0, 0], "std": [1, 0, 1]})
    expect(saved, "std must be > 0")


@pytest.mark.parametrize("changes, message", [
    ({"bn_eps": True}, "bn_eps must be a finite number > 0, got True"),
    ({"bn_eps": float("inf")}, "bn_eps must be a finite number > 0, got inf"),
    ({"num_classes": True}, "num_classes must be an integer, got True"),
    ({"input_size": True}, "input_size must be an integer, got True"),
    ({"input_size": 32.0}, "input_size must be an integer, got 32.0"),
    ({"normalization": {"mean": [0.5, True, 0.5], "std": [0.25] * 3}},
     "normalization mean must be a list of 3 numbers, got [0.5, True, 0.5]"),
    ({"normalization": {"mean": [0.5] * 3, "std": [0.25, 0.25, True]}},
     "normalization std must be a list of 3 numbers, got [0.25, 0.25, True]"),
    ({"format_version": True}, "format_version True not supported; this nxbar reads 1"),
], ids=["bn_eps-bool", "bn_eps-inf", "num_classes-bool", "input_size-bool", "input_size-float", "mean-bool",
        "std-bool", "format_version-bool"])
def test_bools_are_not_numbers(saved, changes, message):
    rewrite_json(saved, **changes)  # json writes True as true
    expect(saved, "vgg8_cifar10.json", message)


def test_class_names_must_be_unique(saved):
    rewrite_json(saved, class_names=["c0", "c1", "c2", "c1", *(f"c{i}" for i in range(4, 9)), "c0"])
    expect(saved, "vgg8_cifar10.json", "class_names must be unique, got 'c0', 'c1' twice or more")


def test_missing_array(saved, params):
    arrays = dict(params)
    del arrays["conv3.weight"]
    rewrite_npz(saved, arrays)
    expect(saved, "array 'conv3.weight' missing", "(256, 128, 3, 3)")


def test_extra_array(saved, params):
    rewrite_npz(saved, {**params, "conv9.weight": np.zeros(3, np.float32)})
    expect(saved, "unexpected array(s) conv9.weight")


def test_wrong_shape(saved, params):
    rewrite_npz(saved, {**params, "fc1.weight": params["fc1.weight"][:, :100]})
    expect(saved, "array 'fc1.weight'", "expected shape (1024, 8192), got (1024, 100)")


def test_wrong_dtype(saved, params):
    rewrite_npz(saved, {**params, "bn1.bias": params["bn1.bias"].astype(np.float64)})
    expect(saved, "array 'bn1.bias'", "expected dtype float32, got float64")


def test_non_finite(saved, params):
    bad = params["conv1.weight"].copy()
    bad[0, 0, 0, 0] = np.nan
    rewrite_npz(saved, {**params, "conv1.weight": bad})
    expect(saved, "array 'conv1.weight'", "1 non-finite value(s)")


def test_pickled_object_array_refused(saved, params):
    rewrite_npz(saved, {**params, "fc2.bias": np.array([object()] * 10, dtype=object)})
    expect(saved, "vgg8_cifar10.npz", "unreadable array")


def test_save_refuses_bad_params(tmp_path, params):
    with pytest.raises(WeightFileError, match="array 'fc2.bias' missing"):
        save_weights(tmp_path / "x", {k: v for k, v in params.items() if k != "fc2.bias"}, META)
    with pytest.raises(WeightFileError, match="class_names"):
        save_weights(tmp_path / "x", params, {**META, "class_names": ["a"]})


# ---------------------------------------------- hybrid precision (QUANOS, docs/protocol.md section 6.2)
BITS = [2, 4, 8, None, 2, 4, 8, 2]  # one entry per VGG8 MVM layer


def quantized(params):
    from nxbar.crossbar.mapping import quantize_weights
    from nxbar.models.arch import mvm_names

    return {n: quantize_weights(a, dict(zip(mvm_names("vgg8"), BITS)).get(n)) for n, a in params.items()}


def test_hybrid_precision_file_round_trip(tmp_path, params):
    from nxbar.weights import layer_bits

    stem = tmp_path / "vgg8q_cifar10"
    save_weights(stem, quantized(params), {**META, "model": "vgg8q", "layer_bits": BITS})
    loaded, meta = load_weights(stem)
    assert layer_bits(meta) == tuple(BITS) and meta["model"] == "vgg8q"
    assert len(np.unique(np.abs(loaded["conv1.weight"]))) <= 4  # 2 bits
    assert layer_bits(META) is None


def test_hybrid_precision_refusals(tmp_path, params):
    stem = tmp_path / "vgg8q_cifar10"
    with pytest.raises(WeightFileError, match="not on its 2-bit grid"):
        save_weights(stem, params, {**META, "layer_bits": BITS})  # full-precision weights claimed as 2-bit
    for bad in (BITS[:-1], [*BITS[:-1], 0], [*BITS[:-1], 17], [*BITS[:-1], True], "2,4"):
        with pytest.raises(WeightFileError, match="'layer_bits' must be a list of 8 entries"):
            save_weights(stem, quantized(params), {**META, "layer_bits": bad})
    with pytest.raises(WeightFileError, match="'model' must be a name starting with the arch 'vgg8'"):
        save_weights(stem, params, {**META, "model": "vgg16q"})
    save_weights(stem, quantized(params), {**META, "layer_bits": BITS})
    rewrite_json(stem, layer_bits=[1] * 8)  # a loaded file is checked too
    with pytest.raises(WeightFileError, match="not on its 1-bit grid"):
        load_weights(stem)
