"""Image data sets as uint8 arrays: CIFAR-10/100 python archives, ImageFolder trees, Tiny ImageNet, embedded set.

Every loader returns a `Dataset`: images uint8 (N, H, W, 3) in RGB order, labels int64 (N,), class names
(label k is class_names[k]) and a human-readable `source`. Supported inputs, as a folder or an archive:

- CIFAR-10 / CIFAR-100 python version (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):
  `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` or their extracted folders. Each batch is a Python
  pickle of a dict with b'data' (uint8, N x 3072: 1024 red, 1024 green, 1024 blue values, each a row-major
  32x32 plane) and b'labels' (CIFAR-10) or b'fine_labels' (CIFAR-100). The pickles are read by a restricted
  unpickler that only rebuilds numpy arrays; any other object reference is refused.
- ImageFolder: root/<class>/<image>, as a folder or a .zip; classes are the sorted folder names.
- Tiny ImageNet (CS231n): the official `tiny-imagenet-200/` layout, as a folder or a .zip.
- "embedded": the first 1,000 CIFAR-10 test images shipped with nxbar (lossless, see tools/make_embedded.py).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path

import numpy as np
from PIL import Image

try:  # numpy's array reconstruction entry point, named by every pickled array (numpy.core before numpy 2)
    from numpy._core.multiarray import _reconstruct
except ImportError:
    from numpy.core.multiarray import _reconstruct

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
EMBEDDED_FILE = "cifar10_test_first1000.npz"
CIFAR_SPLITS = ("train", "test")
TINY_IMAGENET_SPLITS = ("train", "val")
TINY_IMAGENET_SIZE = 64
# Below this many images the decoding runs in this process; above, in a pool of worker processes.
_PARALLEL_MIN_IMAGES = 1000


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
            raise ValueError(f"images must be a uint8 array of shape (N, H, W, 3), got {_describe_array(im)}")
        if not im.flags.c_contiguous:
            raise ValueError("images must be C-contiguous (use np.ascontiguousarray)")
        if im.shape[0] == 0:
            raise ValueError("images must hold at least one image, got N = 0")
        if not isinstance(lab, np.ndarray) or lab.dtype != np.int64 or lab.shape != (im.shape[0],):
            raise ValueError(f"labels must be an int64 array of shape ({im.shape[0]},), got {_describe_array(lab)}")
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
            f"{_name_list(only_data)}; only in the model: {_name_list(only_model)}"
        )
    relabel = np.array([wanted.index(c) for c in ds.class_names], dtype=np.int64)
    return replace(ds, labels=relabel[ds.labels], class_names=wanted,
                   source=f"{ds.source}, relabelled to the model's class order")


def _name_list(names: list[str], shown: int = 10) -> str:
    """'a, b, c', the first `shown` names and how many more, or 'none'."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "none"


