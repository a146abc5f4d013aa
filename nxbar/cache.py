"""On-disk cache of crossbar-mapped weights and of reused adversarial inputs.

Directory: $NXBAR_CACHE_DIR if set, else ~/.cache/nxbar. One entry = two files, <kind>-<key>.npz
(float arrays, loaded with allow_pickle=False) and <kind>-<key>.json (a report). Kinds: "mapped" (the
effective weights and the per-layer report) and "adversarial" (the software model's PGD inputs that
`nxbar reproduce` shares between experiments). The key is a sha256 over everything the entry depends on
(`content_key`): for a mapped model the MVM weight arrays (name, dtype, shape, bytes) and the crossbar
configuration; always nxbar.__version__ and FORMAT_VERSION. Files are written whole or not at all
(nxbar.files.atomic_write), so a concurrent reader never sees half a file. An entry that cannot be read, or whose
arrays or report are not what the caller expects (a crash between its two files, a damaged disk, an older
nxbar), is a miss: the caller computes it again and the new entry replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import nxbar
from nxbar.files import atomic_write, atomic_write_text

FORMAT_VERSION = 1
KINDS = ("mapped", "adversarial")


def cache_dir() -> Path:
    """The cache directory: $NXBAR_CACHE_DIR, else ~/.cache/nxbar (not created here)."""
    env = os.environ.get("NXBAR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "nxbar"


def content_key(fields: dict, arrays: dict[str, np.ndarray]) -> str:
    """sha256 hex digest over `fields` (JSON), nxbar's and the format's version, and `arrays` (name, dtype,
    shape and bytes of each, in the given order)."""
    h = hashlib.sha256()
    header = {"format": FORMAT_VERSION, "nxbar": nxbar.__version__, **fields}
    h.update(json.dumps(header, sort_keys=True).encode())
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def mapping_key(weights: dict[str, np.ndarray], config: dict) -> str:
    """Key of a mapped model: the MVM weights (in the given order) and the crossbar configuration."""
    return content_key({"config": config}, weights)


def _paths(key: str, directory: Path | None, kind: str) -> tuple[Path, Path]:
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r} unknown; allowed: {', '.join(KINDS)}")
    d = Path(directory) if directory is not None else cache_dir()
    return d / f"{kind}-{key}.npz", d / f"{kind}-{key}.json"


def load(key: str, directory: Path | None = None, kind: str = "mapped", *,
         expect: dict[str, tuple[tuple[int, ...], np.dtype]],
         report_ok: Callable[[object], bool] = lambda report: True) -> tuple[dict[str, np.ndarray], object] | None:
    """(arrays, report) stored under `key`, or None when there is no complete, readable entry that holds exactly
    the arrays `expect` names, each of the (shape, dtype) given there, and a report for which `report_ok` holds."""
    npz, js = _paths(key, directory, kind)
    try:
        with np.load(npz, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        report = json.loads(js.read_text())
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):  # missing or damaged
        return None
    if arrays.keys() != expect.keys() or not report_ok(report):
        return None
    if any(a.shape != tuple(expect[name][0]) or a.dtype != expect[name][1] for name, a in arrays.items()):
        return None
    return arrays, report


def save(key: str, arrays: dict[str, np.ndarray], report: object, directory: Path | None = None,
         kind: str = "mapped") -> Path:
    """Store `arrays` (npz) and the JSON-serialisable `report` under `key`; return the npz path."""
    npz, js = _paths(key, directory, kind)
    npz.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(js, json.dumps(report, indent=1))
    atomic_write(npz, lambda f: np.savez(f, **arrays))
    return npz


def clear_cache(directory: Path | None = None) -> list[Path]:
    """Delete every cache entry (only nxbar's <kind>-* files) in the cache directory; return the removed paths."""
    d = Path(directory) if directory is not None else cache_dir()
    if not d.is_dir():
        return []
    removed = sorted(p for p in d.iterdir()
                     if p.name.startswith(tuple(f"{k}-" for k in KINDS)) and p.suffix in (".npz", ".json"))
    for p in removed:
        p.unlink()
    return removed
