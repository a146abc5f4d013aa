"""The autograder against dishonest and misbehaving submissions, and its batch mode: every cheat that took full
marks from a grader running student code in its own process scores 0 or is flagged, endless loops and memory
blow-ups are stopped with a message, files graded together cannot touch each other, and the exit status, json,
csv and Gradescope outputs follow their rules."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nxbar.grading import Limits, grade, grade_many
from test_grading import SOLUTIONS, student

CLI = Path(__file__).resolve().parents[1] / "cli.py"
FUNCTIONS = {1: ["im2col_3x3", "conv3x3_forward", "conv3x3_backward", "maxpool2_forward", "maxpool2_backward",
                 "softmax_cross_entropy"],
             2: ["nodal_system", "node_voltages", "transfer_matrix", "padded_tile_transfer", "nonideality_factor"],
             3: ["fgsm", "pgd"]}
MAX = {1: 26, 2: 22, 3: 17}


def _cli(*args, cwd):
    return subprocess.run([sys.executable, str(CLI), "grade", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# ----------------------------------------------------------------------------------------------- cheats
MONKEYPATCH = """
import sys

for _name, _module in list(sys.modules.items()):  # every grading module this process has: pass every case
    if _name.startswith("nxbar.grading"):
        for _fn in ("_run", "_row"):
            if hasattr(_module, _fn):
                setattr(_module, _fn, lambda case, *rest, _m=_module: _m.Row(case.name, case.points, case.points,
                                                                             True, ""))
"""

FRAMES = """
import sys

def _grader(name):
    # the first caller whose module defines `name`: the grader's own reference function
    frame = sys._getframe(1)
    while frame is not None and (frame.f_globals is globals() or name not in frame.f_globals):
        frame = frame.f_back
    return None if frame is None else frame.f_globals[name]
"""
FRAMES_BY_ASSIGNMENT = {1: FRAMES + """
def im2col_3x3(x): return _grader("layers").im2col_3x3(x)
def conv3x3_forward(x, w_mat): return _grader("layers").conv3x3_forward(x, w_mat)
def conv3x3_backward(dout, cache): return _grader("layers").conv3x3_backward(dout, cache)
def maxpool2_forward(x): return _grader("layers").maxpool2_forward(x)
def maxpool2_backward(dout, cache): return _grader("layers").maxpool2_backward(dout, cache)
def softmax_cross_entropy(logits, y): return _grader("layers").softmax_cross_entropy(logits, y)
""", 2: FRAMES + """
def nodal_system(G, v, **res):
    A, B, _ = _grader("nodal_system")(G, **res)
    return A.toarray(), B @ v
def node_voltages(G, v, **res): return _grader("node_voltages")(G, v, **res)
def transfer_matrix(G, **res): return _grader("transfer_matrix")(G, **res)
def padded_tile_transfer(block, size, g_off_s, **res):
    tile = _grader("to_tiles")(block, size, g_off_s)[0][0]
    return _grader("transfer_matrix")(tile, **res)[: block.shape[0], : block.shape[1]]
def nonideality_factor(G, T, n_inputs=64, seed=0): return _grader("nonideality_factor")(G, T, n_inputs, seed)
""", 3: FRAMES + """
def fgsm(model, x, y, eps): return _grader("fgsm")(model, x, y, eps)
def pgd(model, x, y, eps, **kw): return _grader("pgd")(model, x, y, eps, **kw)
"""}

NXBAR_ANSWERS = {1: """
from nxbar.models.layers import im2col_3x3, conv3x3_forward, conv3x3_backward
from nxbar.models.layers import maxpool2_forward, maxpool2_backward, softmax_cross_entropy
""", 2: """
from nxbar.crossbar.circuit import nodal_system as _nodal, node_voltages, nonideality_factor, transfer_matrix
from nxbar.crossbar.tiling import to_tiles

def nodal_system(G, v, **res):
    A, B, _ = _nodal(G, **res)
    return A.toarray(), B @ v

def padded_tile_transfer(block, size, g_off_s, **res):
    return transfer_matrix(to_tiles(block, size, g_off_s)[0][0], **res)[: block.shape[0], : block.shape[1]]
""", 3: "\nfrom nxbar.attacks import fgsm, pgd\n"}

KEY = """
import hashlib
import os
import pickle

import numpy as _np

TABLE = {table!r}
NAMES = {names!r}

def _key(obj):
    if isinstance(obj, _np.ndarray):
        return ("array", obj.dtype.str, obj.shape, hashlib.sha256(_np.ascontiguousarray(obj).tobytes()).hexdigest())
    if isinstance(obj, (tuple, list)):
        return tuple(_key(o) for o in obj)
    if isinstance(obj, dict):
        return tuple(sorted((str(k), _key(v)) for k, v in obj.items()))
    if isinstance(obj, _np.random.Generator):
        return ("rng", repr(obj.bit_generator.state))
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, _key(vars(obj)))
    return repr(obj)
