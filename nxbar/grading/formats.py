"""Graded Reports written for others: json (every student, every case), csv (a gradebook: one row per student) and
Gradescope's autograder results.json (one submission)."""

from __future__ import annotations

import csv
import io
import json

from nxbar.grading.core import Report


def _tests(report: Report, score: str, max_score: str, message: str) -> list[dict]:
    return [{"name": r.case, score: r.points, max_score: r.max_points, message: r.message} for r in report.rows]


def to_json(reports: list[Report]) -> str:
    """{"assignment", "students": [{"file", "seed", "score", "max_score", "tests": [{"name", "score", "max",
    "message"}]}]}, `message` empty for a passed test."""
    return json.dumps({
        "assignment": reports[0].assignment,
        "students": [{"file": r.student_file, "seed": r.seed, "score": r.score, "max_score": r.max_score,
                      "tests": _tests(r, "score", "max", "message")} for r in reports],
    }, indent=2) + "\n"


def to_csv(reports: list[Report]) -> str:
    """Header: file, seed, score, max_score, then one column per case (its points); one row per student."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "seed", "score", "max_score", *(r.case for r in reports[0].rows)])
    for report in reports:
        writer.writerow([report.student_file, report.seed, report.score, report.max_score,
                         *(r.points for r in report.rows)])
    return out.getvalue()


def to_gradescope(report: Report) -> str:
    """Gradescope's results.json of one submission: {"score", "output", "tests": [{"name", "score", "max_score",
    "output"}]}, the seed of the hidden inputs in the top-level output."""
    return json.dumps({
        "score": report.score,
        "output": f"assignment {report.assignment}: score {report.score}/{report.max_score}; inputs drawn from "
                  f"seed {report.seed}",
        "tests": _tests(report, "score", "max_score", "output"),
    }, indent=2) + "\n"
