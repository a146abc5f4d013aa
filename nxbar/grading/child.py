"""The grader's child process: runs a student's functions on the inputs the grader sent, and nothing else.

Started by nxbar.grading.runner as `python -I child.py JOB` in a fresh temporary folder, under resource limits.
It reads JOB (json: the student file, the calls of each case) and the input arrays (`inputs.npz`, keys
`<case>.<name>`), builds the cases' models, then refuses the submission any import of the modules in FORBIDDEN
(a hook on the import system: in assignment 3 the models' own modules are loaded already), imports the student's
file and makes each case's calls. Per case it writes `results/<case>.npz` (the arrays and numbers it
got back) and then `results/<case>.json` (what each result was, or the error). It never sees an expected value,
and the grader trusts none of what it writes beyond the arrays it checks.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

FORBIDDEN = ("nxbar", "torch", "tensorflow", "jax")  # a submission uses NumPy only
MESSAGE_CHARS = 300  # longest error text kept from the student's code


class LinearSoftmax:
    """A tiny model for grading attacks: logits = flatten(x) @ w + b, mean softmax cross-entropy loss."""

    def __init__(self, w: np.ndarray, b: np.ndarray):
        from nxbar.models.layers import softmax_cross_entropy

        self.w, self.b, self._loss = w, b, softmax_cross_entropy

    def loss_and_input_grad(self, x, y):
        loss, dlogits = self._loss(x.reshape(len(x), -1) @ self.w + self.b, y)
        return loss, (dlogits @ self.w.T).reshape(x.shape)


def build_model(spec: dict, arrays: dict):
    """The model a case describes: {"kind": "linear", "w": name, "b": name} (arrays[name]) or
    {"kind": "vgg8", "seed": s}, an untrained VGG8 for 32x32 images of 10 classes with weights drawn from s."""
    if spec["kind"] == "linear":
        return LinearSoftmax(arrays[spec["w"]], arrays[spec["b"]])
    if spec["kind"] == "vgg8":
        from nxbar.models.vgg import VGG, random_params

        params = random_params("vgg8", num_classes=10, input_size=32, seed=spec["seed"])
        return VGG("vgg8", params, num_classes=10, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    raise ValueError(f"model kind {spec['kind']!r} not known; allowed: linear, vgg8")


LIBRARIES = (Path(__file__).resolve().parents[1], *{Path(p).resolve() for p in (sys.prefix, sys.base_prefix)})


def _importer(frame) -> str:
    """The file whose code asked for an import: the first caller outside Python's import machinery."""
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename == importlib.__file__):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else ""


class _Refuse(importlib.abc.MetaPathFinder):
    """Import hook: code outside nxbar and the installed libraries (the submission, or anything it wrote) that
    imports a FORBIDDEN module gets ImportError saying so; nxbar's own models may still load their parts."""

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        importer = Path(_importer(sys._getframe(1))).resolve()
        if top in FORBIDDEN and not any(importer.is_relative_to(lib) for lib in LIBRARIES):
            raise ImportError(f"importing {top} is not allowed in a submission: use NumPy only")
        return None


class _CallFailed(Exception):
    """A call's result is not what the case needs (a missing function, no tuple where one is asked for)."""


def _error(err: BaseException) -> str:
    if isinstance(err, MemoryError):
        return "MemoryError: it needed more memory than the grader's limit"
    return f"{type(err).__name__}: {err}"[:MESSAGE_CHARS]


def _arg(ref, namespace: dict):
    """A call's argument from its json form: {"ref": name}, {"value": v} or {"rng": seed}."""
    if "ref" in ref:
        value = namespace[ref["ref"]]
        return value.copy() if isinstance(value, np.ndarray) else value
    if "rng" in ref:
        return np.random.default_rng(ref["rng"])
    return ref["value"]


def _call(module, call: dict, namespace: dict) -> None:
    fn = getattr(module, call["fn"], None)
    if not callable(fn):
        raise _CallFailed(f"function {call['fn']} is missing from the file")
    result = fn(*(_arg(a, namespace) for a in call["args"]),
                **{k: _arg(a, namespace) for k, a in call["kwargs"].items()})
    names = call["returns"]
    if isinstance(names, str):
        namespace[names] = result
        return
    if not isinstance(result, tuple) or len(result) != len(names):
        raise _CallFailed(f"{call['fn']} must return a tuple of {len(names)} values ({', '.join(names)}), "
                          f"got {type(result).__name__}")
    namespace.update(zip(names, result))


def _encode(value, name: str, arrays: dict) -> dict:
    """What the grader gets of a result: the array itself, a number, or only its type's name."""
    kind, type_name = "other", type(value).__name__[:60]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            arrays[name], kind = value, "array"
        else:
            type_name = f"ndarray of dtype {value.dtype}"[:60]
    else:
        try:
            number = float(value)
            arrays[name], kind = np.float64(number), "number"
        except Exception:  # noqa: BLE001 -- anything that is no number is reported by its type's name
            pass
    return {"kind": kind, "type": type_name}


def _run_case(module, case: dict, namespace: dict, results: Path, k: int) -> None:
    arrays, record = {}, {"error": None, "outputs": {}}
    try:
        for call in case["calls"]:
            _call(module, call, namespace)
        record["outputs"] = {name: _encode(namespace[name], name, arrays) for name in case["outputs"]}
    except _CallFailed as err:
        record["error"] = str(err)[:MESSAGE_CHARS]
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- an error in student code fails the case, nothing else
        record["error"] = f"raised {_error(err)}"
    np.savez(results / f"{k}.npz", **arrays)
    (results / f"{k}.json").write_text(json.dumps(record))


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    results = Path(job["results"])
    with np.load(job["inputs"], allow_pickle=False) as data:
        inputs = {key: data[key] for key in data.files}
    namespaces = []
    for k, case in enumerate(job["cases"]):
        arrays = {key.partition(".")[2]: v for key, v in inputs.items() if key.partition(".")[0] == str(k)}
        namespaces.append({**arrays, **{name: build_model(spec, arrays) for name, spec in case["models"].items()}})
    sys.meta_path.insert(0, _Refuse())
    try:
        spec = importlib.util.spec_from_file_location("submission", job["student"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- a file that does not import fails every case
        (results / "import.json").write_text(json.dumps({"error": _error(err)}))
        return
    (results / "import.json").write_text(json.dumps({"error": None}))
    for k, case in enumerate(job["cases"]):
        _run_case(module, case, namespaces[k], results, k)


if __name__ == "__main__":
    main(sys.argv[1])
