"""FGSM and PGD on the shipped, trained VGG8 (docs/protocol.md section 5): on a fixed batch PGD is at least as
strong as FGSM, more PGD steps do not help the defender beyond noise, and results are reproducible bit for bit.
(On random weights the network is nearly linear and these orderings mean little, so the trained net is used;
the module is skipped until weights/vgg8_cifar10.* exist.)"""

import numpy as np
import pytest

from nxbar.data.load import load_dataset
from nxbar.evaluation import AttackConfig, count_correct, make_adversarial
from nxbar.weights import load_model, resolve_weights, weight_paths

N = 64  # images of the fixed batch
NOISE = 2  # images: more PGD steps may flip this many back (random start, finite steps)


@pytest.fixture(scope="module")
def trained():
    stem = resolve_weights("vgg8")
    if not weight_paths(stem)[1].is_file():
        pytest.skip("the shipped VGG8 weights are not trained yet")
    ds = load_dataset("embedded")
    return load_model(stem)[0], ds.images[:N], ds.labels[:N]


def _adv_correct(net, x, y, **attack):
    return count_correct(net, make_adversarial(net, x, y, AttackConfig(**attack)), y)


def test_pgd_is_at_least_as_strong_as_fgsm_and_more_steps_do_not_help_the_defender(trained):
    net, x, y = trained
    clean = count_correct(net, x, y)
    fgsm = _adv_correct(net, x, y, attack="fgsm", eps=8 / 255)
    pgd10 = _adv_correct(net, x, y, attack="pgd", eps=8 / 255, steps=10)
    pgd20 = _adv_correct(net, x, y, attack="pgd", eps=8 / 255, steps=20)
    assert clean >= 0.8 * N  # a trained network, so the comparison means something
    assert pgd10 <= fgsm < clean
    assert pgd20 <= pgd10 + NOISE
    assert _adv_correct(net, x, y, attack="pgd", eps=0.0) == clean  # eps = 0: AA == CA


def test_adversarial_inputs_are_reproducible_bit_for_bit(trained):
    net, x, y = trained
    cfg = AttackConfig(attack="pgd", eps=4 / 255, steps=3, seed=7)
    a, b = make_adversarial(net, x[:16], y[:16], cfg), make_adversarial(net, x[:16], y[:16], cfg)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.abs(a - x[:16] / np.float32(255)).max() <= 4 / 255 + 1e-6


def test_early_stop_keeps_an_image_correct_only_where_the_full_attack_does(trained):
    net, x, y = trained
    full, early = (AttackConfig(attack="pgd", eps=2 / 255, alpha=0.5 / 255, steps=10, early_stop=e)
                   for e in (False, True))
    adv_full, adv_early = make_adversarial(net, x, y, full), make_adversarial(net, x, y, early)
    full_ok, early_ok = net.predict(adv_full) == y, net.predict(adv_early) == y
    assert 0 < early_ok.sum() <= full_ok.sum() < N  # a budget where the attack neither fails nor always wins
    assert np.all(full_ok[early_ok])  # the same trajectory up to the stop, so no image survives only early stop
    # where no image was stopped, the attack is the full one: same images
    assert np.array_equal(adv_early[early_ok], adv_full[early_ok])
    assert early.as_dict()["early_stop"] is True and "early_stop" not in full.as_dict()
    with pytest.raises(ValueError, match="early stopping is defined for pgd only, not for fgsm"):
        AttackConfig(attack="fgsm", eps=0.1, early_stop=True)
