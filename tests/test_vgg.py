"""VGG models: forward against an independent NCHW reference, gradients against float64 finite differences,
the contract other modules rely on, and validation errors."""

import numpy as np
import pytest

from nxbar.models import vgg as vgg_module
from nxbar.models.arch import check_arch, param_shapes
from nxbar.models.layers import softmax_cross_entropy
from nxbar.models.vgg import VGG, random_params

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)


def make(arch="vgg8", num_classes=10, input_size=32, dtype=np.float64, seed=0):
    params = random_params(arch, num_classes=num_classes, input_size=input_size, seed=seed)
    return VGG(arch, params, num_classes=num_classes, input_size=input_size, mean=MEAN, std=STD, dtype=dtype)


def images(n, size=32, seed=1):
    return np.random.default_rng(seed).random((n, size, size, 3))


def reference_logits(model, x):
    """Plain NCHW forward written from the definitions, with PyTorch-layout weights used directly."""
    p, h = model.params, ((x - model.mean) / model.std).transpose(0, 3, 1, 2)
    k = 0
    for item in check_arch(model.arch)["features"]:
        if item == "M":
            n, c, s, _ = h.shape
            h = h.reshape(n, c, s // 2, 2, s // 2, 2).max(axis=(3, 5))
            continue
        k += 1
        w, s = p[f"conv{k}.weight"], h.shape[2]
        hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        h = sum(np.einsum("ncij,oc->noij", hp[:, :, ky:ky + s, kx:kx + s], w[:, :, ky, kx])
                for ky in range(3) for kx in range(3))
        bn = [p[f"bn{k}.{q}"][None, :, None, None] for q in ("weight", "bias", "running_mean", "running_var")]
        h = np.maximum(bn[0] * (h - bn[2]) / np.sqrt(bn[3] + model.bn_eps) + bn[1], 0)
    h = h.reshape(len(h), -1)
    n_fc = sum(1 for name in p if name.startswith("fc") and name.endswith("weight"))
    for j in range(1, n_fc + 1):
        h = h @ p[f"fc{j}.weight"].T + p[f"fc{j}.bias"]
        h = np.maximum(h, 0) if j < n_fc else h
    return h


@pytest.fixture(scope="module")
def vgg8():
    return make("vgg8")


@pytest.fixture(scope="module")
def vgg16():
    return make("vgg16", num_classes=7)


def patch_directions(shape, n, rng, patch=4):
    """n random directions in image space, each N(0, 1) on one random patch x patch square of every image.

    The networks are piecewise linear (ReLU, max-pool): a dense direction crosses thousands of kinks even
    for steps of 1e-7, spoiling any finite difference; a local direction crosses none at the step used.
    """
    out = []
    for _ in range(n):
        v = np.zeros(shape)
        i, j = rng.integers(0, shape[1] - patch, 2)
        v[:, i:i + patch, j:j + patch] = rng.standard_normal((shape[0], patch, patch, shape[3]))
        out.append(v)
    return out


def sparse_directions(shape, n, rng, k=16):
    """n random directions in parameter space, each N(0, 1) on k random coordinates (see patch_directions)."""
    out = []
    for _ in range(n):
        v = np.zeros(int(np.prod(shape)))
        idx = rng.choice(v.size, min(k, v.size), replace=False)
        v[idx] = rng.standard_normal(idx.size)
        out.append(v.reshape(shape))
    return out


def directional_check(loss_of, grad, directions, h=1e-6):
    """Largest relative error between <grad, v> and the central difference (loss_of(h v) - loss_of(-h v)) / 2h."""
    worst = 0.0
    for v in directions:
        fd = (loss_of(h * v) - loss_of(-h * v)) / (2 * h)
        an = np.sum(grad * v)
        assert an != 0, "a direction along which the gradient vanishes checks nothing"
        worst = max(worst, abs(fd - an) / max(abs(fd), abs(an)))
    return worst


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("arch", ["vgg8", "vgg16"])
def test_forward_matches_independent_reference(arch, vgg8, vgg16):
    model = vgg8 if arch == "vgg8" else vgg16
    x = images(2)
    logits = model.forward(x)
    ref = reference_logits(model, x)
    assert logits.shape == (2, model.num_classes)
    assert np.max(np.abs(logits - ref)) < 1e-10 * np.max(np.abs(ref))


def test_vgg16_64x64_forward_shape():
    model = make("vgg16", num_classes=200, input_size=64, dtype=np.float32)
    assert model.params["fc1.weight"].shape == (200, 2048)
    out = model.forward(images(2, size=64).astype(np.float32))
    assert out.shape == (2, 200) and out.dtype == np.float32 and np.all(np.isfinite(out))


def test_float32_model_agrees_with_float64(vgg8):
    x = images(2)
    f32 = vgg8.astype(np.float32)
    assert f32.dtype == np.float32 and f32.params["conv1.weight"].dtype == np.float32
    logits = f32.forward(x)
    assert logits.dtype == np.float32
    assert np.max(np.abs(logits - vgg8.forward(x))) < 1e-4 * np.max(np.abs(vgg8.forward(x)))


def test_uint8_images_are_divided_by_255(vgg8):
    x = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.allclose(vgg8.forward(x), vgg8.forward(x / 255.0), rtol=1e-12, atol=1e-12)


def test_predict_is_argmax_of_logits_in_batches(vgg8):
    x = images(5)
    labels = vgg8.predict(x, batch_size=2)
    assert labels.dtype == np.int64 and np.array_equal(labels, vgg8.forward(x).argmax(axis=1))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("arch", ["vgg8", "vgg16"])
def test_input_gradient_matches_finite_differences(arch, vgg8, vgg16):
    model = vgg8 if arch == "vgg8" else vgg16
    x, y = images(2), np.array([3, 5])
    loss, dx = model.loss_and_input_grad(x, y)
    assert isinstance(loss, float) and dx.shape == x.shape and dx.dtype == np.float64
    directions = patch_directions(x.shape, 3, np.random.default_rng(2))
    assert directional_check(lambda d: model.loss_and_input_grad(x + d, y)[0], dx, directions) < 1e-6


@pytest.mark.parametrize("arch, names", [
    ("vgg8", ["conv1.weight", "conv4.weight", "bn2.weight", "bn5.bias", "fc1.weight", "fc2.bias"]),
    ("vgg16", ["conv2.weight", "conv13.weight", "bn7.weight", "fc1.weight"]),
])
def test_weight_gradients_match_finite_differences(arch, names, vgg8, vgg16):
    model = vgg8 if arch == "vgg8" else vgg16
    x, y = images(2), np.array([1, 6])
    loss, dx, grads = model.loss_and_grads(x, y)
    trainable = {n for n in model.params if not n.endswith(("running_mean", "running_var"))}
    assert set(grads) == trainable
    assert np.array_equal(dx, model.loss_and_input_grad(x, y)[1])
    rng = np.random.default_rng(3)
    for name in names:
        p = model.params[name]
        assert grads[name].shape == p.shape and grads[name].dtype == np.float64
        err = directional_check(lambda d: softmax_cross_entropy(model.with_params({name: p + d}).forward(x), y)[0],
                                grads[name], sparse_directions(p.shape, 1, rng))
        assert err < 1e-6, name


def test_gradients_do_not_depend_on_internal_chunking(vgg8, monkeypatch):
    x, y = images(3), np.array([0, 9, 4])
    whole = vgg8.loss_and_grads(x, y)
    monkeypatch.setattr(vgg_module, "_CHUNK", 2)
    parts = vgg8.loss_and_grads(x, y)
    assert np.isclose(whole[0], parts[0], rtol=1e-13)
    for a, b in [(whole[1], parts[1])] + [(whole[2][n], parts[2][n]) for n in whole[2]]:
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a))


