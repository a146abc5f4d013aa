"""Weight files: `<model>_<dataset>.npz` (float32 arrays named by layer) + `<model>_<dataset>.json`
(docs/protocol.md section 2).

The `.npz` holds exactly the arrays of `nxbar.models.arch.param_shapes(arch, num_classes, input_size)`,
float32, in PyTorch layouts, zip-deflated by `save_weights` (a hybrid-precision file, whose b-bit layers hold
at most 2^(b+1) - 1 distinct values, shrinks about 12x; `np.load` reads deflated and stored archives alike).
The `.json` describes them:

    format, format_version      "nxbar-weights", 1
    arch, dataset               e.g. "vgg8", "cifar10"
    num_classes, input_size     e.g. 10, 32
    normalization               {"mean": [3 floats], "std": [3 floats]} applied to [0, 1] pixels
    bn_eps                      BatchNorm epsilon
    class_names                 num_classes strings, label index order
    arrays                      {name: {"shape": [...], "dtype": "float32"}}
    npz_sha256                  sha256 of the .npz file's bytes
    model (optional)            the network's name when it is not the arch, e.g. "vgg8q" (QUANOS)
    layer_bits (optional)       a hybrid-precision network (QUANOS, docs/protocol.md section 6.2): one entry
                                per MVM layer in network order, null (full precision) or b; the weights of a b-bit layer
                                lie on its 2^b-level grid (`nxbar.crossbar.mapping.quantize_weights`),
                                and crossbars map each layer at its own precision
    training, accuracy, ...     free-form provenance written by the exporting tool

Loading validates all of it and refuses a bad file with an error naming the file, the array and what was
expected. Arrays are read with `allow_pickle=False`: a weight file can never execute code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from nxbar import __version__
from nxbar.crossbar.config import MAX_BITS
from nxbar.crossbar.mapping import quantize_weights
from nxbar.models.arch import ARCHITECTURES, mvm_names, param_shapes

FORMAT = "nxbar-weights"
FORMAT_VERSION = 1
DTYPE = np.dtype(np.float32)
REQUIRED_META = ("arch", "dataset", "num_classes", "input_size", "normalization", "bn_eps", "class_names")


class WeightFileError(ValueError):
    """A weight file that is missing, inconsistent or corrupt."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_paths(path: str | Path) -> tuple[Path, Path]:
    """(npz, json) paths of a weight file given as its stem, its `.npz` or its `.json`."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def shipped_weights_dir() -> Path:
    """Folder of the shipped weight files: `nxbar/_weights` when installed, else the checkout's `weights/`."""
    package = Path(__file__).resolve().parent
    installed = package / "_weights"
    return installed if installed.is_dir() else package.parent / "weights"


def resolve_weights(model: str, dataset: str = "cifar10") -> Path:
    """Stem path of the shipped weight file for `model` on `dataset` (e.g. vgg8, cifar10 -> .../vgg8_cifar10)."""
    return shipped_weights_dir() / f"{model}_{dataset}"


def _is_int(value) -> bool:
    """A JSON integer; JSON's true and false load as bool, which Python counts as an int, and are not one."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A JSON number (integer or float), not a bool."""
    return _is_int(value) or isinstance(value, float)


