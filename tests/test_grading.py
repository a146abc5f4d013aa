"""The autograder: a correct NumPy solution gets full marks, the shipped skeleton zero without crashing, and each
typical mistake loses exactly its cases with a message naming it. The correct solutions here are also the base of
the cheating submissions in test_grading_isolation.py."""

from pathlib import Path
import textwrap

import pytest

from nxbar.grading import grade

SKELETONS = Path(__file__).resolve().parents[1] / "docs" / "assignments" / "skeletons"

SOLUTION_1 = """
import numpy as np


def im2col_3x3(x):
    n, h, w, c = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.empty((n, h, w, 9, c), x.dtype)
    for ky in range(3):
        for kx in range(3):
            cols[:, :, :, ky * 3 + kx, :] = p[:, ky:ky + h, kx:kx + w, :]
    return cols.reshape(n * h * w, 9 * c)


def col2im_3x3(dcols, shape):
    n, h, w, c = shape
    d = dcols.reshape(n, h, w, 9, c)
    p = np.zeros((n, h + 2, w + 2, c), dcols.dtype)
    for ky in range(3):
        for kx in range(3):
            p[:, ky:ky + h, kx:kx + w, :] += d[:, :, :, ky * 3 + kx, :]
    return p[:, 1:-1, 1:-1, :]


def conv3x3_forward(x, w_mat):
    n, h, w, c = x.shape
    cols = im2col_3x3(x)
    return (cols @ w_mat).reshape(n, h, w, -1), (x, w_mat, cols)


def conv3x3_backward(dout, cache):
    x, w_mat, cols = cache
    d2 = dout.reshape(-1, w_mat.shape[1])
    dw_mat = cols.T @ d2
    dw = dw_mat.reshape(3, 3, x.shape[3], -1).transpose(3, 2, 0, 1)
    return col2im_3x3(d2 @ w_mat.T, x.shape), np.ascontiguousarray(dw)


def maxpool2_forward(x):
    n, h, w, c = x.shape
    win = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2, w // 2, 4, c)
    return win.max(axis=3), (x.shape, win.argmax(axis=3))


def maxpool2_backward(dout, cache):
    (n, h, w, c), arg = cache
    d = np.zeros((n, h // 2, w // 2, 4, c), dout.dtype)
    np.put_along_axis(d, arg[:, :, :, None, :], dout[:, :, :, None, :], axis=3)
    return d.reshape(n, h // 2, w // 2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def softmax_cross_entropy(logits, y):
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    p = np.exp(z - lse[:, None])
    p[np.arange(n), y] -= 1
    return float((lse - z[np.arange(n), y]).mean()), p / n
"""

SOLUTION_2 = """
import numpy as np


def nodal_system(G, v, r_source_ohm, r_sink_ohm, r_wire_row_ohm, r_wire_col_ohm):
    rows, cols = G.shape
    n = rows * cols
    A, b = np.zeros((2 * n, 2 * n)), np.zeros(2 * n)

    def link(p, q, g):
        A[p, p] += g
        A[q, q] += g
        A[p, q] -= g
        A[q, p] -= g

    for i in range(rows):
        for j in range(cols):
            r, c = i * cols + j, n + i * cols + j
            link(r, c, G[i, j])
            if j + 1 < cols:
                link(r, r + 1, 1 / r_wire_row_ohm)
            if i + 1 < rows:
                link(c, c + cols, 1 / r_wire_col_ohm)
        A[i * cols, i * cols] += 1 / r_source_ohm
        b[i * cols] = v[i] / r_source_ohm
    for j in range(cols):
        A[n + (rows - 1) * cols + j, n + (rows - 1) * cols + j] += 1 / r_sink_ohm
    return A, b


def node_voltages(G, v, **res):
    n = G.size
    x = np.linalg.solve(*nodal_system(G, v, **res))
    v_col = x[n:].reshape(G.shape)
    return x[:n].reshape(G.shape), v_col, v_col[-1] / res["r_sink_ohm"]


def transfer_matrix(G, **res):
    return np.stack([node_voltages(G, e, **res)[2] for e in np.eye(G.shape[0])])


def padded_tile_transfer(block, size, g_off_s, **res):
    tile = np.full((size, size), g_off_s)
    tile[: block.shape[0], : block.shape[1]] = block
    return transfer_matrix(tile, **res)[: block.shape[0], : block.shape[1]]


def nonideality_factor(G, T, n_inputs=64, seed=0):
    V = np.random.default_rng(seed).uniform(0.0, 1.0, (n_inputs, G.shape[0]))
    ideal = V @ G
    return float(np.mean((ideal - V @ T) / ideal))
"""

