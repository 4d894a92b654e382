"""Writing the exported file: run a step with a named error, normalise the graph, save it."""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import onnx

from ..errors import ExportError, SubnetExportError

__all__ = ["normalise", "save", "step"]

# node metadata that embeds source paths and line numbers: dropped so the bytes do not depend on
# where the code lives; the module scopes that locate.py reads are kept
_DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")

_T = TypeVar("_T")

_STEP_HINTS = {
    "trace": "the error details (--debug) hold the traceback",
    "load": "the exporter wrote an unreadable file; check disk space and the onnx version",
    "save": "check disk space and write permission on the target folder",
    "check": "the exported graph is invalid; try another opset or exporter",
}


def step(name: str, fn: Callable[[], _T],
         describe: Callable[[Exception], str] | None = None) -> _T:
    """Run one export step; any failure becomes an ExportError naming the step.

    Args:
        name: the step, a key of ``_STEP_HINTS``.
        fn: the step itself.
        describe: phrases a failure as one line (``trace`` passes one built on
            :func:`~subnet_export.export.diagnose.diagnose_failure`); without it, or when it
            fails itself, the message is the exception's text and the step's hint.

    Returns:
        What ``fn`` returns.

    Raises:
        ExportError: ``fn`` failed. The message reads ``export: step '<name>' failed: ...``; the
            attribute ``details`` holds the exception's full text and traceback (the CLI prints
            it under ``--debug`` only).
        SubnetExportError: raised by ``fn`` itself; passed on unchanged.
    """
    try:
        return fn()
    except SubnetExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure of a step is reported the same way
        message = None
        if describe is not None:
            with contextlib.suppress(Exception):
                message = describe(exc)
        if message is None:
            message = f"{exc}. {_STEP_HINTS[name]}"
        error = ExportError(f"export: step '{name}' failed: {message}")
        error.details = "".join(traceback.format_exception(exc))  # type: ignore[attr-defined]
        raise error from exc


def save(model: onnx.ModelProto, tmpdir: Path, staged: Path, data_name: str | None) -> None:
    """Write ``model`` to ``staged``: inline, or with its weights in ``data_name`` beside it."""
    external = [t for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    locations = {e.value for t in external for e in t.external_data if e.key == "location"}
    if data_name is None or len(locations) != 1:
        onnx.load_external_data_for_model(model, str(tmpdir))
        for tensor in model.graph.initializer:  # the loader marks what it read: unmark it,
            tensor.ClearField("data_location")  # so an inline tensor is written one way
        onnx.save_model(model, str(staged), save_as_external_data=data_name is not None,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=0)
        return
    # One data file already: rename it and point the tensors at it, offsets unchanged.
    os.replace(tmpdir / locations.pop(), tmpdir / data_name)
    for tensor in external:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    onnx.save_model(model, str(staged))


def normalise(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Remove what differs between runs or machines and stamp our metadata, sorted by key."""
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
        kept = [(p.key, p.value) for p in node.metadata_props
                if p.key not in _DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
    merged = {p.key: p.value for p in model.metadata_props}
    merged.update(props)
    del model.metadata_props[:]
    for key in sorted(merged):
        model.metadata_props.add(key=key, value=merged[key])
