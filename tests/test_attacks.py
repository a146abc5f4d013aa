"""FGSM, PGD and the SW/SH/HH evaluation, checked on a linear softmax model whose gradient is known in closed form."""

import numpy as np
import pytest

from nxbar.attacks import eps_label, fgsm, parse_fraction, pgd, pixel_budget, project
from nxbar.evaluation import AttackConfig, count_correct, evaluate_modes, make_adversarial


class Linear:
    """logits = flatten(x) W + b; mean softmax cross-entropy. Same interface as the VGG models."""

    def __init__(self, seed=0, shape=(8, 8, 3), classes=4, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.w = rng.standard_normal((int(np.prod(shape)), classes)).astype(dtype)
        self.b = rng.standard_normal(classes).astype(dtype)
        self.dtype = np.dtype(dtype)
        self.std = np.array([0.25, 0.5, 0.125])

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.w + self.b

    def predict(self, x):
        return np.argmax(self.forward(x), axis=1)

    def loss_and_input_grad(self, x, y):
        z = self.forward(x)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(len(y)), y]))
        p[np.arange(len(y)), y] -= 1
        return loss, (p @ self.w.T / len(y)).reshape(x.shape)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (40, 8, 8, 3))
    return x, Linear().predict(x)  # labels = the model's own predictions: CA = 100%


def test_parse_fraction():
    assert parse_fraction("8/255") == 8 / 255 and parse_fraction(" 0.03") == 0.03
    for bad in ("eight", "1/0", ""):
        with pytest.raises(ValueError, match="not a number or fraction"):
            parse_fraction(bad)


def test_eps_label_inverts_parse_fraction():
    assert [eps_label("pgd", parse_fraction(t)) for t in ("2/255", "8/255", "0/255")] == ["2/255", "8/255", "0/255"]
    assert eps_label("pgd", 0.03) == "0.03"  # 7.65 steps of 1/255: written as given
    assert eps_label("fgsm", 0.2) == "0.2" and eps_label("fgsm", 8 / 255) == "0.0313725"  # the paper's FGSM headers


def test_pixel_budget_spaces():
    std = np.array([0.25, 0.5, 0.125])
    assert np.array_equal(pixel_budget(0.1, "pixel", std), [0.1, 0.1, 0.1])
    assert np.allclose(pixel_budget(0.1, "normalized", std), 0.1 * std)
    with pytest.raises(ValueError, match="eps 1.5 is out of range"):
        pixel_budget(1.5, "pixel", std)
    with pytest.raises(ValueError, match="eps space 'logit' unknown"):
        pixel_budget(0.1, "logit", std)


def test_fgsm_is_the_signed_gradient_step(batch):
    x, y = batch
    model = Linear()
    _, grad = model.loss_and_input_grad(x, y)
    expected = np.clip(x + 0.05 * np.sign(grad), 0, 1)
    assert np.array_equal(fgsm(model, x, y, 0.05), expected)
    assert model.loss_and_input_grad(expected, y)[0] > model.loss_and_input_grad(x, y)[0]


@pytest.mark.parametrize("eps", [0.0, 0.03, np.array([0.01, 0.05, 0.2])])
def test_adversarial_inputs_stay_in_the_eps_ball_and_the_box(batch, eps):
    x, y = batch
    model = Linear()
    for x_adv in (fgsm(model, x, y, eps), pgd(model, x, y, eps, steps=5, alpha=0.01, rng=np.random.default_rng(0))):
        assert np.all(np.abs(x_adv - x) <= np.asarray(eps) + 1e-12)
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_projection():
    x = np.array([0.5, 0.02, 0.99])
    assert np.allclose(project(np.array([0.9, -0.5, 1.5]), x, 0.1), [0.6, 0.0, 1.0])


