"""Per-layer conductance precision on crossbars (CrossbarConfig.layer_bits; QUANOS on crossbars,
docs/protocol.md section 6.2)."""

import json

import numpy as np
import pytest

from nxbar import cache as disk_cache
from nxbar.crossbar.config import CrossbarConfig
from nxbar.crossbar.mapped import map_layer, map_model


class TwoLayerNet:
    """The part of the VGG interface map_model uses: a conv and an FC weight."""

    mvm_names = ("conv1.weight", "fc1.weight")

    def __init__(self, params):
        self.params = params

    def with_params(self, replacements):
        return TwoLayerNet({**self.params, **replacements})


def net():
    rng = np.random.default_rng(0)  # enough weights that every one of the 2^b levels is populated
    return TwoLayerNet({"conv1.weight": rng.uniform(-1, 1, (40, 8, 3, 3)), "fc1.weight": rng.uniform(-1, 1, (30, 90))})


def conductance_levels(w_eff, w_max, config):
    """Distinct programmed conductances of each polarity, read back from W' of an ideal crossbar (T = G):
    G+ = G_min + (G_max - G_min) max(W', 0) / w_max, G- likewise with -W' (docs/protocol.md sections 4.3, 4.6)."""
    span = config.g_max_s - config.g_min_s
    out = []
    for u in (np.maximum(w_eff, 0) / w_max, np.maximum(-w_eff, 0) / w_max):
        g = config.g_min_s + span * u
        out.append(np.unique(np.round(g / config.g_max_s, 9)))  # 1e-9 G_max: far below a level step
    return out


def test_each_layer_has_exactly_2_to_the_b_conductance_levels_per_polarity():
    model = net()
    config = CrossbarConfig.ideal(size=16, layer_bits=(2, 3))
    mapped = map_model(model, config, cache=False)
    for i, (name, bits) in enumerate(zip(model.mvm_names, (2, 3))):
        w_max = mapped.report[i]["w_max"]
        assert mapped.report[i]["bits"] == bits
        n = 2**bits - 1
        for levels in conductance_levels(mapped.params[name], w_max, config):
            assert len(levels) == 2**bits
            expected = (config.g_min_s + (config.g_max_s - config.g_min_s) * np.arange(n + 1) / n) / config.g_max_s
            np.testing.assert_allclose(levels, expected, rtol=0, atol=2e-9)


def test_layer_bits_none_entry_is_analog_and_matches_the_uniform_config():
    model = net()
    hybrid = map_model(model, CrossbarConfig.ideal(size=16, layer_bits=(None, 4)), cache=False)
    uniform4 = map_model(model, CrossbarConfig.ideal(size=16, bits=4), cache=False)
    np.testing.assert_allclose(hybrid.params["conv1.weight"], model.params["conv1.weight"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(hybrid.params["fc1.weight"], uniform4.params["fc1.weight"])
    w, _ = map_layer(model.params["fc1.weight"], CrossbarConfig.ideal(size=16, layer_bits=(None, 4)), 1)
    np.testing.assert_array_equal(w, uniform4.params["fc1.weight"])


def test_layer_bits_config_round_trip_and_cache_key():
    c = CrossbarConfig(bits=None, layer_bits=[4, np.int64(2), None])
    assert c.layer_bits == (4, 2, None) and type(c.layer_bits[1]) is int
    assert CrossbarConfig(**json.loads(json.dumps(c.as_dict()))) == c
    assert [c.bits_of(i) for i in range(3)] == [4, 2, None] and CrossbarConfig(bits=3).bits_of(7) == 3
    weights = net().params
    keys = {disk_cache.mapping_key(weights, cfg.as_dict())
            for cfg in (c, c.replace(layer_bits=(4, 3, None)), c.replace(layer_bits=None))}
    assert len(keys) == 3


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(layer_bits=()), "layer_bits must be None or a non-empty sequence"),
        (dict(layer_bits=4), "layer_bits must be None or a non-empty sequence"),
        (dict(layer_bits=(4, 0)), "layer_bits[1] must be None (analog) or an integer in 1..16, got 0"),
        (dict(layer_bits=(4, 2.0)), "layer_bits[1] must be None (analog) or an integer in 1..16, got 2.0"),
        (dict(layer_bits=(4, 2), bits=4), "bits must be None when layer_bits is given"),
    ],
)
def test_layer_bits_validation(changes, message):
    with pytest.raises(ValueError) as e:
        CrossbarConfig(**changes)
    assert message in str(e.value)


def test_layer_bits_must_cover_every_layer():
    with pytest.raises(ValueError, match=r"layer_bits has 3 entries, the model has 2 MVM layers"):
        map_model(net(), CrossbarConfig.ideal(size=16, layer_bits=(4, 4, 4)), cache=False)
    with pytest.raises(ValueError, match=r"layer_index 2 has no entry in layer_bits \(allowed: 0..1\)"):
        map_layer(net().params["fc1.weight"], CrossbarConfig.ideal(size=16, layer_bits=(4, 4)), 2)
