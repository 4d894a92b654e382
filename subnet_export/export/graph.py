"""Facts read from an ONNX graph: IO signature, opsets, ops, parameter count, external data.

Imports onnx (not onnxruntime, not torch). Models are read without their external data: every
fact here is in the protobuf itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import onnx

__all__ = [
    "DEFAULT_DOMAINS",
    "GraphFacts",
    "default_opset",
    "external_data_locations",
    "initializer_bytes",
    "input_names",
    "io_signature",
    "load_model",
    "op_types",
    "parameter_count",
    "subgraphs",
]

#: the names of ONNX's default operator domain
DEFAULT_DOMAINS = ("", "ai.onnx")


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX model's protobuf, leaving external data on disk.

    Raises:
        OSError: the file cannot be read.
        onnx.onnx_cpp2py_export.checker.ValidationError, google.protobuf.message.DecodeError:
            the bytes are not an ONNX model (callers turn these into their own errors).
    """
    return onnx.load(os.fspath(path), load_external_data=False)


def _value_info(vi: onnx.ValueInfoProto) -> dict[str, Any]:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        # Sequences, maps, optionals: keep the type's text, there is no single dtype/shape.
        return {"name": vi.name, "dtype": t.WhichOneof("value") or "unknown", "shape": None}
    tt = t.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except (KeyError, TypeError, ValueError):
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
    shape: list[int | str | None] | None = None
    if tt.HasField("shape"):
        shape = []
        for dim in tt.shape.dim:
            kind = dim.WhichOneof("value")
            shape.append(dim.dim_value if kind == "dim_value" else dim.dim_param if kind else None)
    return {"name": vi.name, "dtype": dtype, "shape": shape}


def io_signature(model: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the graph's inputs and outputs as ``{"name", "dtype", "shape"}`` dicts.

    Initializers listed among the inputs (old IR versions do this) are not inputs a caller feeds
    and are left out. A shape is ``None`` when the graph has none, and each dim is an int, a
    string (named dynamic dim such as ``"batch"``) or ``None`` (unknown).
    """
    inits = {init.name for init in model.graph.initializer}
    inputs = [_value_info(vi) for vi in model.graph.input if vi.name not in inits]
    outputs = [_value_info(vi) for vi in model.graph.output]
    return inputs, outputs


def input_names(model: onnx.ModelProto) -> list[str]:
    """The names of the inputs a caller feeds (graph inputs that are not initializers)."""
    return [io["name"] for io in io_signature(model)[0]]


def default_opset(model: onnx.ModelProto) -> int:
    """Return the opset of the default ONNX domain (0 if the model imports none)."""
    versions = [op.version for op in model.opset_import if op.domain in DEFAULT_DOMAINS]
    return max(versions, default=0)


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs a node holds in its attributes (If branches, Loop and Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == onnx.AttributeProto.TENSORS:
            yield from attr.tensors
    for sub in subgraphs(node):
        yield from _graph_tensors(sub)


def external_data_locations(model: onnx.ModelProto) -> list[str]:
    """Return the distinct relative paths of the model's external-data files, sorted.

    Raises:
        ValueError: a location is absolute or climbs out of the model's directory with ``..``;
            such a model would make a bundle read (or a device load) files outside itself.
    """
    tensors = list(_graph_tensors(model.graph))
    for fn in model.functions:
        for node in fn.node:
            tensors.extend(_node_tensors(node))
    locations: set[str] = set()
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        loc = entries.get("location", "")
        path = PurePosixPath(loc.replace("\\", "/"))
        if not loc or path.is_absolute() or ".." in path.parts or ":" in loc:
            raise ValueError(f"tensor {tensor.name!r} has unsafe external data location {loc!r}")
        locations.add(path.as_posix())
    return sorted(locations)


def _graph_ops(graph: onnx.GraphProto, functions: dict[tuple[str, str], Any],
               seen: set[tuple[str, str]], out: set[str]) -> None:
    for node in graph.node:
        _node_ops(node, functions, seen, out)


def _node_ops(node: onnx.NodeProto, functions: dict[tuple[str, str], Any],
              seen: set[tuple[str, str]], out: set[str]) -> None:
    key = (node.domain, node.op_type)
    if key in functions:
        # A model-local function is not an operator a runtime provides: count what it calls.
        if key not in seen:
            seen.add(key)
            for inner in functions[key].node:
                _node_ops(inner, functions, seen, out)
    else:
        default = node.domain in DEFAULT_DOMAINS
        out.add(node.op_type if default else f"{node.domain}::{node.op_type}")
    for sub in subgraphs(node):
        _graph_ops(sub, functions, seen, out)


def op_types(model: onnx.ModelProto) -> list[str]:
    """Return the operator types the model runs, sorted.

    Default-domain ops are bare (``"Conv"``); others are ``"domain::Op"``
    (``"com.microsoft::FusedMatMul"``). Ops inside subgraphs (If, Loop, Scan) and inside
    model-local functions are included; the local functions themselves are not.
    """
    functions = {(fn.domain, fn.name): fn for fn in model.functions}
    out: set[str] = set()
    _graph_ops(model.graph, functions, set(), out)
    return sorted(out)


def parameter_count(model: onnx.ModelProto) -> int:
    """Return the number of elements of the main graph's initializers.

    This counts buffers stored as initializers too (BatchNorm running statistics); a writer that
    knows the torch parameter count passes it instead.
    """
    total = sum(math.prod(init.dims) for init in model.graph.initializer)
    total += sum(math.prod(s.values.dims) for s in model.graph.sparse_initializer)
    return int(total)


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers, wherever their data is stored."""
    return int(sum(math.prod(init.dims) * onnx.helper.tensor_dtype_to_np_dtype(
        init.data_type).itemsize for init in model.graph.initializer))


@dataclass(frozen=True)
class GraphFacts:
    """What an ONNX graph declares, read once: all the manifest and the checks need of it.

    Attributes:
        inputs: graph inputs as ``{"name", "dtype", "shape"}`` (see :func:`io_signature`).
        outputs: graph outputs, same form.
        opset: the default domain's opset (:func:`default_opset`).
        opset_imports: every imported domain -> opset version.
        ir_version: the model's IR version.
        external_data: relative paths of its external-data files (:func:`external_data_locations`).
        parameter_count: elements of the main graph's initializers.
        initializer_bytes: bytes of the main graph's initializers.
        initializer_names: names of the main graph's initializers.
    """

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    opset: int
    opset_imports: dict[str, int]
    ir_version: int
    external_data: list[str]
    parameter_count: int
    initializer_bytes: int
    initializer_names: frozenset[str]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> GraphFacts:
        """Read the facts of an in-memory model (its external data may stay on disk).

        Raises:
            ValueError: an external-data location is unsafe (see
                :func:`external_data_locations`).
        """
        inputs, outputs = io_signature(model)
        return cls(inputs=inputs, outputs=outputs, opset=default_opset(model),
                   opset_imports={op.domain: int(op.version) for op in model.opset_import},
                   ir_version=int(model.ir_version),
                   external_data=external_data_locations(model),
                   parameter_count=parameter_count(model),
                   initializer_bytes=initializer_bytes(model),
                   initializer_names=frozenset(t.name for t in model.graph.initializer))

    @property
    def input_names(self) -> tuple[str, ...]:
        """The names of the inputs a caller feeds, in order."""
        return tuple(io["name"] for io in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The output names, in order."""
        return tuple(io["name"] for io in self.outputs)
