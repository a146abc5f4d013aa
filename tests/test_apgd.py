"""APGD-CE (nxbar.attacks.apgd) against a closed-form worst case, and against PGD on the trained VGG8."""

import numpy as np
import pytest
from conftest import LinearNet

from nxbar.attacks import apgd, apgd_checkpoints, pgd
from nxbar.evaluation import AttackConfig, count_correct, make_adversarial


def worst_margins(model, x, y, eps):
    """Exact min over the L-inf ball and the [0, 1] box of z_y - z_j for every class j != y, per image: a linear
    margin is minimised pixel by pixel at the end of each pixel's feasible interval [max(x - eps, 0),
    min(x + eps, 1)] that lowers it."""
    w, b = model.params["fc1.weight"], model.params["fc1.bias"]
    flat = x.reshape(len(x), -1)
    lo, hi = np.maximum(flat - eps, 0), np.minimum(flat + eps, 1)
    out = np.full((len(x), w.shape[0]), np.inf)
    for i in range(len(x)):
        for j in range(w.shape[0]):
            if j != y[i]:
                d = w[y[i]] - w[j]
                worst = np.where(d > 0, lo[i], hi[i])
                out[i, j] = worst @ d + b[y[i]] - b[j]
    return out.min(axis=1)


def _linear_problem(classes, seed=0, n=200):
    rng = np.random.default_rng(seed)
    model = LinearNet({"fc1.weight": rng.normal(size=(classes, 4 * 4 * 3)),
                       "fc1.bias": rng.normal(size=classes) * 0.5})
    x = rng.uniform(0, 1, size=(n, 4, 4, 3))
    return model, x, model.predict(x)  # labels: the model's own predictions, so every image starts correct


@pytest.mark.parametrize("eps", [0.01, 0.03, 0.1])
def test_apgd_reaches_the_closed_form_worst_case_of_a_two_class_linear_model(eps):
    # two classes: the cross-entropy falls with the one margin, so its maximiser is the margin's minimiser
    model, x, y = _linear_problem(2)
    x_adv = apgd(model, x, y, eps, steps=20, rng=np.random.default_rng(0))
    assert np.all(np.abs(x_adv - x) <= eps + 1e-12) and x_adv.min() >= 0 and x_adv.max() <= 1
    z = model.forward(x_adv)
    margin = z[np.arange(len(y)), y] - z[np.arange(len(y)), 1 - y]
    worst = worst_margins(model, x, y, eps)
    robust = worst > 0
    assert 0 < robust.sum() < len(y)  # a budget where the answer is not trivial
    assert np.array_equal(margin > 0, robust)  # it breaks exactly the breakable images
    # where it cannot, it returns the worst case itself (a broken image is returned as first misclassified)
    np.testing.assert_allclose(margin[robust], worst[robust], atol=1e-9)


def test_apgd_never_beats_the_exact_robust_accuracy_of_a_ten_class_linear_model():
    model, x, y = _linear_problem(10, seed=1)
    eps = 0.05
    robust = worst_margins(model, x, y, eps) > 0
    correct = model.predict(apgd(model, x, y, eps, steps=50, rng=np.random.default_rng(0))) == y
    assert np.all(correct[robust])  # an image no perturbation breaks survives APGD too
    # cross-entropy is not any one margin, so APGD may miss a breakable image, but only rarely
    assert (correct & ~robust).sum() <= 0.05 * len(y), ((correct & ~robust).sum(), robust.sum())


def test_apgd_checkpoints_follow_the_paper():
    # p: 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, section 3.2)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [0, 1]


def test_apgd_checks_its_arguments():
    model, x, y = _linear_problem(2, n=4)
    with pytest.raises(ValueError, match="steps"):
        apgd(model, x, y, 0.1, steps=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        apgd(model, x, y, 0.1, steps=2)
    with pytest.raises(ValueError, match="attack 'apgdx' unknown"):
        AttackConfig(attack="apgdx")
    assert "alpha" not in AttackConfig(attack="apgd").as_dict()


def test_apgd_leaves_no_more_images_correct_than_pgd10_on_the_trained_vgg8():
    from nxbar.data.load import load_dataset
    from nxbar.weights import load_model, resolve_weights

    net, _ = load_model(resolve_weights("vgg8", "cifar10"))
    ds = load_dataset("embedded")
    images, labels = ds.images[:32], ds.labels[:32]
    eps = 2 / 255  # the robustness study's budget
    pgd10 = make_adversarial(net, images, labels, AttackConfig(attack="pgd", eps=eps, alpha=eps / 4))
    strong = make_adversarial(net, images, labels, AttackConfig(attack="apgd", eps=eps, steps=20))
    assert np.abs(strong - images / 255).max() <= eps + 1e-6
    assert count_correct(net, strong, labels) <= count_correct(net, pgd10, labels)


def test_apgd_from_the_clean_image_is_deterministic():
    model, x, y = _linear_problem(10, seed=2, n=20)
    a = apgd(model, x, y, 0.05, steps=10, random_start=False)
    b = apgd(model, x, y, 0.05, steps=10, random_start=False)
    np.testing.assert_array_equal(a, b)
    # the first step is PGD's with step 2 eps
    np.testing.assert_array_equal(apgd(model, x, y, 0.05, steps=1, random_start=False),
                                  pgd(model, x, y, 0.05, steps=1, alpha=0.1, random_start=False))
