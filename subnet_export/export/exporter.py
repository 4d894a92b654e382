"""Export a materialized (plain) model to ONNX: one atomic, deterministic, checked file.

Stage order: trace with torch.onnx -> graph passes (drop all-zero Conv biases, name nodes by
module path) -> normalise (strip what varies between runs and machines, stamp metadata) -> save
to a temporary folder beside the target -> ``onnx.checker`` -> rename.
See docs/export.md for the names, opset, external-data and determinism rules.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..errors import ExportError
from ..version import __version__
from .graph import GraphFacts
from .naming import name_nodes_by_module
from .passes import strip_zero_conv_bias
from .reuse import TemplateStore, keep, reuse
from .trace import trace
from .writing import normalise, save, step

__all__ = [
    "ARCH_KEY",
    "CHECKPOINT_KEY",
    "EXPORTER_KEY",
    "VERSION_KEY",
    "ExportResult",
    "default_names",
    "export_onnx",
    "state_bytes",
]

ARCH_KEY = "subnet_export.arch"
VERSION_KEY = "subnet_export.version"
CHECKPOINT_KEY = "subnet_export.checkpoint_sha256"
EXPORTER_KEY = "subnet_export.exporter"

# protobuf cannot serialise a message over 2 GiB; keep a margin for the graph itself
_EXTERNAL_THRESHOLD = 2**31 - 2**26


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        input_names: graph input names, in the order of ``example_inputs``.
        output_names: graph output names, in the order the model returns its outputs.
        opset: the default-domain opset of the file.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        initializer_bytes: bytes held by the graph's initializers.
        state_bytes: bytes of the plain model's parameters and persistent buffers that a forward
            can read (see :func:`state_bytes`). With the dynamo exporter both numbers are equal:
            the graph holds exactly the active path's weights.
        external_data: path of the external-data file, or None when the model is one file.
        metadata: the ``metadata_props`` written into the file.
        unused: (dynamo) names of plain-model tensors the graph never reads, so the file does not
            hold them: weights of a dead branch of the arch, e.g. a cell node only a zero op
            reads. ``initializer_bytes + bytes(unused) == state_bytes``.
        graph: the file's :class:`~subnet_export.export.graph.GraphFacts`, read from the model
            as it was saved, so no later stage reads the file again for them.
        route: ``"traced"`` (torch.onnx ran) or ``"template"`` (a stored trace of the same
            topology, fitted to this model: ``template.py``).
        template_notes: why no stored template was taken, one line per template tried.
    """

    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int
    exporter: str
    initializer_bytes: int
    state_bytes: int
    external_data: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    unused: tuple[str, ...] = ()
    graph: GraphFacts | None = None
    route: str = "traced"
    template_notes: tuple[str, ...] = ()


def default_names(prefix: str, count: int) -> tuple[str, ...]:
    """The documented default I/O names: ``prefix`` for one tensor, ``prefix_0..n-1`` for more."""
    return (prefix,) if count == 1 else tuple(f"{prefix}_{i}" for i in range(count))


def state_bytes(plain: nn.Module) -> int:
    """Bytes of ``plain``'s parameters and persistent buffers, each shared tensor counted once.

    BatchNorm's ``num_batches_tracked`` is left out: it is a training counter that an eval-mode
    forward never reads, so no exporter puts it in the graph.
    """
    return sum(t.numel() * t.element_size() for t in _state_tensors(plain).values())


def _state_tensors(plain: nn.Module) -> dict[str, torch.Tensor]:
    # state_dict(keep_vars=True) holds parameters and persistent buffers, not transient ones
    seen: set[int] = set()
    out = {}
    for name, tensor in plain.state_dict(keep_vars=True).items():
        if name.endswith("num_batches_tracked") or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out[name] = tensor
    return out


