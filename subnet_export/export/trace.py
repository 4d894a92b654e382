"""Tracing a plain model with torch.onnx, quietly: the dynamo exporter or the TorchScript one.

Before the trace: the opset is one the exporter really writes, the symbolic axes fit the
inputs. During it: nothing the exporter prints reaches the terminal (fds 1 and 2 included).
After it: the file has the opset asked for and every symbolic axis is still symbolic; torch.onnx
would otherwise hand back opset 18 or a fixed size without a word.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..errors import ExportError
from .capture import CapturedOutput
from .diagnose import Failure, check_opset, default_opset, diagnose_failure
from .dynamic import (
    DynamicAxes,
    dynamo_shapes,
    expand_inputs,
    resolve_axes,
    specialised_axes,
    torchscript_axes,
)
from .writing import step

__all__ = ["trace"]


def trace(plain: nn.Module, inputs: tuple[torch.Tensor, ...], raw: Path, exporter: str,
          opset: int | None, dynamic_axes: DynamicAxes | bool | None,
          in_names: tuple[str, ...], out_names: tuple[str, ...]) -> onnx.ModelProto:
    """Write the raw export of ``plain`` on ``inputs`` to ``raw`` (weights in a data file).

    Args:
        plain: the model, in eval mode.
        inputs: example inputs, one per name. A size-1 symbolic axis is traced at 2 (its values
            repeated), as torch.export would fix a size of 1.
        raw: the file to write.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        opset: the default-domain opset; None for torch's default (see ``default_opset``).
        dynamic_axes: ``{input name: {axis: dim name}}``, one name being one symbolic dim
            across inputs; ``True`` means ``{0: "batch"}`` on every input with a dimension,
            ``False``/``None`` none. With TorchScript, axis 0 of every output gets the batch's
            name too; the dynamo exporter names output dims itself (``batch``, ``seq``,
            ``(seq//2)``...).
        in_names: graph input names.
        out_names: graph output names.

    Returns:
        The raw model as checked here, read once without its weights (they stay in the data
        file beside ``raw``), for the caller to edit and save.

    Raises:
        InputError: an opset the exporter cannot write, or dynamic axes that do not fit the
            inputs (unknown name, axis out of range).
        ExportError: the export failed (one-line message from
            :func:`~subnet_export.export.diagnose.diagnose_failure`), or wrote another opset
            than asked, or fixed a symbolic axis. ``details`` holds torch's full message and
            what the exporter printed; ``category`` one of ``diagnose.CATEGORIES``.
    """
    if opset is not None:
        check_opset(exporter, opset)
    opset = default_opset(exporter) if opset is None else opset
    axes = resolve_axes(dynamic_axes, inputs, in_names)
    inputs = expand_inputs(axes, inputs, in_names)
    captured = CapturedOutput()
    found: list[Failure] = []

    def describe(exc: Exception) -> str:
        found.append(diagnose_failure(exc, plain, inputs, exporter, opset))
        return found[-1].message

    try:
        with captured:
            step("trace", lambda: _export(plain, inputs, raw, exporter, opset, axes, in_names,
                                          out_names), describe=describe)
    except ExportError as err:
        err.details = captured.text + getattr(err, "details", "")  # type: ignore[attr-defined]
        err.category = found[-1].category if found else "other"  # type: ignore[attr-defined]
        raise
    model = step("load", lambda: onnx.load(str(raw), load_external_data=False))
    _verify(model, exporter, opset, axes, captured.text)
    return model


def _export(plain: nn.Module, inputs: tuple[torch.Tensor, ...], raw: Path, exporter: str,
            opset: int, axes: dict[str, dict[int, str]], in_names: tuple[str, ...],
            out_names: tuple[str, ...]) -> None:
    kwargs: dict[str, Any] = {"input_names": list(in_names), "output_names": list(out_names),
                              "opset_version": opset}
    # no torch.no_grad() here: under it nn.MultiheadAttention takes a fused fast path that the
    # TorchScript exporter cannot translate
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            if axes:
                kwargs["dynamic_axes"] = torchscript_axes(axes, out_names)
            torch.onnx.export(plain, inputs, str(raw), dynamo=False, do_constant_folding=False,
                              **kwargs)
            return
        if axes:
            kwargs["dynamic_shapes"] = dynamo_shapes(axes, in_names)
        program = torch.onnx.export(plain, inputs, dynamo=True, optimize=False, verbose=False,
                                    **kwargs)
        program.save(str(raw), external_data=True)


def _verify(model: onnx.ModelProto, exporter: str, opset: int,
            axes: dict[str, dict[int, str]], printed: str) -> None:
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise _failed(f"the {exporter} exporter wrote opset {written}, not the requested "
                      f"{opset}, for this model; hint: pass opset {written} or use the other "
                      "exporter", "other", printed)
    fixed = specialised_axes(model, axes)
    if fixed:
        where = ", ".join(f"axis {axis} ({dim!r}) of input {name!r} to {size}"
                          for name, axis, dim, size in fixed)
        dims = ", ".join(sorted({repr(dim) for _, _, dim, _ in fixed}))
        raise _failed(f"the model fixes dynamic {where}; hint: drop {dims} from the dynamic "
                      "axes, or make the forward work for any size there (no fixed-size "
                      "parameter added along it, no reshape to constant sizes)",
                      "dynamic_shape", printed)


def _failed(message: str, category: str, details: str) -> ExportError:
    error = ExportError(f"export: step 'trace' failed: {message}")
    error.details = details  # type: ignore[attr-defined]
    error.category = category  # type: ignore[attr-defined]
    return error


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    # torch.onnx logs a warning per missing optional package (torchvision ops) on every export
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
