"""Grading a submission: hidden inputs drawn here, the student's code run in an isolated child, results checked here.

`grade(assignment, student_file)` draws a fresh seed (or takes `seed`, to give an instructor the same inputs
again), has every case draw its inputs and compute its expected values in this process, and starts one child
process (nxbar/grading/child.py) for the submission: `python -I` in a fresh temporary folder, with no
environment beyond a few thread settings, and resource limits on CPU time, memory, file size and processes,
under a wall-clock timeout. The child gets only the inputs and the calls to make, and writes back the student's
results as arrays, which are validated (type, shape, dtype, finite) and compared here. Nothing the child prints
and not its exit status counts towards the score.

Before running it, the file's syntax tree is searched for imports of the modules in child.FORBIDDEN (nxbar and
the deep-learning frameworks): a case whose functions reach such an import, or every case when it happens
outside the functions, scores 0 with a message saying so. The child refuses those imports as well.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nxbar.grading import assignment1, assignment2, assignment3, child
from nxbar.grading.core import Call, CaseFailed, Output, Report, Rng, Row

ASSIGNMENTS = {1: assignment1.CASES, 2: assignment2.CASES, 3: assignment3.CASES}
SEED_LIMIT = 2**63
NEW_TASKS = 64  # processes or threads a child may start: room for its libraries' threads, not for a fork bomb


@dataclass(frozen=True)
class Limits:
    """What one submission's child process may use: wall-clock seconds (CPU seconds one more, so that a busy
    loop meets the wall clock first), address space and largest file written, in MiB, and NEW_TASKS more
    processes or threads than its user runs when it starts (enforced by the system for users other than root).

    These limits and a process of its own keep a submission from hanging, exhausting or fooling the grader; they
    are no sandbox for files and network: grade untrusted code as a user that may touch nothing else."""

    timeout_s: float = 60.0
    memory_mib: int = 4096
    file_mib: int = 64

    def __post_init__(self):
        for name, low in (("timeout_s", 1.0), ("memory_mib", 512), ("file_mib", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise ValueError(f"{name} must be a number >= {low:g}, got {value!r}")

    @property
    def cpu_s(self) -> int:
        return int(np.ceil(self.timeout_s)) + 1

    def apply(self, tasks: int) -> None:
        """Set the limits on the calling process (the child, between fork and exec); its user runs `tasks`."""
        for limit, value in ((resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s + 1)),
                             (resource.RLIMIT_AS, (self.memory_mib << 20,) * 2),
                             (resource.RLIMIT_FSIZE, (self.file_mib << 20,) * 2),
                             (resource.RLIMIT_NPROC, (tasks + NEW_TASKS,) * 2),
                             (resource.RLIMIT_CORE, (0, 0))):
            resource.setrlimit(limit, value)


def _tasks_of_user() -> int:
    """Processes and threads of this process's user now (Linux /proc; what RLIMIT_NPROC counts)."""
    uid, total = os.getuid(), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:  # the process ended meanwhile
            continue
        if int(fields["Uid"].split()[0]) == uid:
            total += int(fields["Threads"])
    return total