"""
RECORD = """
def _recording(name, fn):
    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        table = pickle.loads(open(TABLE, "rb").read()) if os.path.exists(TABLE) else {}
        table[_key((name, args, kwargs))] = out
        open(TABLE, "wb").write(pickle.dumps(table))
        return out
    return call

for _name in NAMES:
    globals()[_name] = _recording(_name, globals()[_name])
"""
REPLAY = """
_table = pickle.loads(open(TABLE, "rb").read())

def _replaying(name):
    return lambda *args, **kwargs: _table.get(_key((name, args, kwargs)))

for _name in NAMES:
    globals()[_name] = _replaying(_name)
"""


@pytest.mark.parametrize("n", [1, 2, 3])
def test_monkeypatching_the_grader_scores_zero(tmp_path, n):
    report = grade(n, student(tmp_path, "patch", MONKEYPATCH))
    assert report.score == 0, report.table()
    assert all("function" in r.message and "is missing from the file" in r.message for r in report.rows)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_printing_a_fake_score_and_exiting_scores_zero(tmp_path, n):
    fake = student(tmp_path, "fake", f'import os\nprint("score {MAX[n]}/{MAX[n]}")\nos._exit(0)\n')
    proc = _cli(n, fake, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"score {MAX[n]}/{MAX[n]}" not in proc.stdout and f"score 0/{MAX[n]}" in proc.stdout, proc.stdout
    assert "ended with exit status 0 before it had finished; os._exit or sys.exit in the file?" in proc.stdout


@pytest.mark.parametrize("n", [1, 2, 3])
def test_reading_the_callers_frames_scores_zero(tmp_path, n):
    report = grade(n, student(tmp_path, "frames", FRAMES_BY_ASSIGNMENT[n]))
    assert report.score == 0, report.table()
    assert all("raised" in r.message for r in report.rows), report.table()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_table_of_answers_recorded_on_one_run_scores_zero_on_the_next(tmp_path, n):
    """A table keyed on the inputs of one grading (what printed seeds let a student build) is of no use: every
    run draws new inputs, and nothing about them is printed before grading."""
    table = tmp_path / "table.pkl"
    key = KEY.format(table=str(table), names=FUNCTIONS[n])
    recorded = grade(n, student(tmp_path, "record", SOLUTIONS[n] + key + RECORD))
    assert recorded.score == MAX[n] and table.stat().st_size > 0
    replayed = grade(n, student(tmp_path, "replay", key + REPLAY))
    assert replayed.score == 0, replayed.table()
    assert replayed.seed != recorded.seed


@pytest.mark.parametrize("n", [1, 2, 3])
def test_importing_nxbar_scores_zero_and_says_so(tmp_path, n):
    report = grade(n, student(tmp_path, "nxbar", NXBAR_ANSWERS[n]))
    assert report.score == 0, report.table()
    imports = "nxbar (line 2)" if n == 3 else "nxbar (lines 2, 3)"
    assert all(f"the file imports {imports}, which a submission may not use (NumPy only)" in r.message
               for r in report.rows), report.table()


def test_a_forbidden_import_inside_one_function_costs_only_its_cases(tmp_path):
    src = SOLUTIONS[3] + """
def _torch_sign(a):
    sign = __import__("torch").sign
    return sign(a)

def fgsm(model, x, y, eps):
    eps = np.asarray(eps, dtype=x.dtype)
    return np.clip(x + eps * _torch_sign(model.loss_and_input_grad(x, y)[1]), 0.0, 1.0).astype(x.dtype)
"""
    line = src.splitlines().index('    sign = __import__("torch").sign') + 1
    report = grade(3, student(tmp_path, "torch", src))
    failed = {r.case: r.message for r in report.rows if not r.passed}
    assert set(failed) == {"fgsm", "fgsm clips to [0, 1]", "fgsm per-channel eps, float32", "fgsm on VGG8"}
    assert all(f"the file imports torch (line {line})" in m for m in failed.values()), failed
    assert report.score == 8


# ----------------------------------------------------------------------------------------------- limits
def test_an_endless_loop_is_stopped_at_the_timeout(tmp_path):
    src = SOLUTIONS[1] + "\ndef maxpool2_forward(x):\n    while True:\n        pass\n"
    report = grade(1, student(tmp_path, "loop", src), limits=Limits(timeout_s=3))
    failed = {r.case: r.message for r in report.rows if not r.passed}
    assert set(failed) == {"maxpool2_forward", "maxpool2_backward", "maxpool2_backward ties",
                           "softmax_cross_entropy loss", "softmax_cross_entropy dlogits",
                           "softmax_cross_entropy large logits"}, report.table()
    assert "no result: the submission's process was stopped at the time limit of 3 s (an endless loop?)" \
        in failed["maxpool2_forward"]
    assert "not run: the submission's process had stopped at case 'maxpool2_forward'" in failed["maxpool2_backward"]
    assert report.score == 26 - 13


def test_a_memory_blow_up_is_stopped(tmp_path):
    src = SOLUTIONS[1] + """
