"""Tiny ONNX models built with onnx.helper, and bundles of them, for the bundle/verify/gate tests.

Independent of torch and of the exporter: expected outputs are computed with numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from subnet_export.bundle.write import write_bundle

__all__ = ["PARITY_OK", "gemm_model", "conv_model", "gemm_samples", "make_bundle"]

#: The shape of a parity report that passed, as far as the bundle reads it.
PARITY_OK: dict[str, Any] = {
    "passed": True,
    "backends": [{"name": "ort-cpu", "status": "passed",
                  "tolerance": {"atol": None, "rtol": None, "noise_factor": 4.0},
                  "comparisons": [{"output": "y", "max_abs_error": 2.5e-7, "passed": True}]}],
}


def _weights(in_features: int, out_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_features, in_features)).astype(np.float32)
    b = rng.standard_normal(out_features).astype(np.float32)
    return w, b


def gemm_model(path: Path, *, in_features: int = 4, out_features: int = 3, hidden: int = 0,
               opset: int = 17, external: bool = False, seed: int = 0) -> Path:
    """Write ``y = relu(x @ W.T + b)`` (optionally through a hidden Gemm) with a dynamic batch.

    ``external`` stores every initializer in ``<name>.data`` beside the model.
    """
    nodes, inits = [], []
    src, width = "x", in_features
    layers = [hidden, out_features] if hidden else [out_features]
    for i, out in enumerate(layers):
        w, b = _weights(width, out, seed + i)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes += [helper.make_node("Gemm", [src, f"W{i}", f"B{i}"], [f"g{i}"], transB=1),
                  helper.make_node("Relu", [f"g{i}"], [f"r{i}"])]
        src, width = f"r{i}", out
    nodes.append(helper.make_node("Identity", [src], ["y"]))
    graph = helper.make_graph(
        nodes, "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_features])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    if external:
        # onnx appends to an existing data file; start from an empty one.
        (path.parent / f"{path.name}.data").unlink(missing_ok=True)
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{path.name}.data",
                        size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def gemm_reference(x: np.ndarray, *, in_features: int = 4, out_features: int = 3, hidden: int = 0,
                   seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    """numpy forward of :func:`gemm_model` with the same arguments (float64: the oracle)."""
    width, x = in_features, x.astype(dtype)
    for i, out in enumerate([hidden, out_features] if hidden else [out_features]):
        w, b = _weights(width, out, seed + i)
        x = np.maximum(x @ w.T.astype(dtype) + b.astype(dtype), 0.0).astype(dtype)
        width = out
    return x


def gemm_samples(cases: int = 2, batch: int = 2, **kw: Any) -> dict[str, np.ndarray]:
    """Samples for :func:`gemm_model`: ``cases`` cases, the second and later with suffix keys."""
    rng = np.random.default_rng(123)
    out: dict[str, np.ndarray] = {}
    for k in range(cases):
        x = rng.standard_normal((batch + k, kw.get("in_features", 4))).astype(np.float32)
        suffix = "" if k == 0 else f".{k}"
        out[f"input{suffix}:x"] = x
        out[f"output{suffix}:y"] = gemm_reference(x, **kw)
        out[f"oracle{suffix}:y"] = gemm_reference(x, **kw, dtype=np.float64)
    return out


def conv_model(path: Path, *, opset: int = 17) -> Path:
    """Write ``y = relu(conv3x3(x))`` on ``[N, 1, 5, 5]`` with a dynamic ``N``."""
    w = np.linspace(-1, 1, 9, dtype=np.float32).reshape(1, 1, 3, 3)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 5, 5])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def make_bundle(tmp: Path, name: str = "bundle", *, external: bool = False,
                parity: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                force: bool = False, **model_kw: Any):
    """Export a Gemm model into ``tmp/src-<name>`` and bundle it at ``tmp/<name>``.

    Returns ``(bundle_dir, manifest)``.
    """
    src = tmp / f"src-{name}"
    src.mkdir(exist_ok=True)
    model = gemm_model(src / "net.onnx", external=external, **model_kw)
    sample_kw = {k: v for k, v in model_kw.items() if k in ("in_features", "out_features",
                                                            "hidden", "seed")}
    manifest = write_bundle(
        tmp / name, model_path=model, arch={"width": model_kw.get("out_features", 3)},
        parity=PARITY_OK if parity is None else parity, samples=gemm_samples(**sample_kw),
        extra={"source_checkpoint_sha256": "ab" * 32, **(extra or {})}, force=force,
    )
    return tmp / name, manifest
