"""Input pixel discretization (docs/protocol.md section 6.1): levels, idempotence, the straight-through gradient,
attacks through it."""

import numpy as np
import pytest

from nxbar.attacks import fgsm, pgd
from nxbar.defences import InputDiscretization
from nxbar.evaluation import AttackConfig, evaluate_modes
from nxbar.models.vgg import VGG, random_params

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


@pytest.fixture(scope="module")
def vgg():
    params = random_params("vgg8", num_classes=10, input_size=32, seed=0)
    return VGG("vgg8", params, num_classes=10, input_size=32, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_exactly_2b_levels_nearest_and_idempotent(vgg, bits):
    d = InputDiscretization(vgg, bits)
    n = 2**bits - 1
    images = np.random.default_rng(2).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    xq = d.discretize(images)
    assert xq.dtype == np.float32 and d.levels == 2**bits
    # 12288 uniform pixels populate every level; the levels are exactly k / (2^b - 1)
    np.testing.assert_array_equal(np.unique(xq), np.arange(n + 1, dtype=np.float32) / np.float32(n))
    assert np.max(np.abs(xq.astype(np.float64) - images)) <= 0.5 / n + 1e-6  # nearest level
    np.testing.assert_array_equal(d.discretize(xq), xq)  # idempotent


def test_hand_values_and_uint8_input(vgg):
    d = InputDiscretization(vgg, 2)  # levels 0, 1/3, 2/3, 1
    x = np.array([0.0, 0.16, 0.17, 0.5, 0.51, 0.84, 1.0], dtype=np.float32)
    np.testing.assert_allclose(d.discretize(x), [0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1], rtol=0, atol=1e-7)
    u8 = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(d.discretize(u8), d.discretize(u8.astype(np.float32) / np.float32(255)))
    np.testing.assert_array_equal(InputDiscretization(vgg, 8).discretize(u8), u8.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="x must be uint8 or floating images"):
        d.discretize(np.zeros(3, dtype=np.int32))


@pytest.fixture(scope="module")
def through(vgg, images):
    """(defence, labels, loss and straight-through gradient at the images) on 2 images, computed once."""
    d = InputDiscretization(vgg, 4)
    y = np.array([3, 9])
    return d, y, *d.loss_and_input_grad(images, y)


def test_straight_through_gradient_is_the_models_gradient_at_the_quantised_input(vgg, images, through):
    d, y, loss, grad = through
    ref_loss, ref_grad = vgg.loss_and_input_grad(d.discretize(images), y)
    assert loss == ref_loss and np.abs(grad).max() > 0
    np.testing.assert_array_equal(grad, ref_grad)
    # why the true gradient is useless: a step that stays within every pixel's level leaves the loss unchanged
    n = 15
    far = np.abs(images * n - np.rint(images * n)) < 0.4  # pixels at least 0.1 / n from a rounding threshold
    step = np.where(far, 0.05 / n * np.sign(grad), 0).astype(np.float32)
    assert d.loss_and_input_grad(images + step, y)[0] == loss
    assert d.gradient == "straight-through" and "straight-through" in d.describe()
    assert d.as_dict() == {"defence": "input_discretization", "bits": 4, "gradient": "straight-through"}


def test_forward_and_weight_gradients_are_the_models_at_the_quantised_input(vgg, images, through):
    d, y, loss, grad = through
    np.testing.assert_array_equal(d.forward(images[:1]), vgg.forward(d.discretize(images[:1])))
    l2, g2, wgrads = d.loss_and_grads(images, y)
    assert l2 == loss and set(vgg.mvm_names) <= set(wgrads) and np.abs(wgrads["conv1.weight"]).max() > 0
    np.testing.assert_array_equal(g2, grad)


class Softmax:
    """A linear softmax classifier on 8x8x3 images with the engine interface (a cheap model for attacks)."""

    dtype, mean, std, num_classes, input_size = np.dtype(np.float64), np.full(3, 0.5), np.full(3, 0.25), 4, 8

    def __init__(self, seed=0):
        self.w = np.random.default_rng(seed).standard_normal((192, 4))

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.w

    def predict(self, x, batch_size=256):
        return np.argmax(self.forward(x), axis=1)

    def loss_and_input_grad(self, x, y):
        p = np.exp(self.forward(x))
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y]))
        p[np.arange(len(y)), y] -= 1
        return loss, (p @ self.w.T / len(y)).reshape(x.shape)


@pytest.fixture(scope="module")
def small():
    x = np.random.default_rng(3).uniform(0, 1, (30, 8, 8, 3))
    return InputDiscretization(Softmax(), 4), x, np.arange(30) % 4


def test_attacks_through_the_defence(small):
    d, x, y = small
    eps = 0.05
    loss, grad = d.loss_and_input_grad(x, y)
    x_f = fgsm(d, x, y, eps)
    np.testing.assert_array_equal(x_f, np.clip(x + eps * np.sign(grad), 0, 1))
    assert d.loss_and_input_grad(x_f, y)[0] > loss
    x_p = pgd(d, x, y, eps, steps=5, alpha=0.02, rng=np.random.default_rng(0))
    assert d.loss_and_input_grad(x_p, y)[0] > loss
    for x_adv in (x_f, x_p):
        assert np.all(np.abs(x_adv - x) <= eps + 1e-12) and x_adv.min() >= 0 and x_adv.max() <= 1


def test_evaluate_modes_with_the_defence(small):
    d, x, y = small
    rows = evaluate_modes(d, d, x, y, [AttackConfig(attack="fgsm", eps=0.1)])
    x_adv = fgsm(d, x, y, 0.1)
    ca, aa = (100.0 * np.mean(d.model.predict(d.discretize(v)) == y) for v in (x, x_adv))
    assert [r["mode"] for r in rows] == ["SW", "SH", "HH"]
    assert all(r["CA"] == ca and r["AA"] == aa for r in rows) and aa < ca  # same model in both places


@pytest.mark.parametrize("bits", [0, 17, True, 2.0, None])
def test_bits_validation(vgg, bits):
    with pytest.raises(ValueError, match=f"bits must be an integer in 1..16, got {bits!r}"):
        InputDiscretization(vgg, bits)
