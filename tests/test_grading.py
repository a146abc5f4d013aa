"""The autograder: a correct solution built from nxbar's functions gets full marks, the shipped skeleton
zero without crashing, and each typical mistake loses exactly its cases with a message naming it."""

from pathlib import Path
import textwrap

import pytest

from nxbar.grading import grade

SKELETONS = Path(__file__).resolve().parents[1] / "docs" / "assignments" / "skeletons"

SOLUTION_1 = """
from nxbar.models.layers import im2col_3x3, conv3x3_forward, conv3x3_backward
from nxbar.models.layers import maxpool2_forward, maxpool2_backward, softmax_cross_entropy
"""

SOLUTION_2 = """
from nxbar.crossbar.circuit import nodal_system as _nodal, node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.tiling import to_tiles

def nodal_system(G, v, **res):
    A, B, _ = _nodal(G, **res)
    return A.toarray(), B @ v

def padded_tile_transfer(block, size, g_off_s, **res):
    return transfer_matrix(to_tiles(block, size, g_off_s)[0][0], **res)[: block.shape[0], : block.shape[1]]
"""


def _student(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def _failed(report):
    return {r.case: r.message for r in report.rows if not r.passed}


def _check_mistake(report, lost, words):
    """Exactly the cases `lost` fail, each message naming the symptom by all of `words`."""
    failed = _failed(report)
    assert set(failed) == set(lost), report.table()
    for case in lost:
        for word in words:
            assert word in failed[case], failed[case]
    assert report.score == report.max_score - sum(r.max_points for r in report.rows if r.case in lost)


def test_solution_1_full_marks(tmp_path):
    report = grade(1, _student(tmp_path, "good", SOLUTION_1))
    assert report.score == report.max_score == 26, report.table()
    assert "score 26/26" in report.table()


def test_solution_2_full_marks(tmp_path):
    report = grade(2, _student(tmp_path, "good", SOLUTION_2))
    assert report.score == report.max_score == 22, report.table()


def test_solution_3_full_marks(tmp_path):
    report = grade(3, _student(tmp_path, "good", "from nxbar.attacks import fgsm, pgd\n"))
    assert report.score == report.max_score == 17, report.table()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_skeleton_scores_zero(n):
    skeleton = sorted(SKELETONS.glob(f"assignment{n}_*.py"))
    assert len(skeleton) == 1
    report = grade(n, str(skeleton[0]))
    assert report.score == 0 and report.max_score > 0
    assert all("NotImplementedError: TODO" in r.message for r in report.rows), report.table()


def test_wrong_im2col_order(tmp_path):
    src = SOLUTION_1 + """
import numpy as np
from nxbar.models import layers

def _reorder(cols, c):  # (ky, kx, c) -> (c, ky, kx)
    return np.ascontiguousarray(cols.reshape(-1, 9, c).transpose(0, 2, 1).reshape(-1, 9 * c))

def im2col_3x3(x):
    return _reorder(layers.im2col_3x3(x), x.shape[3])

def conv3x3_forward(x, w_mat):
    n, h, w, c = x.shape
    return (im2col_3x3(x) @ w_mat).reshape(n, h, w, -1), (x, w_mat)

def conv3x3_backward(dout, cache):
    x, w_mat = cache
    c = x.shape[3]
    d2 = dout.reshape(-1, w_mat.shape[1])
    dcols = np.ascontiguousarray((d2 @ w_mat.T).reshape(-1, c, 9).transpose(0, 2, 1).reshape(-1, 9 * c))
    dx = layers.col2im_3x3(dcols, x.shape)
    return dx, layers.matrix_to_conv_weight(im2col_3x3(x).T @ d2, c)
"""
    report = grade(1, _student(tmp_path, "order", src))
    failed = _failed(report)
    assert set(failed) == {"im2col_3x3 values", "conv3x3_forward", "conv3x3_forward float32",
                           "conv3x3_backward dx", "conv3x3_backward dw"}, report.table()
    for case in ("im2col_3x3 values", "conv3x3_forward", "conv3x3_forward float32", "conv3x3_backward dx"):
        assert "(c_in, ky, kx) order" in failed[case], failed[case]
    assert report.score == 26 - 13


def test_maxpool_gradient_to_every_tie(tmp_path):
    src = SOLUTION_1 + """
def maxpool2_forward(x):
    out = x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2, -1).max(axis=(2, 4))
    return out, (x, out)

def maxpool2_backward(dout, cache):
    x, out = cache
    up = lambda a: a.repeat(2, axis=1).repeat(2, axis=2)
    return up(dout) * (x == up(out))
"""
    _check_mistake(grade(1, _student(tmp_path, "ties", src)), ["maxpool2_backward ties"], ["every tied maximum"])


def test_softmax_without_max_shift(tmp_path):
    src = SOLUTION_1 + """
import numpy as np

def softmax_cross_entropy(logits, y):
    n = len(y)
    e = np.exp(logits)
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return float(loss), p / n
"""
    with pytest.warns(RuntimeWarning):
        report = grade(1, _student(tmp_path, "overflow", src))
    _check_mistake(report, ["softmax_cross_entropy large logits"], ["NaN", "subtract each row's maximum"])


def test_broken_file_and_bad_arguments(tmp_path):
    report = grade(1, _student(tmp_path, "syntax", "def im2col_3x3(x:\n"))
    assert report.score == 0
    assert all("could not be imported: SyntaxError" in r.message for r in report.rows)
    report = grade(1, _student(tmp_path, "wrong_types", SOLUTION_1 + "\ndef im2col_3x3(x):\n    return [1]\n"))
    assert "expected a numpy array, got list" in _failed(report)["im2col_3x3 values"]
    with pytest.raises(ValueError, match="assignment must be one of"):
        grade(9, _student(tmp_path, "any", SOLUTION_1))
    with pytest.raises(ValueError, match="is not a file"):
        grade(1, str(tmp_path / "missing.py"))


def test_crossbar_without_sink_resistor(tmp_path):
    src = SOLUTION_2 + """
import numpy as np

def nodal_system(G, v, **res):
    A, B, _ = _nodal(G, **res)
    A = A.toarray()
    bottom = G.size + np.arange(G.size - G.shape[1], G.size)
    A[bottom, bottom] -= 1 / res["r_sink_ohm"]
    return A, B @ v

def node_voltages(G, v, **res):
    return _nv(G, v, **{**res, "r_sink_ohm": 0.0})

def transfer_matrix(G, **res):
    return _tm(G, **{**res, "r_sink_ohm": 0.0})

from nxbar.crossbar.circuit import node_voltages as _nv, transfer_matrix as _tm
"""
    report = grade(2, _student(tmp_path, "sink", src))
    lost = [r.case for r in report.rows if r.case.split()[0] != "nonideality_factor"]
    _check_mistake(report, lost, ["sink"])
    assert "R_sink = 0" in _failed(report)["transfer_matrix 8x8 SPEC defaults"]


def test_crossbar_padding_with_zero(tmp_path):
    src = SOLUTION_2 + """
def padded_tile_transfer(block, size, g_off_s, **res):
    return transfer_matrix(to_tiles(block, size, 0.0)[0][0], **res)[: block.shape[0], : block.shape[1]]
"""
    _check_mistake(grade(2, _student(tmp_path, "pad", src)), ["padded_tile_transfer"], ["padding with 0 S", "OFF"])


def test_crossbar_transposed_transfer_matrix(tmp_path):
    src = SOLUTION_2 + """
from nxbar.crossbar.circuit import transfer_matrix as _tm

def transfer_matrix(G, **res):
    return _tm(G, **res).T.copy()
"""
    report = grade(2, _student(tmp_path, "transposed", src))
    failed = _failed(report)
    assert set(failed) == {"transfer_matrix 2x2 worked example", "transfer_matrix 3x5 random",
                           "transfer_matrix 8x8 SPEC defaults", "padded_tile_transfer"}, report.table()
    assert "expected shape (3, 5), got shape (5, 3)" in failed["transfer_matrix 3x5 random"]
    for case in ("transfer_matrix 2x2 worked example", "transfer_matrix 8x8 SPEC defaults", "padded_tile_transfer"):
        assert "T transposed" in failed[case], failed[case]


ATTACK_BASE = """
import numpy as np
from nxbar.attacks import fgsm, pgd, project
"""
FGSM_CASES = ["fgsm", "fgsm clips to [0, 1]", "fgsm per-channel eps, float32", "fgsm on VGG8"]


def test_fgsm_sign_flipped(tmp_path):
    src = ATTACK_BASE + """
def fgsm(model, x, y, eps):
    eps = np.asarray(eps, dtype=x.dtype)
    return np.clip(x - eps * np.sign(model.loss_and_input_grad(x, y)[1]), 0, 1).astype(x.dtype)
"""
    _check_mistake(grade(3, _student(tmp_path, "sign", src)), FGSM_CASES, ["sign of the step is flipped"])


def test_fgsm_not_clipped(tmp_path):
    src = ATTACK_BASE + """
def fgsm(model, x, y, eps):
    eps = np.asarray(eps, dtype=x.dtype)
    return x + eps * np.sign(model.loss_and_input_grad(x, y)[1])
"""
    report = grade(3, _student(tmp_path, "clip", src))
    _check_mistake(report, ["fgsm clips to [0, 1]"], ["not clipped to the image box"])


def test_pgd_without_projection(tmp_path):
    src = ATTACK_BASE + """
def pgd(model, x, y, eps, *, steps=10, alpha=2 / 255, random_start=True, rng=None):
    eps, alpha = np.asarray(eps, dtype=x.dtype), np.asarray(alpha, dtype=x.dtype)
    x_adv = x.copy()
    if random_start:
        x_adv = project(x + eps * rng.uniform(-1.0, 1.0, size=x.shape).astype(x.dtype), x, eps)
    for _ in range(steps):
        x_adv = np.clip(x_adv + alpha * np.sign(model.loss_and_input_grad(x_adv, y)[1]), 0, 1)
    return x_adv
"""
    _check_mistake(grade(3, _student(tmp_path, "ball", src)), ["pgd", "pgd random start"], ["eps-ball"])
