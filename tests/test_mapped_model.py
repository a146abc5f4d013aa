"""Crossbar-mapped networks (docs/protocol.md section 4.6) and the disk cache of mapped weights (section 7)."""

import json

import numpy as np
import pytest

from nxbar import cache as disk_cache
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import MappedModel, map_layer, map_model, random_tile_nf
from nxbar.models.vgg import VGG, random_params

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
# Ideal wires, but device variation and 4-bit levels: W' differs from W. 16x16 tiles: whole-model
# solve time grows with the tile size (tiles x size^3 ~ weights x size), so small tiles are cheapest.
NOISY = CrossbarConfig.ideal(size=16, sigma=0.1, bits=4, seed=3)


def vgg8(seed=0):
    params = random_params("vgg8", num_classes=10, input_size=32, seed=seed)
    return VGG("vgg8", params, num_classes=10, input_size=32, mean=MEAN, std=STD)


class TinyNet:
    """The part of the VGG interface map_model uses, with two small MVM layers (cheap cache tests)."""

    mvm_names = ("conv1.weight", "fc1.weight")

    def __init__(self, params):
        self.params = params

    def with_params(self, replacements):
        return TinyNet({**self.params, **replacements})


def tiny(seed=0):
    rng = np.random.default_rng(seed)
    return TinyNet({"conv1.weight": rng.normal(size=(4, 3, 3, 3)), "fc1.weight": rng.normal(size=(5, 40))})