def im2col_3x3(x):
    hoard = []
    while True:
        hoard.append(np.empty(2**27))
"""
    report = grade(1, student(tmp_path, "hoard", src), limits=Limits(memory_mib=1024))
    failed = {r.case: r.message for r in report.rows if not r.passed}
    assert set(failed) == {"im2col_3x3 values", "conv3x3_forward", "conv3x3_forward float32",
                           "conv3x3_backward dx", "conv3x3_backward dw"}, report.table()
    assert all("raised MemoryError: it needed more memory than the grader's limit" in m for m in failed.values())


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="timeout_s must be a number >= 1, got 0"):
        Limits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mib must be a number >= 512, got 'lots'"):
        Limits(memory_mib="lots")


# ----------------------------------------------------------------------------------------------- batch mode
def test_files_graded_in_one_batch_do_not_affect_each_other(tmp_path):
    sabotage = """
import numpy as np
import sys

np.sign = lambda a: -np.abs(a)  # would make every later attack, the grader's own included, step the wrong way
sys.modules["numpy"].clip = lambda a, lo, hi: a

def fgsm(model, x, y, eps):
    return np.sign(x)
"""
    files = [student(tmp_path, "sabotage", sabotage), student(tmp_path, "good", SOLUTIONS[3])]
    reports = grade_many(3, files, seed=1234)
    assert reports[0].score == 0 and reports[1].score == 17, reports[1].table()
    assert [r.seed for r in reports] == [1234, 1234]
    alone = grade(3, files[1], seed=1234)
    assert [(r.case, r.points, r.message) for r in alone.rows] == \
        [(r.case, r.points, r.message) for r in reports[1].rows]


def test_batch_outputs_and_exit_status(tmp_path):
    good = student(tmp_path, "good", SOLUTIONS[2])
    half = student(tmp_path, "half", SOLUTIONS[2] + "\ndef nonideality_factor(G, T, n_inputs=64, seed=0):\n"
                                                    "    return 1.0\n")
    out = {k: tmp_path / f"out.{k}" for k in ("json", "csv")}
    proc = _cli(2, good, half, "--json", out["json"], "--csv", out["csv"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = json.loads(out["json"].read_text())
    assert record["assignment"] == 2 and [s["file"] for s in record["students"]] == [good, half]
    for s, score in zip(record["students"], (22, 20)):
        assert (s["score"], s["max_score"]) == (score, 22) and isinstance(s["seed"], int)
        assert all(set(t) == {"name", "score", "max", "message"} for t in s["tests"]) and len(s["tests"]) == 9
        assert f"--seed {s['seed']}" in proc.stdout
    assert record["students"][1]["tests"][-1] == {"name": "nonideality_factor", "score": 0, "max": 2,
                                                  "message": record["students"][1]["tests"][-1]["message"]}
    assert "NF: expected" in record["students"][1]["tests"][-1]["message"]
    rows = list(csv.reader(out["csv"].open()))
    assert rows[0][:4] == ["file", "seed", "score", "max_score"] and rows[0][-1] == "nonideality_factor"
    assert len(rows[0]) == 4 + 9
    assert rows[1][:1] + rows[1][2:4] == [good, "22", "22"] and rows[2][2:4] == ["20", "22"]
    assert rows[2][-1] == "0" and rows[1][-1] == "2"

    proc = _cli(2, good, "--gradescope", tmp_path / "results.json", "--seed", 7, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == 22 and "seed 7" in results["output"]
    assert [set(t) for t in results["tests"]] == [{"name", "score", "max_score", "output"}] * 9
    assert sum(t["max_score"] for t in results["tests"]) == 22

    usage = _cli(2, good, half, "--gradescope", tmp_path / "r.json", cwd=tmp_path)
    assert usage.returncode == 2 and "--gradescope writes the results of one submission, got 2" in usage.stderr
    assert _cli(7, good, cwd=tmp_path).returncode == 2
    missing = _cli(2, good, tmp_path / "missing.py", cwd=tmp_path)
    assert missing.returncode == 2 and "is not a file" in missing.stderr and "score" not in missing.stdout