def export_onnx(
    plain: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike[str],
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
    arch: Mapping[str, Any] | None = None,
    checkpoint_sha256: str | None = None,
    external_data: bool | None = None,
    templates: TemplateStore | None = None,
) -> ExportResult:
    """Export a plain model to one ONNX file, checked and written atomically.

    Inputs are named ``input`` (one tensor) or ``input_0..n-1``; outputs ``output`` or
    ``output_0..n-1``, in the order the model returns them, unless names are given. With
    ``dynamic_batch`` dimension 0 of every input and output is the symbolic ``batch``.
    The dynamo exporter runs without torch's graph optimiser, so BatchNorm stays a node and every
    initializer is one parameter or buffer under its ``state_dict`` name (onnxruntime fuses
    Conv+BN itself when it loads the model).

    Args:
        plain: the materialized model; it is put in eval mode.
        example_inputs: one tensor or a sequence of tensors, batch first.
        path: the target ``.onnx`` file; its folder must exist.
        exporter: ``"dynamo"`` (torch.onnx with ``dynamo=True``) or ``"torchscript"`` (legacy).
        opset: ONNX opset; None keeps torch's default.
        dynamic_batch: make dimension 0 symbolic.
        dynamic_axes: more symbolic axes, ``{input name: {axis: dim name}}`` (e.g.
            ``{"ids": {1: "seq"}}``); one name is one dimension across inputs.
        input_names: graph input names, one per example input.
        output_names: graph output names, one per model output.
        metadata: extra ``metadata_props`` (string to string).
        arch: the architecture, stored as sorted JSON under ``subnet_export.arch``.
        checkpoint_sha256: sha256 of the source checkpoint, stored when known.
        external_data: True/False forces it; None stores weights in ``<name>.data`` only when the
            model would not fit one protobuf (2 GB).
        templates: (dynamo) traces of earlier models to reuse for one of the same topology
            (``reuse.py``); a fresh trace is added to it. None: always trace.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: tracing, saving or the checker failed; the message names the step.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(f"export: folder {target.parent} does not exist; create it first")
    if exporter not in ("dynamo", "torchscript"):
        raise ExportError(f"export: unknown exporter {exporter!r}; use 'dynamo' or 'torchscript'")
    inputs, in_names, out_names = _io(plain, example_inputs, input_names, output_names)
    props = {VERSION_KEY: __version__, EXPORTER_KEY: exporter, **dict(metadata or {})}
    if arch is not None:
        props[ARCH_KEY] = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    if checkpoint_sha256:
        props[CHECKPOINT_KEY] = checkpoint_sha256
    expected = state_bytes(plain)
    external = expected > _EXTERNAL_THRESHOLD if external_data is None else external_data

    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        raw = tmpdir / "raw.onnx"
        axes = _axes(inputs, in_names, dynamic_batch, dynamic_axes)
        # Weights stay in the exporter's data file until the end: the graph, read once by the
        # trace's own checks, is edited without them, so no step holds the model twice.
        state = _state_tensors(plain)
        pick = reuse(templates, plain, state, inputs, exporter, opset, axes, in_names, out_names)
        model = pick.model
        if model is None:
            try:
                model = step("trace", lambda: trace(plain, inputs, raw, exporter, opset, axes,
                                                    in_names, out_names))
                keep(templates, pick, model, tmpdir, set(state))
            finally:
                if templates is not None:
                    templates.done()
        strip_zero_conv_bias(model)
        name_nodes_by_module(model)
        normalise(model, props)
        staged = tmpdir / target.name
        data_name = f"{target.name}.data" if external else None
        step("save", lambda: save(model, tmpdir, staged, data_name))
        facts = GraphFacts.of(model)  # the model as saved: external data where it now lives
        step("check", lambda: onnx.checker.check_model(str(staged), full_check=True))
        if data_name:
            os.replace(tmpdir / data_name, target.parent / data_name)
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    return ExportResult(
        path=target,
        input_names=in_names,
        output_names=out_names,
        opset=facts.opset,
        exporter=exporter,
        initializer_bytes=facts.initializer_bytes,
        state_bytes=expected,
        external_data=target.parent / data_name if data_name else None,
        metadata=props,
        unused=_unused(plain, facts) if exporter == "dynamo" else (),
        graph=facts,
        route="traced" if pick.model is None else "template",
        template_notes=tuple(pick.reasons),
    )


def _io(plain: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
        input_names: Sequence[str] | None, output_names: Sequence[str] | None,
        ) -> tuple[tuple[torch.Tensor, ...], tuple[str, ...], tuple[str, ...]]:
    """The example inputs as a tuple and the graph's input and output names, checked."""
    inputs = ((example_inputs,) if isinstance(example_inputs, torch.Tensor)
              else tuple(example_inputs))
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ExportError("export: example_inputs must be a tensor or a non-empty tuple of tensors")
    plain.eval()
    with torch.no_grad():
        outputs = plain(*inputs)
    n_out = 1 if isinstance(outputs, torch.Tensor) else len(outputs)
    if not isinstance(outputs, torch.Tensor) and not (
        isinstance(outputs, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in outputs)
    ):
        raise ExportError("export: the model must return a tensor or a tuple of tensors")
    in_names = tuple(input_names) if input_names else default_names("input", len(inputs))
    out_names = tuple(output_names) if output_names else default_names("output", n_out)
    if len(in_names) != len(inputs) or len(out_names) != n_out:
        raise ExportError(
            f"export: {len(inputs)} inputs/{n_out} outputs but {len(in_names)}/{len(out_names)} "
            "names given; pass one name per tensor"
        )
    return inputs, in_names, out_names


def _axes(inputs: tuple[torch.Tensor, ...], in_names: tuple[str, ...], dynamic_batch: bool,
          extra: Mapping[str, Mapping[int, str]] | None) -> dict[str, dict[int, str]]:
    unknown = sorted(set(extra or {}) - set(in_names))
    if unknown:
        raise ExportError(f"export: dynamic_axes names {unknown[0]!r}, which is not an input; "
                          f"the inputs are {', '.join(in_names)}")
    axes: dict[str, dict[int, str]] = {}
    for tensor, name in zip(inputs, in_names):
        own = {0: "batch"} if dynamic_batch and tensor.ndim else {}
        own.update({int(k): str(v) for k, v in (extra or {}).get(name, {}).items()})
        if own:
            axes[name] = own
    return axes


def _unused(plain: nn.Module, facts: GraphFacts) -> tuple[str, ...]:
    # The dynamo export keeps state_dict names for initializers (optimize=False), so a plain
    # tensor missing from them is one the traced graph never reads.
    return tuple(sorted(name for name in _state_tensors(plain)
                        if name not in facts.initializer_names))
