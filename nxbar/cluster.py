"""The study's cells as tasks of a Dask cluster (docs/protocol.md section 9, "Running on a cluster").

Dask (`pip install 'nxbar[cluster]'`) is optional: this module imports it only when a run is given a scheduler
address or a number of local workers, and with neither a run computes its cells in its own process as before.
The driver (the process that runs `nxbar reproduce`, `nxbar robustness` or `nxbar threats`) keeps the results
files. It sends every cell still missing as one task, named by a digest of everything its result depends on
(`task_key`), and writes each result the moment it arrives, the way the serial run writes it (`each_result`).
A task carries plain values (weight and data paths, the weight files' hashes and the driver's BLAS kernel,
`pinned`, image count, physics, cache folder); the worker checks them (`check_pinned`), builds what it needs
once per process (`kept`) and returns the cell's result only. A worker that dies has its tasks run again on
another worker by the scheduler (up to its `distributed.scheduler.allowed-failures`); the driver writes a cell
once, when its task has finished.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nxbar.reproducibility import blas
from nxbar.weights import WeightFileError, file_sha256, weight_paths

INSTALL = "pip install 'nxbar[cluster]'"
# The thread pools of numpy's BLAS, OpenMP and Numba: each is sized when its library loads, so a worker
# process gets them in its environment before it starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _distributed():
    """The dask.distributed module; a ValueError naming the extra to install when it is missing."""
    try:
        import distributed
    except ImportError:
        raise ValueError(f"a cluster run needs dask.distributed, which is not installed: {INSTALL}") from None
    return distributed


def thread_env(workers: int, cores: int | None = None) -> dict[str, str]:
    """The thread counts of each of `workers` worker processes that share this machine's `cores` (default: all
    of them): cores // workers threads for BLAS, OpenMP and Numba, at least 1, so that they do not oversubscribe
    the cores."""
    threads = max(1, (cores or os.cpu_count() or 1) // workers)
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


@contextmanager
def connect(scheduler: str | None = None, workers: int | None = None):
    """A dask.distributed Client for a run's cells, closed on exit: connected to the running scheduler at the
    address `scheduler`, or to a LocalCluster of `workers` processes on this machine (one task at a time each,
    threads from `thread_env`); None when neither is given (the serial run)."""
    if scheduler is None and workers is None:
        yield None
        return
    if scheduler is not None and workers is not None:
        raise ValueError(f"--scheduler {scheduler} and --workers {workers} were both given; allowed: one of them "
                         "(--scheduler to use a running Dask scheduler, --workers N to start N local workers)")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: allowed: an integer >= 1 (local worker processes)")
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler)
        except OSError as err:
            raise OSError(f"--scheduler {scheduler}: no Dask scheduler answered there ({err}); start one with "
                          "`dask scheduler` and give the address it prints") from None
        with client:
            yield client
        return
    import dask

    env = thread_env(workers)
    blas_env = {k: v for k, v in env.items() if k != "NUMBA_NUM_THREADS"}
    environ = dict(os.environ)
    try:
        # BLAS and OpenMP read their thread counts when numpy loads, which may be before a worker process applies
        # `env`: they go in the nanny's pre-spawn environment, which the nanny sets in this process before it
        # starts (or restarts) a worker. Numba's only in `env`: this process's own Numba reads its variable again
        # when it compiles, and refuses another count once its threads run.
        pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **blas_env}
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, env=env,
                                               dashboard_address=None)
        with cluster, distributed.Client(cluster) as client:
            yield client
    finally:  # this process's environment as it was before the nanny set its pre-spawn variables
        os.environ.clear()
        os.environ.update(environ)


def pinned(paths: dict) -> tuple[tuple, str | None]:
    """What a task pins so that a worker computes what this process would: ((model, path, (sha256 of its .npz,
    of its .json)), ...) of the weight files {model: path}, and this process's OpenBLAS kernel."""
    weights = tuple((m, str(p), tuple(file_sha256(f) for f in weight_paths(p))) for m, p in sorted(paths.items()))
    return weights, blas()["kernel"]


def check_pinned(weights: tuple, blas_kernel: str | None) -> None:
    """Refuse to compute here what `pinned` pinned elsewhere when it would come out otherwise: a weight file with
    other hashes (on a worker's machine, another file under the same path; WeightFileError), or another OpenBLAS
    kernel (a CPU of another kind: float32 results differ in their last bits, `nxbar.reproducibility`)."""
    for model, path, hashes in weights:
        found = tuple(file_sha256(f) for f in weight_paths(path))
        if found != hashes:
            raise WeightFileError(f"{path}: this {model} weight file (.npz, .json sha256 {found[0][:12]}, "
                                  f"{found[1][:12]}) is not the one the run started with ({hashes[0][:12]}, "
                                  f"{hashes[1][:12]}); every machine needs the same weight files under the same "
                                  "paths")
    if (kernel := blas()["kernel"]) != blas_kernel:
        raise ValueError(f"this process's OpenBLAS kernel is {kernel}, the run's {blas_kernel}: its cells would "
                         "differ in their last bits; set OPENBLAS_CORETYPE to one kernel that every machine runs "
                         "(e.g. Haswell on x86-64 with AVX2) for the driver and the workers")


_KEPT: dict = {}  # {key: value} that this (worker) process keeps from one task to the next


def kept(key, make: Callable):
    """make() for `key` (hashable plain values), made once in this process and kept for its next tasks with the
    same key; a task of another key replaces it."""
    if key not in _KEPT:
        _KEPT.clear()
        _KEPT[key] = make()
    return _KEPT[key]


def describe(client) -> str:
    """How a run computes its cells, for its json record."""
    if client is None:
        return "serial, in the driver's process"
    workers = client.scheduler_info()["workers"]
    return f"dask.distributed scheduler {client.scheduler.address}, {len(workers)} worker(s) at the start"


def task_key(label: str, *parts) -> str:
    """The task name of a cell: `label` and a digest of `parts` (plain values and frozen dataclasses whose repr
    holds everything the cell's result depends on), the same in every run."""
    return f"{label}-{hashlib.sha256(repr(parts).encode()).hexdigest()[:20]}"


def each_result(client, items: list, held: dict, key: Callable, local: Callable, remote: Callable,
                last: Callable = lambda item: False) -> Iterator[tuple[object, object, bool]]:
    """(item, result, computed) for every item of `items`: held[item] where the caller holds its result already
    (computed False: a copied row, a stored file), else local(item) or remote(item) (computed True).
    Without a client: in the order of `items`, each computed in this process when its turn comes. With a client:
    the held ones first; then the others as they finish, each a task named key(item) that runs remote(item) (a
    function a worker can import, or a functools.partial of one) on a worker, all submitted at once in the order
    of `items`, those for which last(item) holds at the end. A task's exception is raised here."""
    if client is None:
        for item in items:
            yield (item, held[item], False) if item in held else (item, local(item), True)
        return
    distributed = _distributed()
    yield from ((item, held[item], False) for item in items if item in held)
    todo = sorted((item for item in items if item not in held), key=last)
    futures = {client.submit(remote, item, key=key(item)): item for item in todo}
    for future in distributed.as_completed(list(futures)):
        item = futures.pop(future)
        result = future.result()
        future.release()
        yield item, result, True
