"""QUANOS (docs/protocol.md section 6.2): VGG.activations, Adversarial Noise Sensitivity against hand computations,
the ANS -> bits rule."""

import numpy as np
import pytest

from nxbar.evaluation import AttackConfig
from nxbar.models.vgg import VGG, random_params
from nxbar.quanos import adversarial_noise_sensitivity, attack_ans, bits_from_ans

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


class TwoLayers:
    """activations(x) of images x flattened to rows (p, q, r, ...): layer "a" = (p, q), layer "b" = 2 (r, ...)."""

    def activations(self, x):
        x = x.reshape(len(x), -1)
        return {"a": x[:, :2], "b": 2 * x[:, 2:]}


def test_ans_two_images_by_hand():
    x = np.array([[3.0, 4.0, 1.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
    x_adv = np.array([[6.0, 8.0, 1.0, 1.0], [0.0, 1.5, 4.0, 3.0]])
    # image 0: a: |(3,4)| / |(3,4)| = 1;      b: |(0,2)| / |(2,0)| = 1
    # image 1: a: |(0,0.5)| / |(0,1)| = 0.5;  b: |(8,0)| / |(0,6)| = 4/3
    # per-image means: a (1 + 0.5) / 2 = 0.75, b (1 + 4/3) / 2 = 7/6 (pooled would be 11/12 and 5/4)
    for batch_size in (1, 64):
        ans = adversarial_noise_sensitivity(TwoLayers(), x, x_adv, batch_size=batch_size)
        assert list(ans) == ["a", "b"]
        assert ans["a"] == pytest.approx(0.75, abs=1e-15) and ans["b"] == pytest.approx(7 / 6, abs=1e-15)


def test_ans_errors():
    x = np.array([[3.0, 4.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="layer b has an all-zero clean activation for image 1"):
        adversarial_noise_sensitivity(TwoLayers(), x, x + 1)
    with pytest.raises(ValueError, match="same non-zero shape"):
        adversarial_noise_sensitivity(TwoLayers(), x, x[:1])


def conv3x3(z, w):
    """Direct 3x3 convolution, padding 1, of NHWC z with a (C_out, C_in, 3, 3) weight (float64 reference)."""
    n, h, wd, _ = z.shape
    p = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(np.einsum("nhwc,oc->nhwo", p[:, i:i + h, j:j + wd], w[:, :, i, j]) for i in range(3) for j in range(3))


@pytest.fixture(scope="module")
def vgg64():
    params = random_params("vgg8", num_classes=10, input_size=32, seed=0)
    return VGG("vgg8", params, num_classes=10, input_size=32, mean=MEAN, std=STD, dtype=np.float64)


def test_activations_are_the_mvm_outputs_before_batchnorm(vgg64):
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3))
    acts = vgg64.activations(x)
    assert list(acts) == [n.split(".")[0] for n in vgg64.mvm_names] == [f"conv{k}" for k in range(1, 7)] + ["fc1", "fc2"]
    p = vgg64.params
    a1 = conv3x3((x - np.array(MEAN)) / np.array(STD), p["conv1.weight"])
    np.testing.assert_allclose(acts["conv1"], a1, rtol=1e-10, atol=1e-10)
    bn = [p[f"bn1.{q}"] for q in ("weight", "bias", "running_mean", "running_var")]
    h1 = np.maximum((a1 - bn[2]) / np.sqrt(bn[3] + 1e-5) * bn[0] + bn[1], 0)
    np.testing.assert_allclose(acts["conv2"], conv3x3(h1, p["conv2.weight"]), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(acts["fc2"], vgg64.forward(x), rtol=1e-12, atol=1e-12)
    assert acts["fc1"].shape == (2, 1024)


def test_ans_of_a_vgg_first_layer_by_hand(vgg64):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (2, 32, 32, 3))
    x_adv = np.clip(x + 0.03 * np.sign(rng.standard_normal(x.shape)), 0, 1)
    ans = adversarial_noise_sensitivity(vgg64, x, x_adv)
    w = vgg64.params["conv1.weight"]
    a, b = (conv3x3((v - np.array(MEAN)) / np.array(STD), w).reshape(2, -1) for v in (x, x_adv))
    expected = np.mean(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1))
    assert ans["conv1"] == pytest.approx(expected, rel=1e-10)
    assert list(ans) == list(vgg64.activations(x[:1])) and all(v > 0 for v in ans.values())


def test_attack_ans_uses_adversarial_images_made_on_the_model():
    class Scaled(TwoLayers):  # a linear model, so FGSM's step is known: x_adv = clip(x + eps sign(grad))
        dtype, std = np.dtype(np.float64), np.ones(3)

        def loss_and_input_grad(self, x, y):
            return 0.0, np.ones_like(x)

    x = np.full((2, 1, 2, 3), 0.5)
    ans = attack_ans(Scaled(), x, np.zeros(2, dtype=int), AttackConfig(attack="fgsm", eps=0.1))
    # every entry grows by 0.1: a: |(0.1,0.1)| / |(0.5,0.5)| = 0.2, b likewise
    assert ans == pytest.approx({"a": 0.2, "b": 0.2}, abs=1e-12)


def test_bits_rule_highest_ans_fewest_bits():
    ans = {"conv1": 0.1, "conv2": 0.5, "conv3": 0.3, "fc1": 0.5, "fc2": 0.2}
    # ranking: conv2, fc1 (tie: network order), conv3, fc2, conv1 -> groups of 2, 2, 1
    expected = {"conv1": 8, "conv2": 2, "conv3": 4, "fc1": 2, "fc2": 4}
    assert bits_from_ans(ans, (2, 4, 8)) == expected == bits_from_ans(ans, [8, 2, 4])
    assert list(bits_from_ans(ans, (4,)).values()) == [4] * 5
    seven = {f"l{i}": a for i, a in enumerate([0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.4])}
    assert tuple(bits_from_ans(seven, (4, 2)).values()) == (4, 2, 4, 2, 2, 4, 2)  # 0.9, 0.7, 0.5, 0.4 -> 2 bits


@pytest.mark.parametrize(
    "ans, widths, message",
    [
        ({}, (4,), "ans must map at least one layer"),
        ({"a": float("nan")}, (4,), "ans must map at least one layer"),
        ({"a": 0.1, "b": 0.2}, (), "widths must be 1..2 distinct integers"),
        ({"a": 0.1, "b": 0.2}, (4, 4), "widths must be 1..2 distinct integers"),
        ({"a": 0.1, "b": 0.2}, (2, 4, 8), "widths must be 1..2 distinct integers"),
        ({"a": 0.1, "b": 0.2}, (0,), "widths must be 1..2 distinct integers"),
    ],
)
def test_bits_rule_errors(ans, widths, message):
    with pytest.raises(ValueError, match=message):
        bits_from_ans(ans, widths)
