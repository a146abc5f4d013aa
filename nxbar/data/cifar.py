"""CIFAR-10 / CIFAR-100, python version (Krizhevsky 2009): the archive or its extracted folder.

Each batch is a Python pickle of a dict with b'data' (uint8, N x 3072: 1024 red, 1024 green, 1024 blue values,
each a row-major 32x32 plane) and b'labels' (CIFAR-10) or b'fine_labels' (CIFAR-100). The pickles are read by a
restricted unpickler that only rebuilds numpy arrays; any other object reference is refused.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from nxbar.data.dataset import Dataset, describe_array, existing

try:  # numpy's array reconstruction entry point, named by every pickled array (numpy.core before numpy 2)
    from numpy._core.multiarray import _reconstruct
except ImportError:
    from numpy.core.multiarray import _reconstruct

CIFAR_SPLITS = ("train", "test")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: rebuilds numpy arrays (and Python 3 protocol-2 bytes), refuses anything else.

    A pickle can name any importable callable (os.system, ...) and have it called while loading; CIFAR
    files only need numpy's array reconstruction, so every other global is refused.
    """

    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"refused global {module}.{name}: a CIFAR pickle may only rebuild numpy arrays "
            "(numpy _reconstruct, ndarray, dtype) and bytes (_codecs.encode with latin1)"
        )


def _latin1_encode(text, encoding):
    """How Python 3 pickles bytes at protocol 2: _codecs.encode(str, 'latin1'); no other codec is allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}; only 'latin1' is allowed")
    return text.encode("latin1")


def _unpickle(data: bytes, where: str) -> dict:
    """Decode one CIFAR pickle into a dict with str keys; any failure is a ValueError naming `where`."""
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can fail in many ways (EOFError, KeyError, UnpicklingError, ...)
        raise ValueError(f"{where}: not a readable CIFAR pickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a CIFAR pickle holds a dict, this one a {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


# The files and dict keys of the two official archives.
_CIFAR = {
    10: {"meta": "batches.meta", "names_key": "label_names", "labels_key": "labels",
         "test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))},
    100: {"meta": "meta", "names_key": "fine_label_names", "labels_key": "fine_labels",
          "test": ("test",), "train": ("train",)},
}


def cifar_folder(path: Path) -> Path | None:
    """The folder holding the CIFAR files: `path` itself or its cifar-10-batches-py / cifar-100-python."""
    for folder in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if (folder / "batches.meta").is_file() or (folder / "meta").is_file():
            return folder
    return None


def _read_cifar_files(path: Path, wanted: set[str]) -> tuple[dict[str, bytes], str]:
    """{file name: bytes} of the `wanted` names found in the archive or folder, and a prefix for messages."""
    if path.is_dir():
        folder = cifar_folder(path)
        if folder is None:
            raise ValueError(f"{path}: no CIFAR files (batches.meta or meta) here or in the official subfolders")
        return {n: (folder / n).read_bytes() for n in sorted(wanted) if (folder / n).is_file()}, f"{folder}/"
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r|*") as tar:  # one streaming pass: no seeking back in the compressed stream
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted:
                    if name in found:
                        raise ValueError(f"{path}: holds two files named {name}")
                    found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable tar archive: {type(exc).__name__}: {exc}") from exc
    return found, f"{path}:"


def load_cifar(path: str | os.PathLike, split: str = "test") -> Dataset:
    """Load the `split` ("train" or "test") of an official CIFAR-10 or CIFAR-100 python archive or folder.

    `path`: cifar-10-python.tar.gz / cifar-100-python.tar.gz (any tar compression), or the extracted
    folder (its parent works too). CIFAR-10 vs 100 is told by the meta file (batches.meta vs meta).
    CIFAR-10 train = data_batch_1..5, those present, in order (the source names any absent ones);
    test = test_batch. CIFAR-100: files train / test, fine labels, names from meta's fine_label_names.
    Row layout: 1024 R, 1024 G, 1024 B, each row-major 32x32 -> reshape (N, 3, 32, 32), to (N, 32, 32, 3).
    """
    path = existing(path)
    if split not in CIFAR_SPLITS:
        raise ValueError(f"split {split!r} is not a CIFAR split; allowed: {', '.join(CIFAR_SPLITS)}")
    wanted = {name for v in _CIFAR.values() for name in (v["meta"], *v[split])}
    found, prefix = _read_cifar_files(path, wanted)
    variants = [v for v in _CIFAR if _CIFAR[v]["meta"] in found]
    if len(variants) != 1:
        raise ValueError(f"{path}: expected one of batches.meta (CIFAR-10) and meta (CIFAR-100), found {len(variants)}")
    variant = variants[0]
    spec = _CIFAR[variant]
    meta = _unpickle(found[spec["meta"]], prefix + spec["meta"])
    names = meta.get(spec["names_key"])
    if not isinstance(names, list) or not names:
        raise ValueError(f"{prefix}{spec['meta']}: no list {spec['names_key']!r} of class names")
    class_names = tuple(c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in names)
    batches = [name for name in spec[split] if name in found]
    if not batches:
        raise ValueError(f"{path}: CIFAR-{variant} {split} split missing (no {' / '.join(spec[split])})")
    images, labels = [], []
    for name in batches:
        batch = _unpickle(found[name], prefix + name)
        im, lab = _cifar_batch(batch, spec["labels_key"], len(class_names), prefix + name)
        images.append(im)
        labels.append(lab)
    counts = ", ".join(f"{n} ({len(lab)} images)" for n, lab in zip(batches, labels))
    absent = [name for name in spec[split] if name not in found]
    note = f"; absent: {', '.join(absent)}" if absent else ""
    return Dataset(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        class_names=class_names,
        source=f"CIFAR-{variant} {split} split from {path} (python pickles: {counts}{note})",
    )


def _cifar_batch(batch: dict, labels_key: str, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got {describe_array(data)}")
    raw = batch.get(labels_key)
    if not isinstance(raw, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer)) for v in raw):
        raise ValueError(f"{where}: {labels_key!r} must be a list of integers, got {type(raw).__name__}")
    labels = np.asarray(raw, dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{where}: {labels.shape[0]} labels for {data.shape[0]} images")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"{where}: label {labels[bad[0]]} of image {bad[0]} is out of range [0, {num_classes - 1}] "
            f"({bad.size} labels out of range)"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