def test_pgd_increases_the_loss_and_is_reproducible(batch):
    x, y = batch
    model = Linear()
    a = pgd(model, x, y, 0.05, steps=10, alpha=0.01, rng=np.random.default_rng(7))
    b = pgd(model, x, y, 0.05, steps=10, alpha=0.01, rng=np.random.default_rng(7))
    c = pgd(model, x, y, 0.05, steps=10, alpha=0.01, rng=np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert model.loss_and_input_grad(a, y)[0] > model.loss_and_input_grad(x, y)[0]


def test_pgd_without_random_start_is_iterated_fgsm(batch):
    x, y = batch
    model = Linear()
    step = fgsm(model, x, y, 0.01)
    assert np.array_equal(pgd(model, x, y, 0.01, steps=1, alpha=0.01, random_start=False), step)


def test_pgd_argument_errors(batch):
    x, y = batch
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        pgd(Linear(), x, y, 0.1, steps=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="seeded numpy Generator"):
        pgd(Linear(), x, y, 0.1)
    with pytest.raises(ValueError, match="eps must be a finite scalar"):
        fgsm(Linear(), x, y, -0.1)


def test_attack_config_validation():
    for kwargs, message in [
        ({"attack": "cw"}, "attack 'cw' unknown"),
        ({"eps": -0.1}, "eps -0.1 is out of range"),
        ({"eps": 1.5}, "eps 1.5 is out of range"),
        ({"steps": 0}, "steps 0 is not allowed"),
        ({"alpha": 0.0}, "alpha 0.0 is out of range"),
        ({"eps_space": "db"}, "eps space 'db' unknown"),
    ]:
        with pytest.raises(ValueError, match=message):
            AttackConfig(**kwargs)
    assert "steps" not in AttackConfig(attack="fgsm").as_dict()


def test_results_do_not_depend_on_batch_size(batch):
    x, y = batch
    cfg = AttackConfig(attack="pgd", eps=0.05, steps=3, alpha=0.02, seed=3)
    a = make_adversarial(Linear(), x, y, cfg, batch_size=7)
    b = make_adversarial(Linear(), x, y, cfg, batch_size=40)
    assert np.array_equal(a, b)


def test_modes_eps_zero_and_identical_hardware(batch):
    x, y = batch
    sw = Linear(seed=0)
    rows = evaluate_modes(sw, sw, x, y, [AttackConfig(attack="fgsm", eps=0.0), AttackConfig(attack="pgd", eps=0.1)])
    zero, strong = rows[:3], rows[3:]
    assert [r["mode"] for r in rows] == ["SW", "SH", "HH"] * 2
    assert all(r["AA"] == r["CA"] == 100.0 and r["AL"] == 0.0 for r in zero)
    # the hardware model is the software model: SH and HH must equal SW exactly
    assert strong[0]["adv_correct"] == strong[1]["adv_correct"] == strong[2]["adv_correct"] < len(y)
    for r in rows:
        assert r["AL"] == pytest.approx(r["CA"] - r["AA"]) and r["n"] == len(y)


def test_sh_is_transfer_and_hh_is_white_box(batch):
    x, y = batch
    sw, hw = Linear(seed=0), Linear(seed=5)
    cfg = AttackConfig(attack="fgsm", eps=0.1)
    rows = {r["mode"]: r for r in evaluate_modes(sw, hw, x, y, [cfg])}
    adv_sw = make_adversarial(sw, x, y, cfg)
    adv_hw = make_adversarial(hw, x, y, cfg)
    assert rows["SH"]["adv_correct"] == count_correct(hw, adv_sw, y)
    assert rows["HH"]["adv_correct"] == count_correct(hw, adv_hw, y)
    assert rows["SH"]["clean_correct"] == count_correct(hw, x, y)


def test_an_fgsm_eps_sweep_takes_one_gradient_per_model(batch):
    """FGSM's gradient signs do not depend on eps: evaluate_modes computes them once per model (batch by batch)
    for every eps in both eps spaces, and each row equals FGSM made afresh at its eps."""
    x, y = batch

    class Counting(Linear):
        def loss_and_input_grad(self, x, y):
            self.calls += 1
            return super().loss_and_input_grad(x, y)

    sw, hw = Counting(seed=0), Counting(seed=5)
    sw.calls = hw.calls = 0
    cfgs = [AttackConfig(attack="fgsm", eps=e, eps_space=s) for s in ("pixel", "normalized") for e in (0.02, 0.1)]
    rows = evaluate_modes(sw, hw, x, y, cfgs, batch_size=15)
    assert sw.calls == hw.calls == 3  # 40 images in batches of 15, one pass each
    for cfg, (r_sw, r_sh, r_hh) in zip(cfgs, zip(rows[0::3], rows[1::3], rows[2::3])):
        eps = pixel_budget(cfg.eps, cfg.eps_space, sw.std)
        adv_sw, adv_hw = fgsm(Linear(seed=0), x, y, eps), fgsm(Linear(seed=5), x, y, eps)
        assert np.array_equal(make_adversarial(sw, x, y, cfg), adv_sw)
        assert r_sw["adv_correct"] == count_correct(sw, adv_sw, y) and r_sh["adv_correct"] == count_correct(hw, adv_sw, y)
        assert r_hh["adv_correct"] == count_correct(hw, adv_hw, y)
    assert len({r["adv_correct"] for r in rows}) > 2  # the eps and the models give different counts


def test_mode_errors(batch):
    x, y = batch
    with pytest.raises(ValueError, match="mode.*xx not allowed"):
        evaluate_modes(Linear(), Linear(), x, y, [AttackConfig()], modes=("sw", "xx"))
    with pytest.raises(ValueError, match="need a crossbar-mapped model"):
        evaluate_modes(Linear(), None, x, y, [AttackConfig()], modes=("hh",))


def test_pgd_is_at_least_as_strong_as_fgsm_and_more_steps_do_not_help_the_defender(batch):
    x, y = batch
    model = Linear()
    eps = 0.05
    counts = {"fgsm": count_correct(model, fgsm(model, x, y, eps), y)}
    for steps in (5, 10, 20, 40):
        x_adv = pgd(model, x, y, eps, steps=steps, alpha=eps / 4, rng=np.random.default_rng(0))
        counts[steps] = count_correct(model, x_adv, y)
    assert counts[10] <= counts["fgsm"] < len(y)
    assert counts[40] <= counts[20] <= counts[10] <= counts[5] + 1  # more steps: never more than noise higher


def test_evaluation_is_reproducible_bit_for_bit(batch):
    x, y = batch
    cfg = [AttackConfig(attack="pgd", eps=0.05, steps=4, alpha=0.02, seed=11)]
    a = evaluate_modes(Linear(0), Linear(3), x, y, cfg)
    b = evaluate_modes(Linear(0), Linear(3), x, y, cfg)
    assert a == b
