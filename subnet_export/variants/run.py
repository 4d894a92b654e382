"""Running a model over a batch-first set of inputs in onnxruntime, and judging its outputs.

Shared by the variant builder and ``verify`` (numpy and onnxruntime only, never torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..runtime import make_session
from .stats import OutputStats, VariantLimits, output_stats

__all__ = ["judge", "pad", "run_set", "set_stats"]


def run_set(model: str | os.PathLike[str], inputs: Mapping[str, np.ndarray],
            output_names: Sequence[str], *, batch: int = 32,
            providers: Sequence[str] = ("CPUExecutionProvider",)) -> dict[str, np.ndarray]:
    """The outputs of ``model`` (``.onnx`` or ``.ort``) on ``inputs``, run ``batch`` at a time.

    A model whose batch dimension is fixed is fed that many samples per run. onnxruntime's own
    exceptions pass through (callers name the stage).
    """
    session = make_session(model, providers)
    first = session.get_inputs()[0].shape
    step = first[0] if first and isinstance(first[0], int) and first[0] > 0 else batch
    n = len(next(iter(inputs.values())))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in output_names}
    for start in range(0, n, step):
        feed = {k: pad(v[start:start + step], step) for k, v in inputs.items()}
        size = min(step, n - start)
        for name, value in zip(output_names, session.run(list(output_names), feed)):
            parts[name].append(np.asarray(value)[:size])
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def pad(chunk: np.ndarray, step: int) -> np.ndarray:
    """A short last chunk padded to ``step`` samples by repeating its last one."""
    if len(chunk) >= step:
        return chunk
    return np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])


def set_stats(reference: Mapping[str, np.ndarray],
              got: Mapping[str, np.ndarray]) -> list[OutputStats]:
    """One :class:`OutputStats` per output of ``reference``."""
    return [output_stats(name, np.asarray(reference[name]), got[name]) for name in reference]


def judge(stats: Sequence[OutputStats], limits: VariantLimits) -> list[str]:
    """Every bound of ``limits`` the statistics break (empty: the variant passes)."""
    return [f for s in stats for f in limits.failures(s)]
