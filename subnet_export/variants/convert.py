"""FP16 and INT8 models from a float32 ONNX model, by onnxruntime's own converters.

- FP16: ``onnxruntime.transformers.float16.convert_float_to_float16``, float32 inputs and
  outputs kept, the converter's block list plus the op types and modules asked to stay float32.
- INT8: ``onnxruntime.quantization``: ``quant_pre_process`` (BatchNorm folded into Conv, shapes
  inferred), then static QDQ quantization (uint8 activations, int8 per-channel weights,
  calibrated on the given feeds, its ranges cached so a later call on the same model skips the
  calibration runs), or dynamic quantization of MatMul/Gemm weights for transformers.

A model whose weights live in an external-data file (a model over 2 GiB) gets variants in the
same form: ``model.int8.onnx`` and its ``model.int8.onnx.data`` beside it; shapes are then
inferred from the file, as ONNX's in-memory inference stops at 2 GiB.

Modules are named as ``locate`` names them: the node names of an exported model are
``<module path>/<op type>`` (``export/naming.py``), so ``blocks.1`` keeps every node of
``blocks.1`` and of its submodules in float. This module writes no quantizer of its own.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import InputError

__all__ = ["Fp16Settings", "Int8Settings", "data_file", "has_external_data", "make_fp16",
           "make_int8", "module_nodes", "module_of", "weighted_modules"]

#: Ops that carry a layer's weights: the ones sensitivity quantizes one module at a time.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Fp16Settings:
    """How the FP16 variant is made.

    Attributes:
        keep_ops: op types kept float32 besides onnxruntime's default block list.
        exclude: module paths kept float32.
    """

    keep_ops: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Int8Settings:
    """How the INT8 variant is made.

    Attributes:
        per_channel: one weight scale per output channel.
        reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only), onnxruntime's
            uint8 x int8 kernels can saturate their 16-bit intermediate sums and lose the
            model (docs/edge.md shows a digits net at 6.7 dB SNR, top-1 90% instead of 98%,
            without it); the 7-bit weights cost about 4 dB where VNNI would not need them.
        dynamic: dynamic quantization of MatMul/Gemm weights (transformers) instead of static
            QDQ; needs no calibration.
        calibration: ``minmax``, ``entropy`` or ``percentile`` (onnxruntime's methods).
        exclude: module paths kept float32.
    """

    per_channel: bool = True
    reduce_range: bool = True
    dynamic: bool = False
    calibration: str = "minmax"
    exclude: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["exclude"] = list(self.exclude)
        return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # onnxruntime's quantizer logs advice on the root logger and prints calibration progress;
    # neither belongs on our stdout (``--json`` owns it) or stderr
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def has_external_data(path: Path) -> bool:
    """Whether the model at ``path`` keeps tensors in an external-data file."""
    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def data_file(target: Path) -> Path:
    """Where a variant written with external data keeps it: ``<file>.data`` beside it."""
    return target.with_name(target.name + ".data")


def _fresh(target: Path) -> None:
    # ONNX appends to an existing external-data file: a rebuilt variant must start empty
    target.unlink(missing_ok=True)
    data_file(target).unlink(missing_ok=True)


def module_of(node: onnx.NodeProto) -> str:
    """The module path a node is named after (``""`` for the root or an unnamed node)."""
    return node.name.rpartition("/")[0]


def _in_module(node: onnx.NodeProto, paths: Sequence[str]) -> bool:
    module = module_of(node)
    return any(module == p or module.startswith(p + ".") for p in paths)


def module_nodes(model: onnx.ModelProto, paths: Sequence[str]) -> list[str]:
    """Names of the nodes of ``model`` inside the modules ``paths`` (submodules included)."""
    return [n.name for n in model.graph.node if n.name and _in_module(n, paths)]


def weighted_modules(model: onnx.ModelProto) -> list[str]:
    """Module paths holding a weighted op (Conv, Gemm, MatMul), in graph order."""
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and module_of(node):
            seen.setdefault(module_of(node))
    return list(seen)


def check_modules(model: onnx.ModelProto, paths: Sequence[str], what: str) -> None:
    """Raise :class:`InputError` for a module path that names no node of ``model``."""
    modules = sorted({module_of(n) for n in model.graph.node if module_of(n)})
    unknown = [p for p in paths if not module_nodes(model, [p])]
    if unknown:
        raise InputError(f"{what}: no module {', '.join(map(repr, unknown))} in the model; "
                         f"modules are named as locate names them, e.g. "
                         f"{', '.join(modules[:6])}")


def make_fp16(source: Path, target: Path, settings: Fp16Settings,
              only: Sequence[str] | None = None) -> None:
    """Write the FP16 model of ``source`` to ``target`` (``only``: just these modules FP16)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    external = has_external_data(source)
    if external:  # in-memory shape inference stops at 2 GiB; the file-based one does not
        inferred = source.with_name(f".{target.name}.shapes.onnx")
        try:
            onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
            model = onnx.load(str(inferred))  # its data is read from beside the source
        finally:
            inferred.unlink(missing_ok=True)
    else:
        model = onnx.load(str(source))
    check_modules(model, settings.exclude, "--fp16-exclude")
    if only is None:
        blocked = module_nodes(model, settings.exclude)
    else:
        blocked = [n.name for n in model.graph.node if n.name and not _in_module(n, only)]
    with _quiet():
        half = convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=external,
            op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *settings.keep_ops}),
            node_block_list=blocked or None)
    _fresh(target)
    if external:
        onnx.save_model(half, str(target), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_file(target).name)
    else:
        onnx.save(half, str(target))


class _Feeds:
    """onnxruntime's ``CalibrationDataReader``: the calibration batches, once."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def prepare_int8(source: Path, target: Path) -> Path:
    """``quant_pre_process`` of ``source`` into ``target``; ``source`` itself when it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = has_external_data(source)
    _fresh(target)
    try:
        with _quiet():
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True,
                              save_as_external_data=external, all_tensors_to_one_file=True,
                              external_data_location=data_file(target).name)
    except Exception:  # a model onnxruntime's optimizer cannot prepare is quantized as it is
        return source
    return target


def make_int8(source: Path, target: Path, settings: Int8Settings,
              batches: Sequence[dict[str, np.ndarray]], cache: Path,
              only: Sequence[str] | None = None) -> None:
    """Write the INT8 model of ``source`` (prepared by :func:`prepare_int8`) to ``target``.

    Args:
        source: the float32 model to quantize.
        target: where the quantized model goes.
        settings: how; see :class:`Int8Settings`.
        batches: calibration feeds, ``{input name: array}`` per batch (static only).
        cache: onnxruntime's calibration cache: written by the first call, read by later ones.
        only: quantize only the nodes of these modules (per-layer sensitivity).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    model = onnx.load(str(source), load_external_data=False)  # node names are enough
    exclude = module_nodes(model, settings.exclude) or None
    include = None if only is None else module_nodes(model, only)
    common = dict(per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                  weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                  nodes_to_quantize=include, use_external_data_format=has_external_data(source))
    _fresh(target)
    with _quiet():
        if settings.dynamic:
            quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"],
                             **common)
            return
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[settings.calibration]
        quantize_static(str(source), str(target), _Feeds(batches),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        calibrate_method=method, calibration_cache_path=str(cache), **common)