def _check_meta(meta: dict, where: str) -> None:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise WeightFileError(f"{where}: missing field(s) {', '.join(missing)}; required: {', '.join(REQUIRED_META)}")
    for key in ("num_classes", "input_size"):
        if not _is_int(meta[key]):
            raise WeightFileError(f"{where}: {key} must be an integer, got {meta[key]!r}")
    norm = meta["normalization"]
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise WeightFileError(f"{where}: 'normalization' must be {{'mean': [3 floats], 'std': [3 floats]}}, got {norm!r}")
    for key in ("mean", "std"):
        vals = norm[key]
        if not (isinstance(vals, list) and len(vals) == 3 and all(_is_number(v) for v in vals)):
            raise WeightFileError(f"{where}: normalization {key} must be a list of 3 numbers, got {vals!r}")
        if not all(np.isfinite(vals)):
            raise WeightFileError(f"{where}: normalization {key} must be finite, got {vals!r}")
    if min(norm["std"]) <= 0:
        raise WeightFileError(f"{where}: normalization std must be > 0, got {norm['std']!r}")
    if not (_is_number(meta["bn_eps"]) and np.isfinite(meta["bn_eps"]) and meta["bn_eps"] > 0):
        raise WeightFileError(f"{where}: bn_eps must be a finite number > 0, got {meta['bn_eps']!r}")
    names = meta["class_names"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)) or len(names) != meta["num_classes"]:
        raise WeightFileError(
            f"{where}: class_names must be a list of num_classes={meta['num_classes']!r} strings, got {names!r}"
        )
    if len(set(names)) != len(names):
        repeated = ", ".join(sorted(repr(n) for n in set(names) if names.count(n) > 1))
        raise WeightFileError(f"{where}: class_names must be unique, got {repeated} twice or more")
    if meta["arch"] in ARCHITECTURES:  # an unknown arch is reported by _expected_shapes
        _check_precision(meta, where)


def _check_precision(meta: dict, where: str) -> None:
    if "model" in meta and not (isinstance(meta["model"], str) and meta["model"].startswith(meta["arch"])):
        raise WeightFileError(f"{where}: 'model' must be a name starting with the arch {meta['arch']!r}, "
                              f"got {meta['model']!r}")
    if "layer_bits" not in meta:
        return
    lb, names = meta["layer_bits"], mvm_names(meta["arch"])
    ok = isinstance(lb, list) and len(lb) == len(names) and all(
        b is None or (_is_int(b) and 1 <= b <= MAX_BITS) for b in lb)
    if not ok:
        raise WeightFileError(f"{where}: 'layer_bits' must be a list of {len(names)} entries (one per MVM layer: "
                              f"{', '.join(names)}), each null or an integer 1..{MAX_BITS}; got {lb!r}")


def layer_bits(meta: dict) -> tuple[int | None, ...] | None:
    """Per-MVM-layer precision of a hybrid-precision weight file (its 'layer_bits'), None for a plain one."""
    return tuple(meta["layer_bits"]) if "layer_bits" in meta else None


def _check_on_grid(arrays: dict[str, np.ndarray], meta: dict, where: str) -> None:
    """Every weight of a b-bit layer must already be one of its 2^b levels: a file that claims a precision
    its weights do not have would make the software model and the crossbars disagree silently."""
    for name, bits in zip(mvm_names(meta["arch"]), layer_bits(meta) or ()):
        w = arrays[name]
        q = quantize_weights(w, bits)
        scale = float(np.max(np.abs(w))) or 1.0
        if np.max(np.abs(q - w)) > 1e-6 * scale:
            raise WeightFileError(f"{where}: array {name!r} is not on its {bits}-bit grid (layer_bits): "
                                  f"max |W - W_q| = {np.max(np.abs(q - w)):.3g}, max |W| = {scale:.3g}")


def _expected_shapes(meta: dict, where: str) -> dict[str, tuple[int, ...]]:
    try:
        return param_shapes(meta["arch"], meta["num_classes"], meta["input_size"])
    except ValueError as err:
        raise WeightFileError(f"{where}: {err}") from None


def save_weights(path: str | Path, params: dict[str, np.ndarray], meta: dict) -> tuple[Path, Path]:
    """Write `params` (cast to float32) and `meta` as a weight file pair; return (npz, json) paths.

    `meta` needs the REQUIRED_META fields; other fields (training recipe, accuracies) are stored as given.
    The arrays are validated exactly as `load_weights` would, so a saved file always loads.
    """
    npz_path, json_path = weight_paths(path)
    where = str(json_path)
    _check_meta(meta, where)
    shapes = _expected_shapes(meta, where)
    arrays = {}
    for name, shape in shapes.items():
        if name not in params:
            raise WeightFileError(f"{where}: array {name!r} missing from params; expected shape {shape}")
        arrays[name] = np.ascontiguousarray(params[name], dtype=DTYPE)
    extra = sorted(set(params) - set(shapes))
    if extra:
        raise WeightFileError(f"{where}: unexpected array(s) {', '.join(extra)} for arch {meta['arch']!r}")
    _check_arrays(arrays, shapes, where)
    _check_on_grid(arrays, meta, where)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz_path, **arrays)
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    record["arrays"] = {n: {"shape": list(a.shape), "dtype": DTYPE.name} for n, a in arrays.items()}
    record["npz_sha256"] = file_sha256(npz_path)
    record.setdefault("nxbar_version", __version__)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return npz_path, json_path