SOLUTION_3 = """
import numpy as np


def _project(z, x, eps):
    return np.clip(np.clip(z, x - eps, x + eps), 0.0, 1.0)


def fgsm(model, x, y, eps):
    eps = np.asarray(eps, dtype=x.dtype)
    return np.clip(x + eps * np.sign(model.loss_and_input_grad(x, y)[1]), 0.0, 1.0).astype(x.dtype)


def pgd(model, x, y, eps, *, steps=10, alpha=2 / 255, random_start=True, rng=None):
    eps, alpha = np.asarray(eps, dtype=x.dtype), np.asarray(alpha, dtype=x.dtype)
    x_adv = x.copy()
    if random_start:
        x_adv = _project(x + eps * rng.uniform(-1.0, 1.0, size=x.shape).astype(x.dtype), x, eps)
    for _ in range(steps):
        x_adv = _project(x_adv + alpha * np.sign(model.loss_and_input_grad(x_adv, y)[1]), x, eps)
    return x_adv.astype(x.dtype)
"""

SOLUTIONS = {1: SOLUTION_1, 2: SOLUTION_2, 3: SOLUTION_3}


def student(tmp_path, name, source):
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


@pytest.mark.parametrize("n, points", [(1, 26), (2, 22), (3, 17)])
def test_solution_full_marks_on_fresh_inputs(tmp_path, n, points):
    first = grade(n, student(tmp_path, "good", SOLUTIONS[n]))
    assert first.score == first.max_score == points, first.table()
    assert f"score {points}/{points}" in first.table() and f"--seed {first.seed}" in first.table()
    again = grade(n, student(tmp_path, "good", SOLUTIONS[n]), seed=first.seed)
    assert again.seed == first.seed and again.score == points


@pytest.mark.parametrize("n", [1, 2, 3])
def test_skeleton_scores_zero(n):
    skeleton = sorted(SKELETONS.glob(f"assignment{n}_*.py"))
    assert len(skeleton) == 1
    report = grade(n, str(skeleton[0]))
    assert report.score == 0 and report.max_score > 0
    assert all("NotImplementedError: TODO" in r.message for r in report.rows), report.table()


def test_wrong_im2col_order(tmp_path):
    src = SOLUTION_1 + """
_right_im2col = im2col_3x3

def _reorder(cols, c):  # (ky, kx, c) -> (c, ky, kx)
    return np.ascontiguousarray(cols.reshape(-1, 9, c).transpose(0, 2, 1).reshape(-1, 9 * c))

def im2col_3x3(x):
    return _reorder(_right_im2col(x), x.shape[3])

def conv3x3_backward(dout, cache):
    x, w_mat, cols = cache
    c = x.shape[3]
    d2 = dout.reshape(-1, w_mat.shape[1])
    dcols = np.ascontiguousarray((d2 @ w_mat.T).reshape(-1, c, 9).transpose(0, 2, 1).reshape(-1, 9 * c))
    return col2im_3x3(dcols, x.shape), (cols.T @ d2).reshape(3, 3, c, -1).transpose(3, 2, 0, 1)
"""
    report = grade(1, student(tmp_path, "order", src))
    failed = _failed(report)
    assert set(failed) == {"im2col_3x3 values", "conv3x3_forward", "conv3x3_forward float32",
                           "conv3x3_backward dx", "conv3x3_backward dw"}, report.table()
    for case in ("im2col_3x3 values", "conv3x3_forward", "conv3x3_forward float32", "conv3x3_backward dx"):
        assert "(c_in, ky, kx) order" in failed[case], failed[case]
    assert report.score == 26 - 13


