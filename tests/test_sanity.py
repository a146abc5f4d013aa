"""Gradient-masking sanity checks: they pass on a linear softmax model and fail on gradient-masked wrappers of it."""

import numpy as np
import pytest
from test_attacks import Linear

from nxbar.evaluation import AttackConfig
from nxbar.sanity import (
    Check,
    describe,
    eps_sweep,
    gradient_free,
    loss_increases,
    margin,
    noise_pct,
    random_search,
    sanity_checks,
    square_fraction,
    steps_restarts,
)

ATTACK = AttackConfig(eps=4 / 255, steps=10, alpha=1 / 255, seed=0)


class Masked(Linear):
    """The linear model with its input gradient replaced: 'zero' (flat) or 'random' (shattered, seeded)."""

    def __init__(self, kind):
        super().__init__()
        self.kind, self.rng = kind, np.random.default_rng(5)

    def loss_and_input_grad(self, x, y):
        loss, grad = super().loss_and_input_grad(x, y)
        return loss, np.zeros_like(grad) if self.kind == "zero" else self.rng.standard_normal(grad.shape)


@pytest.fixture(scope="module")
def batch():
    x = np.random.default_rng(1).uniform(0, 1, (40, 8, 8, 3))
    return x, Linear().predict(x)


def _xent(model, x, y):
    return model.loss_and_input_grad(x, y)[0]


def test_margin_is_true_logit_minus_best_other():
    model = Linear()
    x = np.random.default_rng(2).uniform(0, 1, (5, 8, 8, 3))
    z = model.forward(x)
    y = np.array([0, 1, 2, 3, 0])
    expected = [z[i, y[i]] - max(z[i, j] for j in range(4) if j != y[i]) for i in range(5)]
    assert np.allclose(margin(model, x, y), expected)
    assert np.all((margin(model, x, model.predict(x)) > 0))


def test_square_fraction_schedule():
    assert square_fraction(0.1, 0, 10000) == 0.1 and square_fraction(0.1, 11, 10000) == 0.05
    assert square_fraction(0.1, 9999, 10000) == 0.1 / 2**9 and square_fraction(0.1, 3, 300) == 0.1 / 2**2


@pytest.mark.parametrize("eps", [0.03, np.array([0.01, 0.05, 0.2])])
def test_random_search_stays_in_the_ball_and_raises_the_loss(batch, eps):
    x, y = batch
    model = Linear()
    x_rs = random_search(model, x, y, eps, queries=100, rng=np.random.default_rng(0))
    assert np.all(np.abs(x_rs - x) <= eps + 1e-12) and x_rs.min() >= 0 and x_rs.max() <= 1
    start = random_search(model, x, y, eps, queries=1, rng=np.random.default_rng(0))
    assert np.all(margin(model, x_rs, y) <= margin(model, start, y))  # a candidate is kept only if it helps
    assert _xent(model, x_rs, y) > _xent(model, start, y) > _xent(model, x, y)
    assert np.array_equal(x_rs, random_search(model, x, y, eps, queries=100, rng=np.random.default_rng(0)))
    with pytest.raises(ValueError, match="seeded numpy Generator"):
        random_search(model, x, y, eps)


def test_checks_pass_on_the_linear_model(batch):
    x, y = batch
    checks = sanity_checks(Linear(), x, y, ATTACK, queries=100)
    assert [c.name for c in checks] == ["eps_sweep", "steps_restarts", "gradient_free", "loss_increases"]
    assert all(c.passed for c in checks), [c.as_dict() for c in checks]
    sweep = checks[0].values
    assert sweep["accuracy"][-1] == 0.0 and sweep["eps"][-1] == 1.0
    assert checks[2].values["random_search_accuracy"] >= checks[2].values["pgd_accuracy"]


def test_checks_fail_on_a_flat_gradient(batch):
    x, y = batch
    flat = Masked("zero")
    assert not eps_sweep(flat, x, y, ATTACK).passed
    assert not gradient_free(flat, x, y, ATTACK, queries=100).passed
    assert not loss_increases(flat, x, y, ATTACK).passed


def test_checks_fail_on_a_random_gradient(batch):
    x, y = batch
    shattered = Masked("random")
    assert not eps_sweep(shattered, x, y, ATTACK).passed
    assert not gradient_free(shattered, x, y, ATTACK, queries=100).passed


def test_more_steps_raising_accuracy_fails_the_check(batch):
    """A model whose gradient points downhill after the first PGD run: the longer run undoes the attack."""
    x, y = batch

    class Decaying(Linear):
        calls = 0

        def loss_and_input_grad(self, xx, yy):
            self.calls += 1
            loss, grad = super().loss_and_input_grad(xx, yy)
            return loss, grad if self.calls <= ATTACK.steps else -grad

    check = steps_restarts(Decaying(), x, y, ATTACK, restarts=1)
    assert not check.passed and check.values["more_steps_accuracy"] > check.values["accuracy"]


def test_sanity_checks_need_pgd(batch):
    x, y = batch
    with pytest.raises(ValueError, match="need a pgd attack"):
        eps_sweep(Linear(), x, y, AttackConfig(attack="fgsm"))


def test_noise_tolerance_is_two_agresti_coull_standard_errors():
    # p = (k + 2) / (n + 4): 50 of 100 -> p = 1/2, 200 sqrt(0.25 / 104) = 9.8058
    assert noise_pct(50.0, 100) == pytest.approx(9.8058, abs=1e-4)
    # 0 or 7 of 7 -> p = 2/11 or 9/11: 200 sqrt(18 / 11^3) = 23.2583, not 0: one image more is still noise
    assert noise_pct(0.0, 7) == pytest.approx(23.2583, abs=1e-4) == noise_pct(100.0, 7)
    assert noise_pct(40.0, 1000) == pytest.approx(200 * np.sqrt(402 / 1004 * 602 / 1004 / 1004))


def test_describe_states_the_numbers_of_each_check():
    checks = [Check("eps_sweep", {"eps": [8 / 255, 1.0], "accuracy": [12.5, 0.0]}, True),
              Check("steps_restarts", {"accuracy": 12.0, "more_steps_accuracy": 11.0, "steps": 40,
                                       "restart_accuracy": [12.0, 13.0], "worst_case_accuracy": 10.0}, True),
              Check("gradient_free", {"pgd_accuracy": 12.0, "random_search_accuracy": 40.0, "queries": 300}, True),
              Check("loss_increases", {"loss_path": [0.3514, 1.0, 2.9]}, True)]
    assert [describe(c.as_dict()) for c in checks] == [
        "accuracy 12.5% at eps 0.03137, 0.0% at eps 1",
        "PGD 12.0%, with 40 steps 11.0%, 2 other starts 12.5% on average, worst case over all starts 10.0%",
        "random search (300 queries) 40.0% vs PGD 12.0%",
        "mean loss 0.351 at the start, 2.900 after the last step"]
    with pytest.raises(ValueError, match="unknown check 'oracle'"):
        describe({"name": "oracle", "values": {}, "passed": True})
