"""Image files in a folder or a .zip (`Files`) and their decoding to uint8 RGB arrays, in a pool of processes
for large sets."""

from __future__ import annotations

import io
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
# Below this many images the decoding runs in this process; above, in a pool of worker processes.
PARALLEL_MIN_IMAGES = 1000


class Files:
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


def decode_images(files: Files, names: list[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode the image files `names` into uint8 (N, H, W, 3). All must share one size: `size` or the first's.

    Large sets are decoded by a pool of processes (one per CPU) while this process reads the files;
    Pillow's JPEG reader spends most of its time in Python, so threads would not run in parallel.
    """
    first = _decode_image(files.read(names[0]), files.where(names[0]), size)
    size = first.shape[:2]
    workers = min(os.cpu_count() or 1, len(names) // PARALLEL_MIN_IMAGES)
    if workers <= 1:
        return _decode_chunk([(files.where(n), files.read(n)) for n in names], size)
    chunk = 500
    items = ([(files.where(n), files.read(n)) for n in names[i : i + chunk]] for i in range(0, len(names), chunk))
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, items, repeat(size))))


def text_lines(files: Files, name: str) -> list[str]:
    if name not in files.name_set:
        raise ValueError(f"{files.where(name)}: missing")
    try:
        text = files.read(name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{files.where(name)}: not UTF-8 text: {exc}") from exc
    return [line.strip("\r") for line in text.split("\n") if line.strip()]
