"""Symbolic axes of an export: checked, sized on the example inputs, phrased per exporter.

The axes are ``{input name: {axis: dim name}}``; one name is one symbolic dimension across all
inputs (one ``torch.export.Dim`` for the dynamo exporter, one ``dim_param`` in the graph).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
import torch

from ..errors import InputError

__all__ = [
    "DynamicAxes",
    "dynamo_shapes",
    "example_sizes",
    "expand_inputs",
    "resolve_axes",
    "specialised_axes",
    "torchscript_axes",
]

DynamicAxes = Mapping[str, Mapping[int, str]]


def resolve_axes(dynamic_axes: DynamicAxes | bool | None, inputs: tuple[torch.Tensor, ...],
                 in_names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """Check ``dynamic_axes`` against the inputs; return them with axes made non-negative.

    Args:
        dynamic_axes: ``{input name: {axis: dim name}}``; ``True`` stands for ``{0: "batch"}``
            on every input with a dimension, ``False``/``None`` for no symbolic axis.
        inputs: the example inputs, one per name.
        in_names: the graph input names.

    Returns:
        ``{input name: {axis: dim name}}`` holding only inputs with a symbolic axis.

    Raises:
        InputError: an unknown input name, an axis out of range, a dim name that is not an
            identifier, or one name given to axes of different sizes in the example inputs.
    """
    if isinstance(dynamic_axes, bool):
        return ({n: {0: "batch"} for n, t in zip(in_names, inputs) if t.ndim >= 1}
                if dynamic_axes else {})
    given = dict(dynamic_axes or {})
    unknown = [n for n in given if n not in in_names]
    if unknown:
        raise InputError(f"dynamic axes name {', '.join(map(repr, unknown))}, which "
                         f"{'is not an input' if len(unknown) == 1 else 'are not inputs'}; "
                         f"the inputs are {', '.join(map(repr, in_names))}")
    out: dict[str, dict[int, str]] = {}
    for name, tensor in zip(in_names, inputs):
        own: dict[int, str] = {}
        for axis, dim in dict(given.get(name) or {}).items():
            index = _axis(name, tensor, axis)
            if not isinstance(dim, str) or not dim.isidentifier():
                raise InputError(f"dynamic axis {axis} of input {name!r} is named {dim!r}; a dim "
                                 "name must be an identifier (letters, digits, _), e.g. 'seq'")
            if own.get(index, dim) != dim:
                raise InputError(f"axis {index} of input {name!r} is named twice "
                                 f"({own[index]!r} and {dim!r})")
            own[index] = dim
        if own:
            out[name] = own
    example_sizes(out, inputs, in_names)
    return out


def _axis(name: str, tensor: torch.Tensor, axis: object) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not (
            -tensor.ndim <= axis < tensor.ndim):
        raise InputError(f"dynamic axis {axis!r} of input {name!r} is out of range: the input "
                         f"has shape {tuple(tensor.shape)}, so axes 0..{tensor.ndim - 1}")
    return axis % tensor.ndim


def example_sizes(axes: Mapping[str, Mapping[int, str]], inputs: tuple[torch.Tensor, ...],
                  in_names: tuple[str, ...]) -> dict[str, int]:
    """The example size of each dim name: its axes' size, at least 2.

    torch.export specialises a dimension of size 1 (and 0), so such a dim is traced at 2.

    Raises:
        InputError: one name on axes whose example sizes differ (other than a size of 1).
    """
    seen: dict[str, dict[tuple[str, int], int]] = {}
    for name, tensor in zip(in_names, inputs):
        for axis, dim in axes.get(name, {}).items():
            seen.setdefault(dim, {})[(name, axis)] = int(tensor.shape[axis])
    sizes = {}
    for dim, where in seen.items():
        big = sorted(set(where.values()) - {0, 1})
        if len(big) > 1:
            found = ", ".join(f"axis {a} of {n!r} is {s}" for (n, a), s in where.items())
            raise InputError(f"dim {dim!r} names axes of different sizes in the example inputs "
                             f"({found}); one name is one size: rename one or resize the input")
        sizes[dim] = big[0] if big else 2
    return sizes


def expand_inputs(axes: Mapping[str, Mapping[int, str]], inputs: tuple[torch.Tensor, ...],
                  in_names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """``inputs`` with each size-1 symbolic axis repeated to its dim's example size.

    Repeating (not drawing new values) keeps integer inputs such as token ids valid.
    """
    sizes = example_sizes(axes, inputs, in_names)
    out = []
    for name, tensor in zip(in_names, inputs):
        shape = list(tensor.shape)
        for axis, dim in axes.get(name, {}).items():
            if shape[axis] == 1:
                shape[axis] = sizes[dim]
        out.append(tensor if shape == list(tensor.shape)
                   else tensor.expand(*shape).contiguous())
    return tuple(out)


def dynamo_shapes(axes: Mapping[str, Mapping[int, str]], in_names: tuple[str, ...]
                  ) -> tuple[dict[int, torch.export.Dim] | None, ...]:
    """``dynamic_shapes`` for ``torch.onnx.export(dynamo=True)``: one ``Dim`` per dim name."""
    dims = {d: torch.export.Dim(d) for own in axes.values() for d in own.values()}
    return tuple({a: dims[d] for a, d in axes[n].items()} if n in axes else None
                 for n in in_names)


def torchscript_axes(axes: Mapping[str, Mapping[int, str]], out_names: tuple[str, ...]
                     ) -> dict[str, dict[int, str]]:
    """``dynamic_axes`` for the TorchScript exporter.

    The inputs' axes, and axis 0 of every output when some input's axis 0 is symbolic (the
    batch), under that input's dim name.
    """
    out = {n: dict(own) for n, own in axes.items()}
    batch = next((own[0] for own in axes.values() if 0 in own), None)
    if batch is not None:
        out.update({n: {0: batch} for n in out_names if n not in out})
    return out


def specialised_axes(model: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]]
                     ) -> list[tuple[str, int, str, int]]:
    """Requested symbolic axes the graph's inputs hold as fixed sizes.

    torch.onnx's dynamo exporter re-exports with torch.export's suggested fixes when the model
    contradicts a dynamic dim, so a dim the model needs fixed comes back silently fixed.

    Returns:
        ``(input name, axis, dim name, fixed size)`` for each such axis.
    """
    graph_inputs = {vi.name: vi for vi in model.graph.input}
    fixed = []
    for name, own in axes.items():
        vi = graph_inputs.get(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, dim in sorted(own.items()):
            if axis < len(dims) and dims[axis].WhichOneof("value") == "dim_value":
                fixed.append((name, axis, dim, dims[axis].dim_value))
    return fixed
