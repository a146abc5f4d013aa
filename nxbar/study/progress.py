"""Progress over a run's cells: one line per finished cell, with the time so far and an ETA."""

from __future__ import annotations

import time


class Progress:
    """Progress over cells weighted by their cost (e.g. forward-plus-gradient passes over the images; 1 each when
    they cost about the same), with an ETA from the cost done so far. `echo(text)` prints a line."""

    def __init__(self, total_cost: float, echo):
        self.total, self.done, self.echo, self.t0 = total_cost, 0.0, echo, time.perf_counter()

    def step(self, cost: float, i: int, n: int, text: str) -> None:
        """Cell i of n, costing `cost`, has finished: "[i/n] text (time so far, ETA)"."""
        self.done += cost
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        self.echo(f"[{i}/{n}] {text} ({hms(elapsed)} so far, ETA {hms(eta)})")


def hms(seconds: float) -> str:
    """'1h05m' or '4m09s'."""
    h, rest = divmod(int(seconds), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"
