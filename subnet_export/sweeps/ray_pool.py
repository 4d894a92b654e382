"""``--executor ray``: the sweep on a Ray cluster, one actor per worker, the supernet built once.

Each of ``workers`` actors builds the supernet and loads the checkpoint when it starts (on any
node of the cluster), then exports one arch per call with
:func:`~subnet_export.sweeps.job.export_one`, exactly as the local pool does. The sweep folder
must be one every node sees at the same path (a shared filesystem): bundles are written there
by the actors, atomically, as everywhere else.

An actor that dies (its process killed, its node lost) is restarted by Ray, which builds the
supernet again, and the arch it was on is run again there (``max_restarts``,
``max_task_retries``): the dead process's work folder is removed by the retry, as any stale
one is (``bundle/atomic.py``), so no partial bundle is left. An arch whose retries are used up
is an error row. ``ray`` is an optional extra (``pip install 'subnet-export[ray]'``); the rest
of the package never imports it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .job import SweepOptions, export_one

__all__ = ["MAX_RESTARTS", "preflight", "run_ray"]

#: restarts of a dead actor, and re-runs of the arch it was on
MAX_RESTARTS = 3
#: seconds to wait for a TCP answer at ``--address HOST:PORT`` before refusing it
PROBE_TIMEOUT_S = 10.0


class _Worker:
    """One actor: the supernet, built once, and one export per call."""

    def __init__(self, spec: str, strategy: str | None, weights: str | None,
                 threads: int) -> None:
        import torch

        from ..loading import build_and_load

        torch.set_num_threads(threads)
        self.net, self.loaded = build_and_load(spec, strategy, weights)

    def export(self, arch: Any, out_dir: str, options: SweepOptions,
               checkpoint_sha256: str | None) -> dict[str, Any]:
        """:func:`export_one` of ``arch`` into ``out_dir``."""
        return export_one(self.net, arch, Path(out_dir), options,
                          checkpoint_sha256=checkpoint_sha256, weights_layout=self.loaded.note)


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise InputError("--executor ray needs Ray: pip install 'subnet-export[ray]' (or run "
                         "with the local pool: --executor local)") from err
    return ray


def connect(address: str | None) -> Any:
    """``ray.init`` on ``address`` (``auto``: the cluster this machine is in); the ray module.

    A connection already open in this process is closed first: it may be to another cluster.

    Raises:
        InputError: Ray is not installed, or no cluster answers at ``address``.
    """
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
    _probe(address)
    try:
        ray.init(address=address or "auto", log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot reach a Ray cluster at {address or 'auto'}: {first}; start "
                         "one (`ray start --head`) or pass --address HOST:PORT") from err
    return ray


def preflight(address: str | None) -> None:
    """Before any folder is made: Ray is installed, and a ``HOST:PORT`` address answers.

    Raises:
        InputError: Ray is missing, or nothing listens at ``address``.
    """
    _ray()
    _probe(address)


def _probe(address: str | None) -> None:
    """Refuse a ``HOST:PORT`` where nothing listens at once; ``ray.init`` retries for minutes."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        raise InputError(f"cannot reach a Ray cluster at {address}: nothing answers there "
                         f"({err}); start one (`ray start --head`) or pass the head node's "
                         "--address HOST:PORT") from err


def run_ray(jobs: Sequence[tuple[Any, Path]], *, spec: str, strategy: str | None,
            weights: str | None, options: SweepOptions, checkpoint_sha256: str | None,
            workers: int, address: str | None,
            on_done: Callable[[int, dict[str, Any]], None],
            on_start: Callable[[list[Any]], None] | None = None) -> None:
    """Export ``jobs`` (``(arch as given, bundle dir)``) on ``workers`` Ray actors.

    ``on_done(job index, row facts)`` is called in this process as each finishes;
    ``on_start(actors)`` once the actors exist (tests use it to find a worker to kill).
    """
    ray = connect(address)
    cpus = float(ray.cluster_resources().get("CPU", workers))
    per_worker = max(1, int(cpus // workers))
    actor = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(_Worker)
    actors = [actor.options(num_cpus=per_worker).remote(spec, strategy, weights, per_worker)
              for _ in range(workers)]
    pending: dict[Any, tuple[int, Any]] = {}
    try:
        if on_start is not None:
            on_start(actors)
        queue = list(enumerate(jobs))
        free = list(actors)
        while queue or pending:
            while queue and free:
                index, (arch, out) = queue.pop(0)
                worker = free.pop(0)
                ref = worker.export.remote(arch, str(out), options, checkpoint_sha256)
                pending[ref] = (index, worker)
            done, _ = ray.wait(list(pending), num_returns=1)
            index, worker = pending.pop(done[0])
            free.append(worker)
            on_done(index, _result(ray, done[0]))
    except BaseException:
        _stop(ray, pending, jobs)
        raise
    finally:
        for worker in actors:
            ray.kill(worker, no_restart=True)
        ray.shutdown()


def _stop(ray: Any, pending: dict[Any, tuple[int, Any]], jobs: Sequence[tuple[Any, Path]]) -> None:
    """Interrupt the exports under way, give them time to remove their work files."""
    from ..bundle.atomic import clean_stale

    for ref in pending:
        ray.cancel(ref)
    ray.wait(list(pending), num_returns=len(pending), timeout=60)
    for index, _ in pending.values():
        clean_stale(jobs[index][1])


def _result(ray: Any, ref: Any) -> dict[str, Any]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:  # retries used up, or the actor could not start
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return {"verdict": "error", "status": "error", "exit_code": 3,
                "error_type": type(err).__name__,
                "reason": f"internal error: the Ray worker failed: {first}"}