# ----------------------------------------------------------------------------- contract
def test_attributes_and_read_only_params(vgg8):
    assert (vgg8.arch, vgg8.num_classes, vgg8.input_size, vgg8.bn_eps) == ("vgg8", 10, 32, 1e-5)
    assert vgg8.mvm_names == ("conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "conv5.weight",
                              "conv6.weight", "fc1.weight", "fc2.weight")
    assert np.allclose(vgg8.mean, MEAN) and np.allclose(vgg8.std, STD)
    assert list(vgg8.params) == list(param_shapes("vgg8", 10, 32))
    with pytest.raises(ValueError, match="read-only"):
        vgg8.params["fc2.bias"][0] = 1.0


def test_with_params_replaces_some_arrays_and_shares_the_rest(vgg8):
    vgg8.forward(images(1))  # the unrolled matrices exist; the new model must not reuse fc2's
    new_w = np.zeros_like(vgg8.params["fc2.weight"])
    new = vgg8.with_params({"fc2.weight": new_w})
    assert np.shares_memory(new.params["conv3.weight"], vgg8.params["conv3.weight"])
    assert np.array_equal(new.params["fc2.weight"], new_w)
    logits = new.forward(images(2))
    assert np.allclose(logits, vgg8.params["fc2.bias"])  # zero weights leave the bias
    with pytest.raises(ValueError, match="unknown array\\(s\\) conv9.weight"):
        vgg8.with_params({"conv9.weight": new_w})