def test_conv_dw_in_the_wrong_layout(tmp_path):
    src = SOLUTION_1 + """
def conv3x3_backward(dout, cache):
    x, w_mat, cols = cache
    d2 = dout.reshape(-1, w_mat.shape[1])
    dw = (cols.T @ d2).T.reshape(w_mat.shape[1], x.shape[3], 3, 3)
    return col2im_3x3(d2 @ w_mat.T, x.shape), dw
"""
    _check_mistake(grade(1, student(tmp_path, "layout", src)), ["conv3x3_backward dw"],
                   ["dw_mat.T reshaped", "dw[o, c, ky, kx] = dw_mat[(ky*3 + kx)*C_in + c, o]"])


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
    _check_mistake(grade(1, student(tmp_path, "ties", src)), ["maxpool2_backward ties"], ["every tied maximum"])


def test_softmax_without_max_shift(tmp_path):
    src = SOLUTION_1 + """
def softmax_cross_entropy(logits, y):
    n = len(y)
    e = np.exp(logits)
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return float(loss), p / n
"""
    report = grade(1, student(tmp_path, "overflow", src))
    _check_mistake(report, ["softmax_cross_entropy large logits"], ["NaN", "subtract each row's maximum"])


def test_loss_that_is_inf_at_large_logits_fails(tmp_path):
    src = SOLUTION_1 + """
def softmax_cross_entropy(logits, y):
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return float(loss), p / n
"""
    report = grade(1, student(tmp_path, "log_of_zero", src))
    _check_mistake(report, ["softmax_cross_entropy large logits"], ["loss: expected", "got inf", "logsumexp(z) - z[y]"])


def test_broken_file_and_bad_arguments(tmp_path):
    report = grade(1, student(tmp_path, "syntax", "def im2col_3x3(x:\n"))
    assert report.score == 0
    assert all("could not be imported: SyntaxError" in r.message for r in report.rows)
    report = grade(1, student(tmp_path, "wrong_types", SOLUTION_1 + "\ndef im2col_3x3(x):\n    return [1]\n"))
    assert "expected a numpy array, got list" in _failed(report)["im2col_3x3 values"]
    with pytest.raises(ValueError, match="assignment must be one of"):
        grade(9, student(tmp_path, "any", SOLUTION_1))
    with pytest.raises(ValueError, match="is not a file"):
        grade(1, str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\), got -1"):
        grade(1, student(tmp_path, "any", SOLUTION_1), seed=-1)


_SINK_NODES = """
_right_nodal = nodal_system

def _bottom(G):
    return G.size + np.arange(G.size - G.shape[1], G.size)
"""


def test_crossbar_without_sink_resistor(tmp_path):
    src = SOLUTION_2 + _SINK_NODES + """
def nodal_system(G, v, **res):
    A, b = _right_nodal(G, v, **res)
    A[_bottom(G), _bottom(G)] -= 1 / res["r_sink_ohm"]
    return A, b

def node_voltages(G, v, **res):  # the column bottoms grounded directly
    A, b = _right_nodal(G, v, **res)
    A[_bottom(G)] = 0.0
    A[_bottom(G), _bottom(G)] = 1.0
    b[_bottom(G)] = 0.0
    x = np.linalg.solve(A, b)
    v_row, v_col = x[: G.size].reshape(G.shape), x[G.size :].reshape(G.shape)
    return v_row, v_col, (G * (v_row - v_col)).sum(axis=0)
"""
    report = grade(2, student(tmp_path, "sink", src))
    lost = [r.case for r in report.rows if r.case.split()[0] != "nonideality_factor"]
    _check_mistake(report, lost, ["sink"])
    assert "R_sink = 0" in _failed(report)["transfer_matrix 8x8 default resistances"]


