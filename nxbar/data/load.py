"""Loading a data set by name: "embedded" (the first 1,000 CIFAR-10 test images shipped with nxbar, lossless,
see tools/make_embedded.py) or a path, whose format is detected."""

from __future__ import annotations

import dataclasses
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from nxbar.data.archive import Files
from nxbar.data.cifar import cifar_folder, load_cifar
from nxbar.data.dataset import Dataset, match_classes
from nxbar.data.image_folder import image_folder_root, read_image_folder
from nxbar.data.tiny_imagenet import read_tiny_imagenet, tiny_imagenet_root

EMBEDDED_FILE = "cifar10_test_first1000.npz"


def embedded_path() -> Path:
    """Path of the packaged npz with the first 1,000 CIFAR-10 test images (made by tools/make_embedded.py)."""
    return Path(__file__).resolve().parents[1] / "_data" / EMBEDDED_FILE


def _load_embedded() -> Dataset:
    path = embedded_path()
    with np.load(path, allow_pickle=False) as npz:
        return Dataset(
            images=npz["images"],
            labels=npz["labels"],
            class_names=tuple(str(c) for c in npz["class_names"]),
            source=f"embedded {path.name}: {npz['source']}",
        )


def load_dataset(spec: str = "embedded", split: str = "test") -> Dataset:
    """Load `spec`: "embedded" (the packaged 1,000 CIFAR-10 test images) or a path, whose kind is detected.

    Paths: a CIFAR-10/100 python archive (.tar.gz, .tgz, .tar) or its extracted folder; a Tiny ImageNet tree
    (a folder or .zip holding wnids.txt), where split "test" means the labelled "val" images (the official
    test images carry no labels); otherwise an ImageFolder (folder or .zip), using its subfolder named
    `split` when there is one and the whole tree as one split when there is none.
    """
    if spec == "embedded":
        if split != "test":
            raise ValueError(f"split {split!r} is not available for the embedded data set; allowed: 'test'")
        return _load_embedded()
    path = Path(spec)
    if not path.exists():
        raise ValueError(
            f"data {spec!r}: no such file or folder; use 'embedded' or the path of a CIFAR-10/100 python archive "
            "(.tar.gz or folder), an image folder (folder or .zip) or a Tiny ImageNet tree (folder or .zip)"
        )
    if path.is_file() and not zipfile.is_zipfile(path):
        if not tarfile.is_tarfile(path):
            raise ValueError(f"{path}: neither a tar archive (CIFAR python version) nor a zip archive (image folder)")
        return load_cifar(path, split)
    if path.is_dir() and cifar_folder(path) is not None:
        return load_cifar(path, split)
    files = Files(path)
    if tiny_imagenet_root(files) is not None:
        return read_tiny_imagenet(files, "val" if split == "test" else split)
    if image_folder_root(files, split) is not None:
        return read_image_folder(files, split)
    present = [s for s in ("train", "val", "test") if image_folder_root(files, s) is not None]
    if present:  # a tree split into parts, none of them the one asked for: never read it as one split
        raise ValueError(f"{path}: no split {split!r} in this image folder; it holds the splits {', '.join(present)}")
    return read_image_folder(files, None)


def model_dataset(spec: str, split: str, n: int | None, model) -> Dataset:
    """`load_dataset(spec, split)` with its classes in the order of `model.class_names`, its first n images (all
    when n is None), checked against the model's input size."""
    ds = match_classes(load_dataset(spec, split=split), model.class_names)
    if n is not None:
        if n < 1 or n > len(ds.labels):
            raise ValueError(f"--n {n} is out of range: the data set {ds.source} has {len(ds.labels)} images")
        ds = dataclasses.replace(ds, images=ds.images[:n], labels=ds.labels[:n], source=f"{ds.source}, first {n}")
    if ds.images.shape[1] != model.input_size:
        raise ValueError(
            f"the data set {ds.source} has {ds.images.shape[1]}x{ds.images.shape[2]} images, "
            f"the model expects {model.input_size}x{model.input_size}"
        )
    return ds
