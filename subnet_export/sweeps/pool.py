"""``--workers N``: a local process pool (spawn), each worker building the supernet once.

Every worker's initializer builds the supernet and loads the checkpoint; each task is then one
arch, exported by :func:`~subnet_export.sweeps.job.export_one` exactly as in the sweep's own
process. On an interruption the pending tasks are cancelled and the workers are sent SIGTERM,
which each turns into an exception so the export under way removes its work files.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .job import SweepOptions, export_one

__all__ = ["WorkerTerminated", "run_pool"]

_WORKER: dict[str, Any] = {}


class WorkerTerminated(BaseException):
    """SIGTERM in a worker, raised where it is, so every ``finally`` removes its work files."""


def _terminate(signum: int, frame: Any) -> None:
    raise WorkerTerminated()


def _init(spec: str, strategy: str | None, weights: str | None, threads: int) -> None:
    import torch

    from ..loading import build_and_load

    signal.signal(signal.SIGTERM, _terminate)
    torch.set_num_threads(threads)
    net, loaded = build_and_load(spec, strategy, weights)
    _WORKER.update(net=net, loaded=loaded)


def _work(arch: Any, out_dir: str, options: SweepOptions, checkpoint_sha256: str | None
          ) -> dict[str, Any]:
    loaded = _WORKER["loaded"]
    return export_one(_WORKER["net"], arch, Path(out_dir), options,
                      checkpoint_sha256=checkpoint_sha256, weights_layout=loaded.note)


def run_pool(jobs: Sequence[tuple[Any, Path]], *, spec: str, strategy: str | None,
             weights: str | None, options: SweepOptions, checkpoint_sha256: str | None,
             workers: int, on_done: Callable[[int, dict[str, Any]], None]) -> None:
    """Export ``jobs`` (``(arch as given, bundle dir)``) on ``workers`` spawned processes.

    ``on_done(job index, row facts)`` is called in this process as each finishes. A worker
    that dies (killed, out of memory) makes its arch an error row, exit code 3.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init,
                                   initargs=(spec, strategy, weights, threads))
    try:
        futures = {executor.submit(_work, arch, str(out), options, checkpoint_sha256): i
                   for i, (arch, out) in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as err:  # the worker process died or could not start
                row = {"verdict": "error", "status": "error", "exit_code": 3,
                       "error_type": type(err).__name__,
                       "reason": f"internal error: the worker failed: {err}"}
            on_done(futures[future], row)
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor) -> None:
    # The executor keeps its processes private; SIGTERM reaches only those.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=60)