def _describe_array(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


# ----------------------------------------------------------------------------------------------------------
# The embedded default set and dispatch on a path


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
    if path.is_dir() and _cifar_folder(path) is not None:
        return load_cifar(path, split)
    files = _Files(path)
    if _tiny_imagenet_root(files) is not None:
        return _tiny_imagenet(files, "val" if split == "test" else split)
    if _image_folder_root(files, split) is not None:
        return _image_folder(files, split)
    present = [s for s in ("train", "val", "test") if _image_folder_root(files, s) is not None]
    if present:  # a tree split into parts, none of them the one asked for: never read it as one split
        raise ValueError(f"{path}: no split {split!r} in this image folder; it holds the splits {', '.join(present)}")
    return _image_folder(files, None)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    return path


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100, python version


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


def _cifar_folder(path: Path) -> Path | None:
    """The folder holding the CIFAR files: `path` itself or its cifar-10-batches-py / cifar-100-python."""
    for folder in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if (folder / "batches.meta").is_file() or (folder / "meta").is_file():
            return folder
    return None


def _read_cifar_files(path: Path, wanted: set[str]) -> tuple[dict[str, bytes], str]:
    """{file name: bytes} of the `wanted` names found in the archive or folder, and a prefix for messages."""
    if path.is_dir():
        folder = _cifar_folder(path)
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
    path = _existing(path)
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
        raise ValueError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got {_describe_array(data)}")
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


# ----------------------------------------------------------------------------------------------------------
# Files in a folder or a zip archive, and image decoding


class _Files:
    """A folder or a .zip seen as '/'-separated names (folders end with '/'), read in place.

    Hidden entries (a part starting with '.') and macOS __MACOSX folders are left out.
    """

    def __init__(self, path: Path):
        self.path = path
        self.is_zip = not path.is_dir()
        if self.is_zip:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ValueError(f"{path}: not a readable zip archive: {exc}") from exc
            names = self._zip.namelist()
        else:
            names = []
            for folder, dirs, files in os.walk(path):
                rel = Path(folder).relative_to(path).as_posix() + "/"
                rel = "" if rel == "./" else rel
                names += [rel + d + "/" for d in dirs] + [rel + f for f in files]
        self.name_set = {n for n in names if not any(p.startswith(".") or p == "__MACOSX" for p in n.split("/"))}
        inside: dict[str, set[str]] = {}  # folder prefix -> entries directly inside (folders implied by paths too)
        for name in self.name_set:
            parts = name.rstrip("/").split("/")
            for depth, part in enumerate(parts):
                parent = "".join(p + "/" for p in parts[:depth])
                is_folder = depth < len(parts) - 1 or name.endswith("/")
                inside.setdefault(parent, set()).add(parent + part + ("/" if is_folder else ""))
        self._inside = {prefix: sorted(entries) for prefix, entries in inside.items()}

    def where(self, name: str) -> str:
        """How messages name the entry `name`."""
        return f"{self.path}:{name}" if self.is_zip else str(self.path / name)

    def read(self, name: str) -> bytes:
        try:
            return self._zip.read(name) if self.is_zip else (self.path / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            raise ValueError(f"{self.where(name)}: cannot read: {type(exc).__name__}: {exc}") from exc

    def inside(self, prefix: str) -> list[str]:
        """Sorted names of the entries directly inside folder `prefix` ('' is the top; else it ends with '/')."""
        return self._inside.get(prefix, [])

    def folders_in(self, prefix: str) -> list[str]:
        """Sorted names (without '/') of the folders directly inside folder `prefix`."""
        return [n[len(prefix) : -1] for n in self.inside(prefix) if n.endswith("/")]

    def images_in(self, prefix: str) -> list[str]:
        """Sorted names of the image files directly inside folder `prefix`."""
        return [n for n in self.inside(prefix) if n.lower().endswith(IMAGE_EXTENSIONS)]


def _decode_image(data: bytes, where: str, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image file to uint8 (H, W, 3) RGB; `size` (height, width) is enforced when given.

    8-bit images are converted to RGB by Pillow. 16-bit grayscale (Pillow modes I;16, I;16B, ... and I, as
    16-bit PNG, TIFF and PGM files are read) becomes 8-bit by v8 = round(v16 * 255 / 65535), the same value
    in the three channels; v16 * 255 / 65535 = v16 / 257 is never halfway between two integers. Pillow
    itself reads 16-bit colour PNGs as 8-bit (each value's high byte). Floating-point images (mode F) have
    no fixed range and are refused. An image with transparency (an alpha channel, a transparent palette
    entry or colour key) is read only when every pixel is fully opaque; the alpha is then dropped.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            mode, key = img.mode, img.info.get("transparency")
            if mode in ("I", "F") or mode.startswith("I;16"):
                pixels = np.asarray(img)  # one channel of 16- or 32-bit integers or 32-bit floats
            else:
                pixels = np.asarray(img.convert("RGBA" if img.has_transparency_data else "RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{where}: not a readable image: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim == 2:
        transparent = int(np.sum(pixels == key)) if key is not None else 0
    else:
        transparent = int(np.sum(pixels[..., 3] < 255)) if pixels.shape[2] == 4 else 0
    if transparent:
        raise ValueError(
            f"{where}: {transparent} of {pixels.shape[0] * pixels.shape[1]} pixels are not fully opaque "
            f"(Pillow mode {mode}); only opaque images are allowed (an alpha channel, transparent palette "
            "entry or colour key is accepted when every pixel is fully opaque)"
        )
    if pixels.ndim == 3:
        rgb = pixels[..., :3]
    elif mode == "F":
        raise ValueError(f"{where}: floating-point pixels (Pillow mode F) are not allowed; "
                         "allowed: 8-bit images and 16-bit grayscale")
    elif pixels.min() < 0 or pixels.max() > 65535:
        raise ValueError(f"{where}: integer pixels (Pillow mode {mode}) range over [{pixels.min()}, {pixels.max()}]; "
                         "only 16-bit grayscale values 0..65535 can be converted to 8-bit")
    else:
        gray = np.rint(pixels * (255 / 65535)).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=2)
    if size is not None and rgb.shape[:2] != size:
        got, want = f"{rgb.shape[0]}x{rgb.shape[1]}", f"{size[0]}x{size[1]}"
        raise ValueError(f"{where}: image is {got} (height x width), expected {want}")
    return rgb


def _decode_chunk(items: list[tuple[str, bytes]], size: tuple[int, int]) -> np.ndarray:
    """Decode (where, file bytes) pairs of images of one `size` into uint8 (n, H, W, 3); runs in workers."""
    return np.stack([_decode_image(data, where, size) for where, data in items])


def _decode_images(files: _Files, names: list[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode the image files `names` into uint8 (N, H, W, 3). All must share one size: `size` or the first's.

    Large sets are decoded by a pool of processes (one per CPU) while this process reads the files;
    Pillow's JPEG reader spends most of its time in Python, so threads would not run in parallel.
    """
    first = _decode_image(files.read(names[0]), files.where(names[0]), size)
    size = first.shape[:2]
    workers = min(os.cpu_count() or 1, len(names) // _PARALLEL_MIN_IMAGES)
    if workers <= 1:
        return _decode_chunk([(files.where(n), files.read(n)) for n in names], size)
    chunk = 500
    items = ([(files.where(n), files.read(n)) for n in names[i : i + chunk]] for i in range(0, len(names), chunk))
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, items, repeat(size))))


# ----------------------------------------------------------------------------------------------------------
# ImageFolder


def _image_folder_root(files: _Files, split: str | None) -> str | None:
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
    return _image_folder(_Files(_existing(path)), split, classes)


def _image_folder(files: _Files, split: str | None, classes=None) -> Dataset:
    root = _image_folder_root(files, split)
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
        images=_decode_images(files, names),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        source=f"image folder {files.path}{split_note} ({counts})",
    )


# ----------------------------------------------------------------------------------------------------------
# Tiny ImageNet


def _tiny_imagenet_root(files: _Files) -> str | None:
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
    return _tiny_imagenet(_Files(_existing(path)), split)


def _tiny_imagenet(files: _Files, split: str) -> Dataset:
    if split not in TINY_IMAGENET_SPLITS:
        allowed = ", ".join(TINY_IMAGENET_SPLITS)
        raise ValueError(f"split {split!r} is not a Tiny ImageNet split with labels; allowed: {allowed}")
    root = _tiny_imagenet_root(files)
    if root is None:
        raise ValueError(f"{files.path}: no wnids.txt, not a Tiny ImageNet tree")
    wnids = _text_lines(files, root + "wnids.txt")
    if not wnids or len(set(wnids)) != len(wnids):
        got = f"{len(wnids)} lines with {len(set(wnids))} distinct"
        raise ValueError(f"{files.where(root + 'wnids.txt')}: expected unique wnids, one a line, got {got}")
    words = {}
    if root + "words.txt" in files.name_set:
        for line in _text_lines(files, root + "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.strip()
    index = {w: i for i, w in enumerate(wnids)}
    names, labels = [], []
    if split == "val":
        annotations = root + "val/val_annotations.txt"
        for number, line in enumerate(_text_lines(files, annotations), start=1):
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
        images=_decode_images(files, names, (TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE)),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=tuple(f"{w}: {words[w]}" if words.get(w) else w for w in wnids),
        source=f"Tiny ImageNet {split} split from {files.where(root)} ({len(wnids)} classes, {len(names)} images)",
    )


def _text_lines(files: _Files, name: str) -> list[str]:
    if name not in files.name_set:
        raise ValueError(f"{files.where(name)}: missing")
    try:
        text = files.read(name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{files.where(name)}: not UTF-8 text: {exc}") from exc
    return [line.strip("\r") for line in text.split("\n") if line.strip()]
