"""Files that a crash (a killed run, a full disk, a power cut) leaves usable.

A file that is rewritten whole (a cache entry, a run's json record, a partial report) is written to a temporary
file in the same folder, flushed to disk and renamed over the old one: a reader sees the old file or the new one,
never half of one. A CSV that grows by appended rows can still be cut inside its last row; `drop_torn_row` cuts
it back to its last complete row. A long run keeps its finished parts in a `Partial` file and resumes from them.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write_fn: Callable[[BinaryIO], object]) -> None:
    """Replace `path` by what write_fn(binary file) writes, all at once.

    The data goes to a new temporary file next to `path`, is synced to disk, and only then renamed to `path`; if
    anything fails on the way the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # a unique name: concurrent writers never meet
    try:
        with open(tmp, "xb") as f:  # a plain new file, so it gets the usual permissions
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` by `text` (UTF-8), all at once (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def drop_torn_row(path: str | Path) -> str | None:
    """Cut the CSV file `path` back to the end of its last complete line when its last row is torn; return the
    dropped text, or None when the file ends with a complete row (or is empty).

    A row is appended with its line end in one write, so a last line without a line end, or with another number
    of fields than the header, is one that a stopped run left unfinished (or one that was appended to such a
    line). A file whose only line is a torn header is emptied.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        return None
    start = data.rfind(b"\n", 0, len(data) - 1) + 1  # where the last line begins
    last = data[start:]
    if last.endswith(b"\n") and (start == 0 or _n_fields(last) == _n_fields(data[:data.index(b"\n")])):
        return None
    with open(path, "r+b") as f:
        f.truncate(start)
    return last.decode("utf-8", "replace")


def _n_fields(line: bytes) -> int:
    """Number of fields of one CSV line."""
    return len(next(csv.reader([line.decode("utf-8", "replace")])))


@dataclass
class Partial:
    """The finished parts of a long run, kept in `path` (json: {run, part, wall_time_s}) so that the same run,
    stopped and started again, resumes from them. `run` holds everything the numbers depend on (json values);
    a file of another run is refused. Wall time adds up over the stopped runs."""

    path: Path
    run: dict
    earlier_s: float = 0.0
    t0: float = field(default_factory=time.perf_counter)

    def load(self) -> dict | None:
        """The stored part of this run, or None when there is no file; a ValueError for another run's file."""
        if not self.path.exists():
            return None
        stored = json.loads(self.path.read_text())
        if stored["run"] != self.run:
            differ = sorted(k for k in self.run if stored["run"].get(k) != self.run[k])
            raise ValueError(f"{self.path} holds a stopped run with other {', '.join(differ)}; delete it to start "
                             f"again, or rerun with the same options to resume it")
        self.earlier_s = stored["wall_time_s"]
        return stored["part"]

    def elapsed_s(self) -> float:
        """This run's time plus the stopped runs' it resumes."""
        return self.earlier_s + time.perf_counter() - self.t0

    def keep(self, part: dict) -> None:
        """Store `part` (all finished so far); a kill leaves the old or the new file, never half of one."""
        atomic_write_text(self.path, json.dumps({"run": self.run, "part": part, "wall_time_s": self.elapsed_s()}))


class CsvLog:
    """A CSV file that grows by one complete row per finished piece of work, so that a stopped run resumes from
    the rows already there. Opening it cuts a torn last row (`drop_torn_row`; `on_torn(text)` is told) and
    writes the header to a new or empty file; `rows` are the complete rows read back (strings); `append(row)`
    writes one row (missing columns empty) and flushes it. A file with another header is refused."""

    def __init__(self, path: str | Path, columns: tuple[str, ...], on_torn: Callable[[str], None] | None = None):
        self.path, self.columns = Path(path), tuple(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and (torn := drop_torn_row(self.path)) is not None and on_torn is not None:
            on_torn(torn)
        self.rows: list[dict] = []
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != self.columns:
                    raise ValueError(f"{self.path} has the columns {', '.join(reader.fieldnames or ())}, not "
                                     f"{', '.join(self.columns)}; use another out folder or remove the file")
                self.rows = list(reader)
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        if self._file.tell() == 0:
            self._writer.writeheader()
            self._file.flush()

    def append(self, row: dict) -> dict:
        """Write `row` (values as given; str() by csv) at the end of the file, flushed; return it as read back."""
        row = {c: row.get(c, "") for c in self.columns}
        self._writer.writerow(row)
        self._file.flush()
        stored = {c: "" if v is None else str(v) for c, v in row.items()}
        self.rows.append(stored)
        return stored

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *_) -> None:
        self.close()