@pytest.fixture(scope="module")
def model():
    return vgg8()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 1, (6, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def noisy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def noisy(model, noisy_cache):
    return map_model(model, NOISY, cache_dir=noisy_cache)


def test_ideal_crossbars_reproduce_the_software_network(model, images):
    mapped = map_model(model, CrossbarConfig.ideal(size=16), cache=False)
    for name in model.mvm_names:
        w, w_eff = model.params[name], mapped.params[name]
        # T == G exactly; W' = (G+ - G-) w_max / (G_max - G_min) in float64, then one rounding to float32
        np.testing.assert_allclose(w_eff, w, rtol=2**-24, atol=0)
    for name in set(model.params) - set(model.mvm_names):
        np.testing.assert_array_equal(mapped.params[name], model.params[name])  # digital parameters untouched
    np.testing.assert_array_equal(mapped.predict(images), model.predict(images))
    np.testing.assert_allclose(mapped.forward(images), model.forward(images), rtol=1e-5, atol=1e-5)
    assert [r["name"] for r in mapped.report] == list(model.mvm_names)
    # VGG8 matrices 27x128, 1152x128, 1152x256, 2304x256, 2304x512, 4608x512, 8192x1024, 1024x10
    # on 16x16 tiles: 2 x (16 + 576 + 1152 + 2304 + 4608 + 9216 + 32768 + 64) tiles
    assert sum(r["tiles"] for r in mapped.report) == 101408
    assert all(r["nf"] == 0.0 for r in mapped.report)


def test_mapped_model_is_the_software_model_with_each_layer_mapped(model, noisy):
    assert isinstance(noisy, MappedModel) and noisy.software is model and noisy.config is NOISY
    for i in (0, 7):  # conv1, fc2: each layer's draw depends only on (seed, layer index), see test_mapping
        name = model.mvm_names[i]
        np.testing.assert_array_equal(noisy.params[name], map_layer(model.params[name], NOISY, i)[0])
    for name in model.mvm_names:
        assert 0.01 < np.mean(np.abs(noisy.params[name] - model.params[name])) / np.max(np.abs(model.params[name]))
    assert noisy.mvm_names == model.mvm_names and noisy.num_classes == 10  # the VGG interface, delegated


def test_input_gradient_of_a_mapped_model_matches_finite_differences(model, noisy, images):
    mapped = noisy.astype(np.float64)
    assert isinstance(mapped, MappedModel) and mapped.params["conv1.weight"].dtype == np.float64
    assert mapped.report is noisy.report and mapped.software.dtype == np.float64
    x, y = images[:2].astype(np.float64), np.array([3, 7])
    loss, dx = mapped.loss_and_input_grad(x, y)
    rng = np.random.default_rng(2)
    h = 1e-6
    for _ in range(4):
        idx = tuple(rng.integers(0, s) for s in x.shape)
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        numeric = (mapped.loss_and_input_grad(xp, y)[0] - mapped.loss_and_input_grad(xm, y)[0]) / (2 * h)
        assert abs(numeric - dx[idx]) <= 1e-6 * max(1.0, np.max(np.abs(dx)))
    # and it is not the software model's gradient
    assert np.max(np.abs(dx - model.astype(np.float64).loss_and_input_grad(x, y)[1])) > 1e-6


def test_cache_hit_loads_identical_arrays(model, noisy, noisy_cache):
    assert not noisy.cached
    files = sorted(noisy_cache.iterdir())
    key = disk_cache.mapping_key({n: model.params[n] for n in model.mvm_names}, NOISY.as_dict())
    assert [p.name for p in files] == [f"mapped-{key}.json", f"mapped-{key}.npz"]
    assert json.loads(files[0].read_text()) == noisy.report
    calls = []
    again = map_model(model, NOISY, cache_dir=noisy_cache, progress=lambda *a: calls.append(a))
    assert again.cached and again.report == noisy.report
    assert calls == [(n, i, 8) for i, n in enumerate(model.mvm_names)]
    for name in model.mvm_names:
        np.testing.assert_array_equal(again.params[name], noisy.params[name])
        assert again.params[name].dtype == noisy.params[name].dtype == np.float32


def test_cache_key_bypass_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("NXBAR_CACHE_DIR", str(tmp_path))
    assert disk_cache.cache_dir() == tmp_path
    net, config = tiny(), CrossbarConfig(size=8)
    calls = []
    first = map_model(net, config, progress=lambda *a: calls.append(a))
    assert not first.cached and calls == [("conv1.weight", 0, 2), ("fc1.weight", 1, 2)]
    assert map_model(net, config).cached and not map_model(net, config, cache=False).cached
    key = disk_cache.mapping_key(net.params, config.as_dict())
    for other in (config.replace(seed=1), config.replace(sigma=0.2), config.replace(r_on_ohm=10e3, r_off_ohm=100e3)):
        assert disk_cache.mapping_key(net.params, other.as_dict()) != key
    assert disk_cache.mapping_key(tiny(1).params, config.as_dict()) != key
    assert disk_cache.mapping_key({k: v.astype(np.float32) for k, v in net.params.items()}, config.as_dict()) != key
    assert not map_model(tiny(1), config).cached and map_model(tiny(1), config).cached

    (tmp_path / "unrelated.npz").write_bytes(b"not ours")
    adv = disk_cache.save("k", {"x_adv": np.zeros(3)}, {}, kind="adversarial")
    x_adv = {"x_adv": ((3,), np.float64)}
    assert adv.name == "adversarial-k.npz"
    assert disk_cache.load("k", kind="adversarial", expect=x_adv)[0]["x_adv"].shape == (3,)
    assert disk_cache.load("k", expect=x_adv) is None  # another kind
    with pytest.raises(ValueError, match="cache kind 'weights' unknown; allowed: mapped, adversarial"):
        disk_cache.load("k", kind="weights", expect=x_adv)
    removed = disk_cache.clear_cache()
    assert len(removed) == 6 and all(p.name.startswith(("mapped-", "adversarial-")) and not p.exists() for p in removed)
    assert [p.name for p in tmp_path.iterdir()] == ["unrelated.npz"] and disk_cache.clear_cache() == []
    assert not map_model(net, config).cached


def test_damaged_cache_entry_is_a_miss(tmp_path):
    net, config = tiny(), CrossbarConfig(size=8)
    first = map_model(net, config, cache_dir=tmp_path)
    npz = next(tmp_path.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:100])
    again = map_model(net, config, cache_dir=tmp_path)
    assert not again.cached and map_model(net, config, cache_dir=tmp_path).cached
    np.testing.assert_array_equal(again.params["fc1.weight"], first.params["fc1.weight"])


def test_random_tile_nf_and_bad_arguments():
    ideal = random_tile_nf(CrossbarConfig.ideal(size=8), n_tiles=2)
    assert ideal == 0.0
    nf = random_tile_nf(CrossbarConfig(size=16), n_tiles=4, seed=1)
    assert 0.05 < nf < 0.15  # docs/protocol.md section 3: about 0.09 at 16x16
    with pytest.raises(ValueError, match="n_tiles must be an integer >= 1, got 0"):
        random_tile_nf(CrossbarConfig(), n_tiles=0)
    with pytest.raises(ValueError, match="config must be a CrossbarConfig, got dict"):
        map_model(tiny(), {"size": 32})
