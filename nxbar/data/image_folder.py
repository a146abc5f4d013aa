"""ImageFolder: root/<class>/<image>, as a folder or a .zip; classes are the sorted folder names."""

from __future__ import annotations

import os

import numpy as np

from nxbar.data.archive import Files, decode_images
from nxbar.data.dataset import Dataset, existing

def image_folder_root(files: Files, split: str | None) -> str | None:
    """Name prefix of the folder holding the class folders, or None when there is no subfolder `split`.

    The root is the top, or for a zip whose entries all lie in one top-level folder (a zipped folder)
    that folder; `split` is looked for in the root, then at the top.
    """
    tops = files.inside("")
    base = tops[0] if files.is_zip and len(tops) == 1 and tops[0].endswith("/") else ""
    if split is None:
        return base
    for prefix in dict.fromkeys((base, "")):
        if split in files.folders_in(prefix):
            return f"{prefix}{split}/"
    return None


def load_image_folder(path: str | os.PathLike, split: str | None = None, classes: list[str] | None = None) -> Dataset:
    """Load an ImageFolder tree root/<class>/<image> from a folder or a .zip (read in place, not extracted).

    `split` selects a subfolder of the root holding the class folders (e.g. "train" / "test"). A zip whose
    entries all lie in one top-level folder has that folder as its root. Classes are the sorted folder
    names, or `classes` (label = index in it; every class folder must exist and no other may). Images are
    the files with an image extension directly inside a class folder, sorted by name, decoded by Pillow and
    converted to RGB; all must have the same size.
    """
    return read_image_folder(Files(existing(path)), split, classes)


def read_image_folder(files: Files, split: str | None, classes=None) -> Dataset:
    root = image_folder_root(files, split)
    if root is None:
        tops = ", ".join(files.folders_in("")) or "none"
        raise ValueError(f"{files.path}: no subfolder {split!r} (split); folders at the top: {tops}")
    found = files.folders_in(root)
    if classes is None:
        class_names = tuple(found)
    else:
        class_names = tuple(classes)
        missing = [c for c in class_names if c not in found]
        extra = [c for c in found if c not in class_names]
        if missing or extra:
            raise ValueError(
                f"{files.where(root)}: class folders do not match the given classes "
                f"(missing: {', '.join(missing) or 'none'}; not among them: {', '.join(extra) or 'none'})"
            )
    if not class_names:
        raise ValueError(f"{files.where(root)}: no class folders (expected root/<class>/<image>)")
    names, labels = [], []
    for label, cls in enumerate(class_names):
        images = files.images_in(f"{root}{cls}/")
        if not images:
            inner = ", ".join(files.folders_in(f"{root}{cls}/")[:5])
            hint = f"; it holds folders ({inner}): images must lie directly in <root>/<class>/" if inner else ""
            raise ValueError(f"{files.where(f'{root}{cls}/')}: class folder holds no images{hint}")
        names += images
        labels += [label] * len(images)
    split_note = f", split {split!r}" if split else ""
    counts = f"{len(class_names)} classes, {len(names)} images, decoded by Pillow"
    return Dataset(
        images=decode_images(files, names),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        source=f"image folder {files.path}{split_note} ({counts})",
    )
