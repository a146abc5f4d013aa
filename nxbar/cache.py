"""On-disk cache of crossbar-mapped weights (SPEC section 7) and of reused adversarial inputs.

Directory: $NXBAR_CACHE_DIR if set, else ~/.cache/nxbar. One entry = two files, <kind>-<key>.npz
(float arrays, loaded with allow_pickle=False) and <kind>-<key>.json (a report). Kinds: "mapped" (the
effective weights and the per-layer report) and "adversarial" (the software model's PGD inputs that
`nxbar reproduce` shares between experiments). The key is a sha256 over everything the entry depends on
(`content_key`): for a mapped model the MVM weight arrays (name, dtype, shape, bytes) and the crossbar
configuration; always nxbar.__version__ and FORMAT_VERSION. Files are written to a temporary name and
renamed, so a concurrent reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

import nxbar

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


def load(key: str, directory: Path | None = None, kind: str = "mapped") -> tuple[dict[str, np.ndarray], object] | None:
    """(arrays, report) stored under `key`, or None when there is no complete, readable entry."""
    npz, js = _paths(key, directory, kind)
    try:
        with np.load(npz, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        report = json.loads(js.read_text())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # missing or damaged: a miss, rewritten later
        return None
    return arrays, report


def save(key: str, arrays: dict[str, np.ndarray], report: object, directory: Path | None = None,
         kind: str = "mapped") -> Path:
    """Store `arrays` (npz) and the JSON-serialisable `report` under `key`; return the npz path."""
    npz, js = _paths(key, directory, kind)
    npz.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(js, lambda f: f.write(json.dumps(report, indent=1).encode()))
    _atomic_write(npz, lambda f: np.savez(f, **arrays))
    return npz


def _atomic_write(path: Path, write) -> None:
    """Call write(binary file) on a temporary file next to `path`, then rename it to `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
