"""A data set: labelled uint8 RGB images with class names and a source, checked on creation; matching its
classes to a model's."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images: images uint8 (N, H, W, 3) C-contiguous RGB, labels int64 (N,) in [0, len(class_names))."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self):
        im, lab, names = self.images, self.labels, self.class_names
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 4 or im.shape[3] != 3:
            raise ValueError(f"images must be a uint8 array of shape (N, H, W, 3), got {describe_array(im)}")
        if not im.flags.c_contiguous:
            raise ValueError("images must be C-contiguous (use np.ascontiguousarray)")
        if im.shape[0] == 0:
            raise ValueError("images must hold at least one image, got N = 0")
        if not isinstance(lab, np.ndarray) or lab.dtype != np.int64 or lab.shape != (im.shape[0],):
            raise ValueError(f"labels must be an int64 array of shape ({im.shape[0]},), got {describe_array(lab)}")
        if not isinstance(names, tuple) or not names or not all(isinstance(c, str) and c for c in names):
            raise ValueError(f"class_names must be a non-empty tuple of non-empty str, got {names!r:.200}")
        if len(set(names)) != len(names):
            raise ValueError(f"class_names must be unique, got {names!r:.200}")
        bad = np.flatnonzero((lab < 0) | (lab >= len(names)))
        if bad.size:
            raise ValueError(
                f"labels must lie in [0, {len(names) - 1}] (one per class name), "
                f"got labels[{bad[0]}] = {lab[bad[0]]} ({bad.size} out of range)"
            )
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source must be a non-empty str, got {self.source!r}")


def match_classes(ds: Dataset, class_names: tuple[str, ...] | list[str]) -> Dataset:
    """`ds` labelled in the order of `class_names` (a model's classes: label k is class_names[k]).

    The same class names in another order (an image folder's sorted folder names, say) are relabelled,
    and the source says so; names that differ are refused with the names found on one side only.
    """
    wanted = tuple(class_names)
    if ds.class_names == wanted:
        return ds
    only_data = [c for c in ds.class_names if c not in wanted]
    only_model = [c for c in wanted if c not in ds.class_names]
    if only_data or only_model:
        raise ValueError(
            f"the classes of the data set {ds.source} are not the model's: only in the data set: "
            f"{name_list(only_data)}; only in the model: {name_list(only_model)}"
        )
    relabel = np.array([wanted.index(c) for c in ds.class_names], dtype=np.int64)
    return replace(ds, labels=relabel[ds.labels], class_names=wanted,
                   source=f"{ds.source}, relabelled to the model's class order")


def name_list(names: list[str], shown: int = 10) -> str:
    """'a, b, c', the first `shown` names and how many more, or 'none'."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "none"


def describe_array(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    return path
