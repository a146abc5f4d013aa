"""Autograder of the course assignments in docs/assignments/ (`nxbar grade`).

core: cases, comparisons and the Report; assignment1/2/3: each assignment's cases; runner: grading a file in an
isolated child process (child.py) on hidden inputs; formats: the Reports as json, csv and Gradescope results.
"""

from nxbar.grading.core import Report, Row
from nxbar.grading.runner import Limits, grade, grade_many

__all__ = ["Limits", "Report", "Row", "grade", "grade_many"]
