"""Helpers shared by the export benchmarks: the benchmarked subnets, graph figures, ORT latency.

- :func:`mobilenetv3_large` / :func:`autoformer_t`: a full-size supernet, the arch of a
  published-size subnet in it, and the hand-written plain model with its weights loaded;
- :func:`graph_stats`: node count by operator type, initializer bytes, file size of an ONNX file;
- :func:`alternated_latency`: onnxruntime CPU medians of several models, interleaved in one
  process so that they share the machine's load and thermal state.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Case", "alternated_latency", "autoformer_t", "graph_stats", "mobilenetv3_large",
           "ort_versions", "op_diff", "strip_zero_conv_bias"]

#: onnxruntime threads for latency: one, so that a neighbour's load on a shared 2-core machine
#: disturbs the figures less, and the ratio compares graphs, not thread scheduling.
ORT_THREADS = int(os.environ.get("BENCH_ORT_THREADS", "1"))


@dataclass
class Case:
    """One benchmarked subnet: its supernet, arch, materialized and hand-written plain models."""

    name: str
    supernet: Any
    arch: dict[str, Any]
    materialized: Any
    handwritten: Any
    input_shape: tuple[int, ...]


def mobilenetv3_large(calib_steps: int = 2) -> Case:
    """MobileNetV3-Large (224x224, 1000 classes) from the shipped Once-for-All space."""
    import subnet_export as se
    from models import ARCH_DIR, get_space

    from .plain_mobilenetv3 import MobileNetV3Large, load_from_materialized

    supernet = get_space("mobilenetv3").build(width_mult=1.0, num_classes=1000, resolution=224,
                                              calib_steps=calib_steps)
    arch = se.freeze(supernet, se.load_arch(ARCH_DIR / "mobilenetv3_large.json"))
    materialized = se.materialize(supernet, arch).eval()
    plain = MobileNetV3Large(1000).eval()
    load_from_materialized(plain, materialized)
    return Case("MobileNetV3-Large", supernet, dict(arch), materialized, plain, (1, 3, 224, 224))


#: An AutoFormer-T subnet with mixed per-layer choices (so the plain model must follow them).
AUTOFORMER_T_ARCH: dict[str, Any] = {
    "embed": 216, "depth": 13,
    **{f"layer{i}.heads": (4 if i % 3 else 3) for i in range(14)},
    **{f"layer{i}.mlp_ratio": (3.5 if i % 2 else 4.0) for i in range(14)},
}


def autoformer_t() -> Case:
    """An AutoFormer-T subnet (embed 216, 13 layers, 224x224 in 16x16 patches, 1000 classes)."""
    import subnet_export as se
    from models import get_space

    from .plain_vit import ViT, load_from_materialized

    supernet = get_space("autoformer").build(
        embed=(192, 216, 240), depths=(12, 13, 14), heads=(3, 4), head_dim=64, resolution=224,
        patch=16, num_classes=1000)
    arch = se.freeze(supernet, AUTOFORMER_T_ARCH)
    materialized = se.materialize(supernet, arch).eval()
    e = arch["embed"]
    layers = [(arch[f"layer{i}.heads"], int(e * arch[f"layer{i}.mlp_ratio"]))
              for i in range(arch["depth"])]
    plain = ViT(e, layers, head_dim=64, image=224, patch=16, num_classes=1000).eval()
    load_from_materialized(plain, materialized)
    return Case("AutoFormer-T subnet", supernet, dict(arch), materialized, plain,
                (1, 3, 224, 224))


def graph_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Node count by operator type (main graph and local functions), bytes and file size.

    ``file_bytes`` counts the ``.onnx`` file plus any external-data file next to it.
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    fn_ops = Counter(n.op_type for fn in model.functions for n in fn.node)
    init_bytes = 0
    for init in model.graph.initializer:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        init_bytes += int(np.prod(init.dims, dtype=np.int64)) * itemsize
    const_bytes = sum(len(a.t.raw_data) for n in model.graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.type == onnx.AttributeProto.TENSOR)
    files = [path] + [path.parent / p for p in _external_files(model)]
    return {
        "nodes": sum(ops.values()),
        "ops": dict(sorted(ops.items())),
        "function_nodes": sum(fn_ops.values()),
        "initializers": len(model.graph.initializer),
        "initializer_bytes": init_bytes,
        "constant_bytes": const_bytes,
        "file_bytes": sum(f.stat().st_size for f in files if f.exists()),
    }


def _external_files(model: Any) -> list[str]:
    out = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                out.add(entry.value)
    return sorted(out)


def op_diff(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, list[int]]:
    """``{op: [count in a, count in b]}`` for the ops whose counts differ."""
    return {op: [a.get(op, 0), b.get(op, 0)] for op in sorted(set(a) | set(b))
            if a.get(op, 0) != b.get(op, 0)}


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = ORT_THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def alternated_latency(models: Mapping[str, Path], input_shape: Sequence[int],
                       batches: Sequence[int] = (1, 8), runs: Mapping[int, int] | None = None,
                       warmup: int = 5, seed: int = 0) -> dict[str, Any]:
    """onnxruntime CPU latency of every model, interleaved; medians in ms and ratios to the first.

    In each round every model runs once, the order rotated round by round, so no model always
    runs right after the same neighbour. Every model gets the same input.

    Args:
        models: ``{label: onnx path}``; the first is the reference of the ratios.
        input_shape: the input's shape; dimension 0 is replaced by each batch size.
        batches: batch sizes.
        runs: timed rounds per batch size (default 60 at batch 1, 20 above).
        warmup: untimed rounds first.
        seed: seed of the input.
    """
    sessions = {label: _session(p) for label, p in models.items()}
    names = list(sessions)
    out: dict[str, Any] = {"threads": ORT_THREADS, "batches": {}}
    for batch in batches:
        n = (runs or {}).get(batch, 60 if batch == 1 else 20)
        x = np.random.default_rng(seed).standard_normal((batch, *input_shape[1:]),
                                                         dtype=np.float32)
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        times: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(warmup):
            for k in names:
                sessions[k].run(None, feeds[k])
        for i in range(n):
            shift = i % len(names)
            for k in names[shift:] + names[:shift]:
                start = time.perf_counter_ns()
                sessions[k].run(None, feeds[k])
                times[k].append((time.perf_counter_ns() - start) / 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        # spread: interquartile range relative to the median, to read ratios against noise
        iqr = {k: (np.percentile(v, 75) - np.percentile(v, 25)) / med[k] for k, v in times.items()}
        ref = med[names[0]]
        out["batches"][str(batch)] = {
            "runs": n,
            "median_ms": {k: round(v, 3) for k, v in med.items()},
            "iqr_rel": {k: round(float(v), 3) for k, v in iqr.items()},
            "ratio_to_first": {k: round(v / ref, 3) for k, v in med.items()},
        }
    return out


def ort_versions() -> dict[str, str]:
    """Versions of the export stack, for the docs."""
    import importlib

    out = {}
    for name in ("onnx", "onnxruntime", "onnxscript", "safetensors"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = "absent"
    return out


def strip_zero_conv_bias(model: Any) -> int:
    """The export's own pass (``subnet_export.export.passes``), for older files and baselines."""
    from subnet_export.export.passes import strip_zero_conv_bias as core_pass

    return core_pass(model)