def _check_arrays(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], where: str) -> None:
    for name, shape in shapes.items():
        arr = arrays[name]
        if arr.dtype != DTYPE:
            raise WeightFileError(f"{where}: array {name!r}: expected dtype float32, got {arr.dtype}")
        if arr.shape != shape:
            raise WeightFileError(f"{where}: array {name!r}: expected shape {shape}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise WeightFileError(f"{where}: array {name!r}: {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
        if name.endswith("running_var") and np.any(arr < 0):
            raise WeightFileError(f"{where}: array {name!r}: negative variance")


def load_weights(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and validate a weight file pair; return (params, meta). Any defect raises WeightFileError."""
    npz_path, json_path = weight_paths(path)
    for p in (json_path, npz_path):
        if not p.is_file():
            raise WeightFileError(f"{p}: weight file not found")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightFileError(f"{json_path}: not valid JSON ({err})") from None
    where = str(json_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightFileError(f"{where}: 'format' must be {FORMAT!r}")
    if not (_is_int(meta.get("format_version")) and meta["format_version"] == FORMAT_VERSION):
        raise WeightFileError(
            f"{where}: format_version {meta.get('format_version')!r} not supported; this nxbar reads {FORMAT_VERSION}"
        )
    _check_meta(meta, where)
    shapes = _expected_shapes(meta, where)
    recorded = {n: (tuple(s.get("shape", ())), s.get("dtype")) for n, s in meta.get("arrays", {}).items()}
    if recorded != {n: (s, DTYPE.name) for n, s in shapes.items()}:
        raise WeightFileError(f"{where}: 'arrays' does not describe the {meta['arch']!r} parameters as float32")
    actual = file_sha256(npz_path)
    if actual != meta.get("npz_sha256"):
        raise WeightFileError(
            f"{npz_path}: sha256 {actual} does not match npz_sha256 {meta.get('npz_sha256')!r} recorded in {json_path.name}"
        )
    where = str(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [n for n in shapes if n not in names]
            if missing:
                raise WeightFileError(f"{where}: array {missing[0]!r} missing; expected shape {shapes[missing[0]]}")
            extra = sorted(names - set(shapes))
            if extra:
                raise WeightFileError(f"{where}: unexpected array(s) {', '.join(extra)} for arch {meta['arch']!r}")
            arrays = {n: npz[n] for n in shapes}
    except WeightFileError:
        raise
    except ValueError as err:  # object arrays (pickles) are refused by allow_pickle=False
        raise WeightFileError(f"{where}: unreadable array ({err})") from None
    except Exception as err:  # a truncated or foreign zip
        raise WeightFileError(f"{where}: not a readable .npz file ({err})") from None
    _check_arrays(arrays, shapes, where)
    _check_on_grid(arrays, meta, where)
    return arrays, meta


def load_model(path: str | Path, dtype=np.float32):
    """Load a weight file into a `VGG` of the given dtype; return (model, meta).

    The model also carries the file's class names as `class_names` (a tuple, label index order), so that a
    data set can be labelled in the model's order (`nxbar.data.dataset.match_classes`).
    """
    from nxbar.models.vgg import VGG

    params, meta = load_weights(path)
    model = VGG(
        meta["arch"],
        params,
        num_classes=meta["num_classes"],
        input_size=meta["input_size"],
        mean=np.array(meta["normalization"]["mean"]),
        std=np.array(meta["normalization"]["std"]),
        bn_eps=meta["bn_eps"],
        dtype=dtype,
    )
    model.class_names = tuple(meta["class_names"])
    return model, meta