# ----------------------------------------------------------------------------------------------
# Honesty: forbidden imports in the syntax tree
# ----------------------------------------------------------------------------------------------
def _forbidden(node: ast.AST) -> list[str]:
    """The FORBIDDEN modules that `node` imports: import statements, __import__("x"), importlib.import_module("x")."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module] if node.level == 0 and node.module else []
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and (
            (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
        names = [node.args[0].value] if isinstance(node.args[0].value, str) else []
    else:
        names = []
    return [name.partition(".")[0] for name in names if name.partition(".")[0] in child.FORBIDDEN]


def forbidden_imports(tree: ast.Module) -> dict[str, str]:
    """Which code uses a FORBIDDEN module: {"": what} when code outside the top-level functions imports one,
    else {function: what} for each top-level function that imports one or uses such a function (by name);
    `what` reads e.g. "nxbar (lines 2, 3), torch (line 9)"."""
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    lines: dict[str, dict[str, list[int]]] = {}
    for stmt in tree.body:
        owner = stmt.name if stmt in functions.values() else ""
        for node in ast.walk(stmt):
            for name in _forbidden(node):
                lines.setdefault(owner, {}).setdefault(name, []).append(node.lineno)
    found = {owner: ", ".join(f"{name} (line{'s' * (len(at) > 1)} {', '.join(map(str, sorted(set(at))))})"
                              for name, at in sorted(modules.items())) for owner, modules in lines.items()}
    if "" in found:
        return {"": found[""]}
    uses = {name: {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in functions}
            for name, fn in functions.items()}
    grown = True
    while grown:
        grown = False
        for name, used in uses.items():
            reached = next((found[u] for u in sorted(used) if u in found), None)
            if name not in found and reached is not None:
                found[name], grown = reached, True
    return found


# ----------------------------------------------------------------------------------------------
# The child process
# ----------------------------------------------------------------------------------------------
def _argument(value):
    if isinstance(value, str):
        return {"ref": value}
    if isinstance(value, Rng):
        return {"rng": value.seed}
    return {"value": value.item() if isinstance(value, np.generic) else value}


def _call_json(call: Call) -> dict:
    return {"fn": call.fn, "args": [_argument(a) for a in call.args],
            "kwargs": {k: _argument(v) for k, v in call.kwargs.items()},
            "returns": call.returns if isinstance(call.returns, str) else list(call.returns)}


def _stop_reason(returncode: int | None, limits: Limits, stderr: Path) -> str:
    """Why the child ended before writing every result, as the end of 'the submission's process ...'."""
    if returncode is None:
        return f"was stopped at the time limit of {limits.timeout_s:g} s (an endless loop?)"
    if returncode == -signal.SIGXCPU:
        return f"was stopped at the CPU-time limit of {limits.cpu_s} s (an endless loop?)"
    if returncode < 0:
        return f"was killed by signal {signal.Signals(-returncode).name}"
    lines = stderr.read_text(errors="replace").strip().splitlines()
    last = f" ({lines[-1][:child.MESSAGE_CHARS]})" if lines else ""
    return f"ended with exit status {returncode} before it had finished{last}; os._exit or sys.exit in the file?"


def _read_json(path: Path) -> dict | None:
    """A json object the child wrote, or None when it is missing or not a json object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _outputs(record: dict, npz: Path, names) -> dict[str, Output]:
    """A case's results as the child reported them; ValueError when they are malformed."""
    reported = record.get("outputs")
    if not isinstance(reported, dict) or not all(isinstance(reported.get(n), dict) for n in names):
        raise ValueError("outputs missing")
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in names if name in data.files}
    outputs = {}
    for name in names:
        kind, type_name = reported[name].get("kind"), str(reported[name].get("type"))[:60]
        value = arrays.get(name)
        if kind == "array" and value is not None and value.dtype.kind in "biufc":
            outputs[name] = Output(type_name, value)
        elif kind == "number" and value is not None and value.shape == () and value.dtype == np.float64:
            outputs[name] = Output(type_name, float(value))
        elif kind == "other":
            outputs[name] = Output(type_name, None)
        else:
            raise ValueError(f"output {name} malformed")
    return outputs


def _run_child(student_file: Path, trials: list, limits: Limits):
    """Run the submission on the trials in a child; returns (the import error or None, [record or None per
    case], how the child ended, for the cases it left without a record). A record is the child's error text
    (str) or the outputs (dict)."""
    with tempfile.TemporaryDirectory(prefix="nxbar-grade-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        (tmp / "results").mkdir()
        shutil.copyfile(student_file, tmp / "submission.py")
        np.savez(tmp / "inputs.npz", **{f"{k}.{name}": a for k, t in enumerate(trials) for name, a in t.arrays.items()})
        job = {"student": str(tmp / "submission.py"), "inputs": str(tmp / "inputs.npz"),
               "results": str(tmp / "results"),
               "cases": [{"calls": [_call_json(c) for c in t.calls], "outputs": list(t.outputs), "models": t.models}
                         for t in trials]}
        (tmp / "job.json").write_text(json.dumps(job))
        env = {"PATH": os.defpath, "HOME": str(tmp), "TMPDIR": str(tmp), "LC_ALL": "C.UTF-8",
               **dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"),
                               "1")}
        with open(tmp / "stderr.txt", "wb") as stderr:
            proc = subprocess.Popen([sys.executable, "-I", child.__file__, str(tmp / "job.json")], cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                    preexec_fn=functools.partial(limits.apply, _tasks_of_user()),
                                    start_new_session=True)
            try:
                returncode = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it left running
            except ProcessLookupError:
                pass
            proc.wait()
        imported = _read_json(tmp / "results" / "import.json")
        reason = _stop_reason(returncode, limits, tmp / "stderr.txt")
        if imported is None:
            return f"its process {reason}", [None] * len(trials), reason
        if imported.get("error") is not None:
            return str(imported["error"])[: child.MESSAGE_CHARS], [None] * len(trials), reason
        records = []
        for k, trial in enumerate(trials):
            record = _read_json(tmp / "results" / f"{k}.json")
            if record is not None and record.get("error") is not None:
                record = str(record["error"])[: child.MESSAGE_CHARS]
            elif record is not None:
                try:
                    record = _outputs(record, tmp / "results" / f"{k}.npz", trial.outputs)
                except Exception:  # noqa: BLE001 -- whatever the child left there, unreadable results fail the case
                    record = "the results written for this case could not be read"
            records.append(record)
        return None, records, reason


