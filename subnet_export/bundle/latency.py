"""onnxruntime CPU latency of two bundles, alternated in one process and compared as a ratio.

A ratio, not milliseconds: CI machines differ in speed, but both models see the same machine,
the same load and the same thermal state when their runs are interleaved.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..runtime import make_session
from .layout import SAMPLES_NAME
from .manifest import BundleManifest
from .samples import read_samples

__all__ = ["LatencyResult", "bundle_feed", "compare_latency"]


@dataclass(frozen=True)
class LatencyResult:
    """Medians of the timed runs, in milliseconds, and their ratio (bundle / baseline)."""

    median_ms: float
    baseline_median_ms: float
    ratio: float
    batch_size: int
    runs: int


def bundle_feed(bundle_dir: Path, manifest: BundleManifest, batch_size: int) -> dict[str, Any]:
    """Build a feed from the bundle's first sample case, its batch dim resized to ``batch_size``.

    Sample data rather than random data: some models take indices or masks whose values matter.
    A static first dim is kept as it is.
    """
    try:
        case = read_samples(bundle_dir / SAMPLES_NAME)[0]
    except ValueError as e:
        raise BundleError(f"bundle {bundle_dir}: {e}") from e
    feed: dict[str, Any] = {}
    for io in manifest.inputs:
        array = case.inputs[io["name"]]
        shape = io["shape"]
        dynamic_batch = array.ndim > 0 and (shape is None or not isinstance(shape[0], int))
        if dynamic_batch and array.shape[0] != batch_size:
            array = np.take(array, np.arange(batch_size) % array.shape[0], axis=0)
        feed[io["name"]] = np.ascontiguousarray(array)
    return feed


def _session(model: Path, threads: int) -> Any:
    try:
        return make_session(model, threads=threads)
    except Exception as e:  # onnxruntime's own exception types
        raise BundleError(f"onnxruntime cannot load {model}: {e}") from e


def compare_latency(model: Path, feed: dict[str, Any], baseline_model: Path,
                    baseline_feed: dict[str, Any], *, runs: int, warmup: int, threads: int,
                    batch_size: int) -> LatencyResult:
    """Time two models alternately on onnxruntime CPU and compare their medians.

    The order within each pair flips every iteration, so neither model always runs on a cache
    the other just warmed.

    Args:
        model: the candidate model file.
        feed: its inputs.
        baseline_model: the baseline model file.
        baseline_feed: the baseline's inputs.
        runs: timed runs of each model.
        warmup: untimed runs of each model first.
        threads: onnxruntime intra-op threads.
        batch_size: recorded in the result.

    Returns:
        The medians and ``ratio = median / baseline median``.

    Raises:
        BundleError: a model does not load or does not run on its feed.
    """
    sessions = [(_session(model, threads), feed),
                (_session(baseline_model, threads), baseline_feed)]
    times: list[list[int]] = [[], []]
    try:
        for _ in range(warmup):
            for sess, f in sessions:
                sess.run(None, f)
        for i in range(runs):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for k in order:
                sess, f = sessions[k]
                start = time.perf_counter_ns()
                sess.run(None, f)
                times[k].append(time.perf_counter_ns() - start)
    except Exception as e:  # onnxruntime's own exception types
        raise BundleError(f"a model does not run on its latency inputs: {e}") from e
    med, base = (statistics.median(t) / 1e6 for t in times)
    # perf_counter_ns never reports 0 for a real run, but guard the division anyway.
    ratio = med / base if base > 0 else float("inf")
    return LatencyResult(med, base, ratio, batch_size, runs)
