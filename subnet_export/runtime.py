"""onnxruntime sessions, made one way for validation, locating, ``verify`` and the latency gate.

Imports onnxruntime lazily and never torch: the bundle side runs on machines with onnxruntime
and numpy alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["available_providers", "backend_name", "make_session"]

#: graph optimisation levels by name, for ``make_session(optimization=...)``
_LEVELS = ("disabled", "basic", "extended", "all")


def backend_name(provider: str) -> str:
    """The parity backend of an execution provider: ``CPUExecutionProvider`` -> ``ort-cpu``."""
    return "ort-" + provider.removesuffix("ExecutionProvider").lower()


def available_providers() -> list[str]:
    """The execution providers this onnxruntime offers (CUDA's libraries preloaded first).

    Raises:
        ImportError: onnxruntime is not installed.
    """
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # absent CUDA libraries show up as a missing EP
            ort.preload_dlls()
    return list(ort.get_available_providers())


def make_session(model: str | os.PathLike[str] | bytes,
                 providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
                 *, threads: int | None = None, optimization: str | None = None) -> Any:
    """An ``InferenceSession`` on ``model`` (a path, or a serialised model), quiet unless it fails.

    Args:
        model: the ONNX file or its bytes.
        providers: execution providers in order, each a name or ``(name, options)``.
        threads: intra-op threads (inter-op is then 1); None keeps onnxruntime's default.
        optimization: graph optimisation level, one of ``disabled``, ``basic``, ``extended``,
            ``all``; None keeps onnxruntime's default (``all``).

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: an unknown optimisation level.
        Exception: onnxruntime's own errors when the model cannot be loaded (callers turn them
            into their stage's error).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimization is not None:
        if optimization not in _LEVELS:
            raise ValueError(f"optimization must be one of {_LEVELS}, not {optimization!r}")
        level = ort.GraphOptimizationLevel
        options.graph_optimization_level = {
            "disabled": level.ORT_DISABLE_ALL, "basic": level.ORT_ENABLE_BASIC,
            "extended": level.ORT_ENABLE_EXTENDED, "all": level.ORT_ENABLE_ALL}[optimization]
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=list(providers))
