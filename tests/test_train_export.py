"""tools/train_export.py: augmentation, schedule, export + parity against nxbar, and resume after a kill.

Runs only where torch imports (the optional `train` extra)."""

import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import train_export as T  # noqa: E402

from nxbar.data.load import load_dataset  # noqa: E402
from nxbar.models.vgg import VGG  # noqa: E402
from nxbar.weights import load_model  # noqa: E402

torch.set_num_threads(1)  # the machine running the suite is shared: one thread is faster than two


def test_augment_is_a_crop_of_the_zero_padded_image_then_a_mirror():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    dy, dx = np.array([0, 8, 3, 5]), np.array([8, 0, 4, 1])
    flip = np.array([True, False, False, True])
    out = T.augment(torch.from_numpy(images), torch.from_numpy(dy), torch.from_numpy(dx), torch.from_numpy(flip))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(4):
        ref = padded[i, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        ref = ref[:, ::-1] if flip[i] else ref
        np.testing.assert_array_equal(out[i].numpy(), ref.transpose(2, 0, 1) / np.float32(255))


def test_one_cycle_closed_form():
    total, lr = 1000, 0.1
    warm = round(T.WARMUP_FRACTION * total)
    assert T.one_cycle(0, total, lr) == pytest.approx(lr / T.DIV_FACTOR)
    assert T.one_cycle(warm // 2, total, lr) == pytest.approx((lr / T.DIV_FACTOR + lr) / 2)
    assert T.one_cycle(warm, total, lr) == pytest.approx(lr)
    end = lr / T.FINAL_DIV_FACTOR
    assert T.one_cycle((warm + total) // 2, total, lr) == pytest.approx((lr + end) / 2)
    assert T.one_cycle(total, total, lr) == pytest.approx(end)


def _random_bn_stats(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))


def test_export_writes_a_file_nxbar_loads_with_parity(tmp_path):
    torch.manual_seed(0)
    model = T.TorchVGG("vgg16")
    _random_bn_stats(model, 1)
    data = load_dataset("embedded")
    images, labels = data.images[:6], data.labels[:6]
    record = T.export(model, tmp_path / "vgg16_cifar10", class_names=data.class_names,
                      parity_set=(images[:3], labels[:3]),
                      eval_sets={"embedded_lossless_test": (images, labels, "first 6")},
                      meta={"training": {"note": "untrained"}})
    assert record["parity"]["passed"]
    net, meta = load_model(tmp_path / "vgg16_cifar10")
    with torch.no_grad():
        z_torch = model.eval()(T.to_tensor(images)).numpy()
    assert np.abs(net.forward(images) - z_torch).max() < 1e-3
    saved = json.loads((tmp_path / "vgg16_cifar10.json").read_text())
    acc = saved["accuracy"]["embedded_lossless_test"]
    assert acc["correct"] == int((z_torch.argmax(1) == labels).sum()) and acc["total"] == 6
    assert saved["training"] == {"note": "untrained"} and saved["normalization"]["mean"] == list(T.CIFAR10_MEAN)


def test_parity_detects_a_wrong_flatten_order():
    """fc1 columns in (H, W, C) instead of PyTorch's (C, H, W) order: the check must fail."""
    torch.manual_seed(0)
    model = T.TorchVGG("vgg8")
    params = T.to_params(model)
    w = params["fc1.weight"]
    params["fc1.weight"] = w.reshape(-1, 512, 4, 4).transpose(0, 2, 3, 1).reshape(w.shape)
    net = VGG("vgg8", params, num_classes=10, input_size=32, mean=np.array(T.CIFAR10_MEAN),
              std=np.array(T.CIFAR10_STD))
    data = load_dataset("embedded")
    check = T.parity(model, net, data.images[:2], data.labels[:2])
    assert not check["passed"] and check["max_abs_logit_diff_float32"] > 1e-3


def _tiny_image_folder(path: Path, class_names) -> Path:
    """An ImageFolder zip with train/ (3 PNGs a class) and test/ (1 a class) of random 32x32 images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for split, count in (("train", 3), ("test", 1)):
            for cls in class_names:
                for i in range(count):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
                    z.writestr(f"{split}/{cls}/{i:04d}.png", buf.getvalue())
    return path


def test_training_resumes_after_a_kill_to_the_same_weights(tmp_path, monkeypatch):
    data = _tiny_image_folder(tmp_path / "tiny.zip", load_dataset("embedded").class_names)

    out = str(tmp_path / "out")
    argv = ["--model", "vgg16", "--epochs", "2", "--batch-size", "4", "--limit-train", "8", "--lr", "0.01",
            "--limit-eval", "2", "--threads", "1", "--data", str(data), "--out-dir", out, "--results-dir", out,
            "--checkpoint-dir", out + "/ckpt", "--checkpoint-minutes", "0"]
    args = T.parse_args(argv)
    torch.set_num_threads(2)  # what an nxbar (Numba) forward pass earlier in the process leaves; train() resets it
    straight = T.train(args, tmp_path / "straight", *T.training_data(args, load_dataset("embedded")))
    real_step, calls = torch.optim.SGD.step, []

    def killed_at_step_4(self, *a, **k):  # 2 steps per epoch: dies inside epoch 2, after a checkpoint
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        T.main(argv)
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    resumed = T.main(argv)
    # Same weights up to float rounding (oneDNN's summation order may depend on memory alignment); a resume
    # that lost the optimiser momentum, the random generator or the position in the epoch is off by > 1e-4.
    for name, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for row_s, row_r in zip(straight["log"], resumed["log"], strict=True):
        for key in ("epoch", "lr", "train_loss", "train_acc", "test_acc"):
            assert float(row_r[key]) == pytest.approx(float(row_s[key]), abs=2e-5), key
    rows = list(csv.DictReader(open(tmp_path / "out" / "vgg16_cifar10.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert json.loads((tmp_path / "out" / "vgg16_cifar10.json").read_text())["training"]["epochs"] == 2


def test_fake_quantize_is_nxbar_quantize_weights_with_a_straight_through_gradient():
    from nxbar.crossbar.mapping import quantize_weights

    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for bits in (1, 2, 4):
        q = T.fake_quantize(w, bits)
        np.testing.assert_array_equal(q.detach().numpy(), quantize_weights(w.detach().numpy(), bits))
        assert len(torch.unique(q.detach().abs())) <= 2**bits
    # float32 weights within 64 ulps of every level boundary w_max (k + 1/2) / (2^b - 1): same level as nxbar's
    w_max = np.float32(0.7)
    for bits in (2, 4):
        n = 2**bits - 1
        mid = np.float32(w_max * (np.arange(n) + 0.5) / n)
        near = (mid[:, None] + np.arange(-64, 65) * np.spacing(mid)[:, None]).astype(np.float32).ravel()
        edge = np.concatenate([[w_max], near, -near])
        np.testing.assert_array_equal(T.fake_quantize(torch.from_numpy(edge), bits).numpy(),
                                      quantize_weights(edge, bits))
    (T.fake_quantize(w, 2) * torch.arange(w.numel()).view_as(w)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.arange(w.numel()).reshape(w.shape))  # dW_q/dW := 1
    assert T.fake_quantize(w, None) is w


def test_quanos_fine_tune_exports_a_hybrid_precision_file(tmp_path):
    from nxbar.weights import load_weights

    data = _tiny_image_folder(tmp_path / "tiny.zip", load_dataset("embedded").class_names)
    out = str(tmp_path / "out")
    common = ["--model", "vgg8", "--epochs", "1", "--batch-size", "4", "--limit-train", "8", "--limit-eval", "4",
              "--threads", "1", "--data", str(data), "--out-dir", out, "--results-dir", out]
    T.main([*common, "--lr", "0.01", "--checkpoint-dir", out + "/ckpt_fp"])
    T.main([*common, "--quanos-from", out + "/vgg8_cifar10", "--ans-n", "8", "--checkpoint-dir", out + "/ckpt_q"])
    params, meta = load_weights(tmp_path / "out" / "vgg8q_cifar10")  # validated: every layer on its grid
    plan = meta["quanos"]
    assert meta["model"] == "vgg8q" and meta["parity"]["passed"] and plan["widths"] == [2, 4]
    ans = np.array(list(plan["ans"].values()))
    assert list(plan["ans"]) == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1", "fc2"]
    # the 4 layers of highest ANS get 2 bits, the other 4 get 4 bits (nxbar.quanos.bits_from_ans)
    assert meta["layer_bits"] == [2 if a >= np.sort(ans)[4] else 4 for a in ans]
    assert meta["training"]["recipe"]["quanos_from"] == out + "/vgg8_cifar10" and meta["training"]["epochs"] == 1
    for name, bits in zip(plan["ans"], meta["layer_bits"]):
        assert len(np.unique(np.abs(params[f"{name}.weight"]))) <= 2**bits
    with pytest.raises(ValueError, match="already a hybrid-precision network"):
        T.main([*common, "--quanos-from", out + "/vgg8q_cifar10", "--ans-n", "8", "--checkpoint-dir", out + "/c2"])
