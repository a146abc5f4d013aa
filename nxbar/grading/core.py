"""What a graded case is, how a student's output is compared with the expected one, and the graded result.

A `Case` draws its hidden inputs from a generator the grader seeds afresh for every run (`Case.prepare`), and
returns a `Trial`: the input arrays, the calls of the student's functions that the isolated child process
makes on them (`Call`), the names of the results the child sends back, and `check`, which compares those
results, in the grader's process, with the expected values computed there. The expected values never leave
the grader's process.

Comparison: |got - expected| <= atol + rtol |expected| elementwise, tolerances stated in each message.
Where a wrong answer matches a known typical mistake exactly, the message names it ("symptom: ...").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One graded case: its name, points earned (all or nothing), points possible, pass flag, message."""

    case: str
    points: int
    max_points: int
    passed: bool
    message: str


@dataclass(frozen=True)
class Report:
    """The graded cases of one assignment for one student file; `seed` drew its hidden inputs."""

    assignment: int
    student_file: str
    seed: int
    rows: tuple[Row, ...]

    @property
    def score(self) -> int:
        return sum(r.points for r in self.rows)

    @property
    def max_score(self) -> int:
        return sum(r.max_points for r in self.rows)

    def table(self) -> str:
        """Plain-text score table: one line per case, failure messages indented below it, total and seed last."""
        width = max(len(r.case) for r in self.rows)
        lines = [f"assignment {self.assignment}: {self.student_file}", ""]
        for r in self.rows:
            mark = "ok  " if r.passed else "FAIL"
            lines.append(f"{mark} {r.case:<{width}}  {r.points:>2}/{r.max_points}")
            if not r.passed:
                lines.append(f"       {r.message}")
        lines += ["", f"score {self.score}/{self.max_score}",
                  f"inputs drawn from seed {self.seed} (the same inputs again: --seed {self.seed})"]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------
class CaseFailed(Exception):
    """A case's verdict: the student's result is wrong (the message says how)."""


@dataclass(frozen=True)
class Rng:
    """An argument the child passes as `np.random.default_rng(seed)`."""

    seed: int


@dataclass(frozen=True)
class Call:
    """One call the child makes: `fn(*args, **kwargs)` of the student's module.

    A str argument names an input array, a model or an earlier call's result; numbers are passed as they are;
    `Rng(seed)` is a fresh seeded generator. `returns` names the result, or (a tuple of names) requires a tuple
    of that many values and names each."""

    fn: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    returns: str | tuple[str, ...] = "result"


@dataclass(frozen=True)
class Trial:
    """One case's hidden inputs (arrays, and models given as a kind plus named fields, see child.build_model),
    the calls on them, the results to send back, and `check(outputs)`, raising CaseFailed when they are wrong."""

    arrays: dict
    calls: tuple[Call, ...]
    outputs: tuple[str, ...]
    check: Callable
    models: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """`prepare(rng)` draws the hidden inputs and returns the Trial; `inputs` describes them for messages."""

    name: str
    points: int
    inputs: str
    prepare: Callable


@dataclass(frozen=True)
class Output:
    """A result the child sent back: an array, a number (float), or only the name of its type (value None)."""

    type_name: str
    value: np.ndarray | float | None


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------
def check_array(what: str, got: Output, expected: np.ndarray, rtol: float, atol: float, symptoms=(),
                nan_hint: str = ""):
    """Fail unless `got` is an ndarray of expected's shape and dtype, finite and close to `expected`.

    symptoms: (text, alternative) pairs, `alternative()` the array a known mistake produces; the first that
    matches `got` is named in the message.
    """
    if not isinstance(got.value, np.ndarray):
        raise CaseFailed(f"{what}: expected a numpy array, got {got.type_name}")
    got = got.value
    if got.shape != expected.shape:
        raise CaseFailed(f"{what}: expected shape {expected.shape}, got shape {got.shape}")
    if got.dtype != expected.dtype:
        raise CaseFailed(f"{what}: expected dtype {expected.dtype} (the input's), got dtype {got.dtype}")
    finite = np.isfinite(got)
    if not finite.all():
        idx = tuple(int(k) for k in np.argwhere(~finite)[0])
        raise CaseFailed(
            f"{what}: {int((~finite).sum())} NaN/inf entries, first at index {idx}: expected {expected[idx]:.6g}, "
            f"got {got[idx]}" + (f"; {nan_hint}" if nan_hint else "")
        )
    excess = np.abs(got.astype(np.float64) - expected) - (atol + rtol * np.abs(expected.astype(np.float64)))
    if (excess > 0).any():
        idx = tuple(int(k) for k in np.unravel_index(np.argmax(excess), excess.shape))
        msg = (
            f"{what}: {int((excess > 0).sum())} of {excess.size} entries wrong; worst at index {idx}: "
            f"expected {expected[idx]:.6g}, got {got[idx]:.6g} (tolerance {atol:g} + {rtol:g} |expected|)"
        )
        for text, alternative in symptoms:
            alt = alternative()
            if alt.shape == got.shape and np.allclose(got, alt, rtol=rtol, atol=atol):
                msg += f"; symptom: {text}"
                break
        raise CaseFailed(msg)


def check_scalar(what: str, got: Output, expected: float, rtol: float, nan_hint: str = "", symptoms=()):
    """Fail unless `got` is a finite number (or a one-element array) within rtol of `expected`."""
    if isinstance(got.value, np.ndarray) and got.value.size == 1 and got.value.dtype.kind in "biuf":
        value = float(got.value.reshape(()))
    elif isinstance(got.value, float):
        value = got.value
    else:
        raise CaseFailed(f"{what}: expected a number, got {got.type_name}")
    if not np.isfinite(value):
        raise CaseFailed(f"{what}: expected {expected:.10g}, got {value}" + (f"; {nan_hint}" if nan_hint else ""))
    if abs(value - expected) > rtol * abs(expected):
        msg = f"{what}: expected {expected:.10g}, got {value:.10g} (tolerance {rtol:g} relative)"
        for text, alternative in symptoms:
            if abs(value - alternative()) <= rtol * abs(expected):
                msg += f"; symptom: {text}"
                break
        raise CaseFailed(msg)