def test_nodal_matrix_with_the_wrong_sign(tmp_path):
    src = SOLUTION_2 + _SINK_NODES + """
def nodal_system(G, v, **res):
    A, b = _right_nodal(G, v, **res)
    return 2 * np.diag(np.diag(A)) - A, b
"""
    report = grade(2, student(tmp_path, "sign", src))
    failed = _failed(report)
    for case in ("nodal_system 2x2 worked example", "nodal_system 3x4 random"):
        assert "off-diagonal entries of A have the wrong sign" in failed[case], report.table()
    assert "nonideality_factor" not in failed


def test_crossbar_padding_with_zero(tmp_path):
    src = SOLUTION_2 + """
def padded_tile_transfer(block, size, g_off_s, **res):
    tile = np.zeros((size, size))
    tile[: block.shape[0], : block.shape[1]] = block
    return transfer_matrix(tile, **res)[: block.shape[0], : block.shape[1]]
"""
    _check_mistake(grade(2, student(tmp_path, "pad", src)), ["padded_tile_transfer"], ["padding with 0 S", "OFF"])


def test_crossbar_transposed_transfer_matrix(tmp_path):
    src = SOLUTION_2 + """
_right_transfer = transfer_matrix

def transfer_matrix(G, **res):
    return _right_transfer(G, **res).T.copy()
"""
    report = grade(2, student(tmp_path, "transposed", src))
    failed = _failed(report)
    assert set(failed) == {"transfer_matrix 2x2 worked example", "transfer_matrix 3x5 random",
                           "transfer_matrix 8x8 default resistances", "padded_tile_transfer"}, report.table()
    assert "expected shape (3, 5), got shape (5, 3)" in failed["transfer_matrix 3x5 random"]
    for case in ("transfer_matrix 2x2 worked example", "transfer_matrix 8x8 default resistances",
                 "padded_tile_transfer"):
        assert "T transposed" in failed[case], failed[case]


FGSM_CASES = ["fgsm", "fgsm clips to [0, 1]", "fgsm per-channel eps, float32", "fgsm on VGG8"]


def test_attack_mistakes(tmp_path):
    """Three typical mistakes, graded together in one batch: each loses exactly its cases."""
    from nxbar.grading import grade_many

    sign = SOLUTION_3 + """
def fgsm(model, x, y, eps):
    eps = np.asarray(eps, dtype=x.dtype)
    return np.clip(x - eps * np.sign(model.loss_and_input_grad(x, y)[1]), 0, 1).astype(x.dtype)
"""
    clip = SOLUTION_3 + """
def fgsm(model, x, y, eps):
    eps = np.asarray(eps, dtype=x.dtype)
    return x + eps * np.sign(model.loss_and_input_grad(x, y)[1])
"""
    ball = SOLUTION_3 + """
def pgd(model, x, y, eps, *, steps=10, alpha=2 / 255, random_start=True, rng=None):
    eps, alpha = np.asarray(eps, dtype=x.dtype), np.asarray(alpha, dtype=x.dtype)
    x_adv = x.copy()
    if random_start:
        x_adv = _project(x + eps * rng.uniform(-1.0, 1.0, size=x.shape).astype(x.dtype), x, eps)
    for _ in range(steps):
        x_adv = np.clip(x_adv + alpha * np.sign(model.loss_and_input_grad(x_adv, y)[1]), 0, 1)
    return x_adv
"""
    reports = grade_many(3, [student(tmp_path, name, src) for name, src in
                             (("sign", sign), ("clip", clip), ("ball", ball))])
    _check_mistake(reports[0], FGSM_CASES, ["sign of the step is flipped"])
    _check_mistake(reports[1], ["fgsm clips to [0, 1]"], ["not clipped to the image box"])
    _check_mistake(reports[2], ["pgd", "pgd random start"], ["eps-ball"])