# ----------------------------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------------------------
def _honesty_message(what: str) -> str:
    return (f"the file imports {what}, which a submission may not use (NumPy only): "
            "every case that runs that code scores 0")


def _row(case, trial, record, flagged: str | None) -> Row:
    if flagged is not None:
        return Row(case.name, 0, case.points, False, _honesty_message(flagged))
    if isinstance(record, str):
        return Row(case.name, 0, case.points, False, f"input {case.inputs}: {record}")
    try:
        trial.check(record)
    except CaseFailed as fail:
        return Row(case.name, 0, case.points, False, f"input {case.inputs}: {fail}")
    return Row(case.name, case.points, case.points, True, "")


def _check_seed(seed) -> int:
    if seed is None:
        return secrets.randbelow(SEED_LIMIT)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def _check_file(student_file) -> Path:
    path = Path(student_file)
    if not path.is_file():
        raise ValueError(f"student_file {str(student_file)!r} is not a file")
    return path


def _all_failed(assignment: int, path: Path, seed: int, import_error: str) -> Report:
    msg = f"the file could not be imported: {import_error}"
    return Report(assignment, str(path), seed, tuple(Row(c.name, 0, c.points, False, msg)
                                                     for c in ASSIGNMENTS[assignment]))


def _grade(assignment: int, path: Path, seed: int, limits: Limits) -> Report:
    cases = ASSIGNMENTS[assignment]
    try:
        tree = ast.parse(path.read_bytes(), filename=path.name)
    except (SyntaxError, ValueError) as err:
        return _all_failed(assignment, path, seed, f"{type(err).__name__}: {err}")
    uses = forbidden_imports(tree)
    trials = [case.prepare(np.random.default_rng([seed, k])) for k, case in enumerate(cases)]
    import_error, records, reason = _run_child(path, trials, limits)
    if import_error is not None and "" not in uses:
        return _all_failed(assignment, path, seed, import_error)
    rows, stopped_at = [], None
    for case, trial, record in zip(cases, trials, records):
        if record is None and import_error is None:
            record = f"no result: the submission's process {reason}" if stopped_at is None else \
                f"not run: the submission's process had stopped at case '{stopped_at}'"
            stopped_at = stopped_at or case.name
        flagged = uses.get("") or next((uses[c.fn] for c in trial.calls if c.fn in uses), None)
        rows.append(_row(case, trial, record, flagged))
    return Report(assignment, str(path), seed, tuple(rows))


def grade_many(assignment: int, student_files, *, seed: int | None = None, limits: Limits = Limits()) -> list[Report]:
    """Grade each file (a .py file) on assignment 1, 2 or 3, each in an isolated child process of its own;
    returns one Report per file, of every case. Each file gets inputs of a fresh seed, or all of `seed` when
    given (the same inputs again); the Report records it. Every argument is checked before anything is graded."""
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment!r}")
    paths = [_check_file(f) for f in student_files]
    if not paths:
        raise ValueError("student_files must name at least one file, got none")
    seed = None if seed is None else _check_seed(seed)
    return [_grade(assignment, path, _check_seed(seed), limits) for path in paths]


def grade(assignment: int, student_file, *, seed: int | None = None, limits: Limits = Limits()) -> Report:
    """`grade_many` of one file: its Report."""
    return grade_many(assignment, [student_file], seed=seed, limits=limits)[0]