def test_construction_errors_name_the_array():
    params = random_params("vgg8", num_classes=10, input_size=32)
    kw = dict(num_classes=10, input_size=32, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="lack the array\\(s\\) bn3.bias"):
        VGG("vgg8", {k: v for k, v in params.items() if k != "bn3.bias"}, **kw)
    with pytest.raises(ValueError, match="unexpected array\\(s\\) conv1.bias"):
        VGG("vgg8", {**params, "conv1.bias": np.zeros(128)}, **kw)
    with pytest.raises(ValueError, match=r"fc1.weight has shape \(1024, 8191\), expected \(1024, 8192\)"):
        VGG("vgg8", {**params, "fc1.weight": np.zeros((1024, 8191))}, **kw)
    with pytest.raises(ValueError, match="fc2.bias has dtype int64"):
        VGG("vgg8", {**params, "fc2.bias": np.zeros(10, dtype=np.int64)}, **kw)
    with pytest.raises(ValueError, match="unknown architecture 'vgg11'"):
        VGG("vgg11", params, **kw)
    with pytest.raises(ValueError, match="std must be 3 finite positive"):
        VGG("vgg8", params, **{**kw, "std": (0.2, 0.0, 0.2)})
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        VGG("vgg8", params, dtype=np.float16, **kw)
    with pytest.raises(ValueError, match="input_size must be one of"):
        VGG("vgg8", params, **{**kw, "input_size": 48})


def test_input_errors(vgg8):
    with pytest.raises(ValueError, match=r"x must have shape \(N, 32, 32, 3\) \(NHWC\), got \(2, 3, 32, 32\)"):
        vgg8.forward(np.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="uint8 or floating"):
        vgg8.forward(np.zeros((1, 32, 32, 3), dtype=np.int32))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        vgg8.loss_and_input_grad(images(2), np.array([0, 10]))
    with pytest.raises(ValueError, match="2 integer labels"):
        vgg8.loss_and_input_grad(images(2), np.array([0]))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        vgg8.predict(images(1), batch_size=0)


def test_logits_match_pytorch():
    torch = pytest.importorskip("torch")
    from tools.train_export import from_nxbar

    model = make("vgg8", dtype=np.float32)
    x = images(2).astype(np.float32)
    with torch.no_grad():
        ref = from_nxbar(model)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.max(np.abs(model.forward(x) - ref)) < 1e-4 * np.max(np.abs(ref))
