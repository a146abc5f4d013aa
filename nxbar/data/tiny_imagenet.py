"""Tiny ImageNet (CS231n): the official `tiny-imagenet-200/` layout, as a folder or a .zip."""

from __future__ import annotations

import os

import numpy as np

from nxbar.data.archive import Files, decode_images, text_lines
from nxbar.data.dataset import Dataset, existing

TINY_IMAGENET_SPLITS = ("train", "val")
TINY_IMAGENET_SIZE = 64


def tiny_imagenet_root(files: Files) -> str | None:
    """Prefix of the folder holding wnids.txt (the shallowest one), or None."""
    hits = [n for n in files.name_set if n == "wnids.txt" or n.endswith("/wnids.txt")]
    return min(hits, key=lambda n: n.count("/"))[: -len("wnids.txt")] if hits else None


def load_tiny_imagenet(path: str | os.PathLike, split: str = "val") -> Dataset:
    """Load the `split` ("val" or "train") of the official Tiny ImageNet layout, a folder or a .zip.

    The tree root (`tiny-imagenet-200/`, found anywhere inside `path`) holds wnids.txt (one wnid a line;
    label = line index), words.txt (wnid TAB words), val/val_annotations.txt (file TAB wnid TAB box) with
    val/images/, and train/<wnid>/images/. Val images are in annotation-file order; train images by class,
    then by file name. Class names are "wnid: words" (e.g. "n01443537: goldfish, Carassius auratus"), the
    bare wnid when words.txt has no entry. Images must be 64x64 (grayscale files are converted to RGB).
    The official test images have no labels and are not loadable.
    """
    return read_tiny_imagenet(Files(existing(path)), split)


def read_tiny_imagenet(files: Files, split: str) -> Dataset:
    if split not in TINY_IMAGENET_SPLITS:
        allowed = ", ".join(TINY_IMAGENET_SPLITS)
        raise ValueError(f"split {split!r} is not a Tiny ImageNet split with labels; allowed: {allowed}")
    root = tiny_imagenet_root(files)
    if root is None:
        raise ValueError(f"{files.path}: no wnids.txt, not a Tiny ImageNet tree")
    wnids = text_lines(files, root + "wnids.txt")
    if not wnids or len(set(wnids)) != len(wnids):
        got = f"{len(wnids)} lines with {len(set(wnids))} distinct"
        raise ValueError(f"{files.where(root + 'wnids.txt')}: expected unique wnids, one a line, got {got}")
    words = {}
    if root + "words.txt" in files.name_set:
        for line in text_lines(files, root + "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.strip()
    index = {w: i for i, w in enumerate(wnids)}
    names, labels = [], []
    if split == "val":
        annotations = root + "val/val_annotations.txt"
        for number, line in enumerate(text_lines(files, annotations), start=1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                problem = f"{line!r:.80} does not name an image and a wnid of wnids.txt"
                raise ValueError(f"{files.where(annotations)} line {number}: {problem}")
            name = f"{root}val/images/{fields[0]}"
            if name not in files.name_set:
                raise ValueError(f"{files.where(annotations)} line {number}: image {files.where(name)} is missing")
            names.append(name)
            labels.append(index[fields[1]])
    else:
        for label, wnid in enumerate(wnids):
            images = files.images_in(f"{root}train/{wnid}/images/")
            if not images:
                raise ValueError(f"{files.where(f'{root}train/{wnid}/images/')}: missing class {wnid} (no images)")
            names += images
            labels += [label] * len(images)
    if not names:
        raise ValueError(f"{files.where(root)}: Tiny ImageNet {split} split holds no images")
    return Dataset(
        images=decode_images(files, names, (TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE)),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(f"{w}: {words[w]}" if words.get(w) else w for w in wnids),
        source=f"Tiny ImageNet {split} split from {files.where(root)} ({len(wnids)} classes, {len(names)} images)",
    )
