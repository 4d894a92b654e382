"""The integer constants of a traced graph that follow its tensors' shapes, and shape inference.

Helpers of :mod:`.template`. A *shape constant* is an int64 ``Constant`` (``value``,
``value_ints`` or ``value_int``) or int64 initializer that a ``Reshape``/``Expand``/``Tile``/
``Split``/``Slice`` reads as its shape, sizes or bounds, directly or through
``Concat``/``Unsqueeze``/``Squeeze``/``Cast``/``Identity``. Each of its elements over 1 that equals
a dimension (or the product of a run of dimensions) of that op's data input is an
:class:`Element`; the rest stay as traced.

Shape inference runs on a proxy of the graph in which the nodes that read only constants (an
unoptimised trace computes its reduction axes that way) are evaluated first, so that ONNX's
inference sees their values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

__all__ = ["Element", "InferenceFailed", "constants", "data_inputs", "elements", "infer",
           "store_constant"]

#: ops whose input at ``index`` is a shape-like integer tensor for the data input 0
_SHAPE_INPUTS = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "Split": (1,), "Slice": (1, 2)}
#: ops an integer constant may pass through on its way to a shape input
_PASS_THROUGH = {"Concat", "Unsqueeze", "Squeeze", "Cast", "Identity"}
#: constant-only ops never evaluated ahead (nondeterministic, or not plain ONNX)
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli"}
Shapes = Mapping[str, list[Any]]


class InferenceFailed(Exception):
    """ONNX shape inference rejected the graph (the message is its first line)."""


@dataclass(frozen=True)
class Element:
    """One element of a shape constant and the dimension runs of a data input it equals."""

    value: str
    index: int
    data: str
    runs: tuple[tuple[int, int], ...]

    def fitted(self, shapes: Shapes) -> int | None:
        """The element's value for ``shapes``; None while the data input's dims are unknown.

        Raises:
            InferenceFailed: the runs that agreed in the template disagree now.
        """
        dims = shapes.get(self.data)
        if dims is None or any(d is None for a, b in self.runs for d in dims[a:b]):
            return None
        values = {int(np.prod(dims[a:b])) for a, b in self.runs}
        if len(values) != 1:
            raise InferenceFailed(f"constant {self.value}[{self.index}] fits {sorted(values)}")
        return values.pop()


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == TensorProto.INT64:
            return numpy_helper.to_array(attr.t).copy()
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
    return None


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every int64 constant of ``model`` by value name (initializers with data, ``Constant``)."""
    out = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer
           if t.data_type == TensorProto.INT64 and (t.raw_data or t.int64_data)}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = _constant_value(node)
            if value is not None:
                out[node.output[0]] = value
    return out


def store_constant(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    """Write ``array`` into the constant ``name``, in the form it had."""
    for tensor in model.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(array, name))
            return
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            attr = node.attribute[0]
            if attr.name == "value":
                attr.t.CopyFrom(numpy_helper.from_array(array, name))
            elif attr.name == "value_ints":
                del attr.ints[:]
                attr.ints.extend(int(v) for v in array.reshape(-1))
            else:
                attr.i = int(array)
            return


def elements(model: onnx.ModelProto, shapes: Shapes) -> list[Element]:
    """Every element over 1 of a shape constant, with the dimension runs it equals."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    out = []
    for name, array in constants(model).items():
        if array.ndim > 1:
            continue
        for data in sorted(set(_data_inputs(name, readers))):
            dims = shapes.get(data) or []
            for index, value in enumerate(array.reshape(-1).tolist()):
                runs = tuple((a, b) for a in range(len(dims))
                             for b in range(a + 1, len(dims) + 1)
                             if None not in dims[a:b] and int(np.prod(dims[a:b])) == value)
                if value > 1 and runs:
                    out.append(Element(name, index, data, runs))
    return out


def _data_inputs(name: str, readers: Mapping[str, list[onnx.NodeProto]]) -> Iterator[str]:
    seen, todo = set(), [name]
    while todo:
        value = todo.pop()
        for node in readers.get(value, ()):
            if node.op_type in _PASS_THROUGH:
                if node.output[0] not in seen:
                    seen.add(node.output[0])
                    todo.append(node.output[0])
            elif any(i < len(node.input) and node.input[i] == value
                     for i in _SHAPE_INPUTS.get(node.op_type, ())):
                yield node.input[0]


def data_inputs(name: str, readers: Mapping[str, list[onnx.NodeProto]]) -> Iterator[str]:
    """The data inputs of the shape-reading ops the integer value ``name`` reaches."""
    return _data_inputs(name, readers)


def infer(model: onnx.ModelProto, params: frozenset[str], strict: bool = False) -> Shapes:
    """Shapes of every value of ``model`` (None for an unknown dim), constants folded first.

    ``params`` are the initializers that hold only shapes (weights without data).

    Raises:
        InferenceFailed: inference rejected the graph (in ``strict`` mode: any inconsistency).
    """
    proxy = _folded(model, params)
    try:
        inferred = shape_inference.infer_shapes(proxy, strict_mode=strict, data_prop=True)
    except Exception as err:  # onnx's InferenceError, ValidationError
        raise InferenceFailed(f"shape inference: {str(err).strip().splitlines()[0]}") from err
    out: dict[str, list[Any]] = {}
    graph = inferred.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
            out[info.name] = [d.dim_value if d.HasField("dim_value") else None
                              for d in tensor_type.shape.dim]
    for tensor in graph.initializer:
        out[tensor.name] = list(tensor.dims)
    return out


def _folded(model: onnx.ModelProto, params: frozenset[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose constant-only nodes are replaced by their values."""
    known = {t.name for t in model.graph.initializer if t.name not in params}
    folded = []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDED and (
                node.op_type == "Constant" or (inputs and all(i in known for i in inputs))):
            folded.append(node)
            known.update(node.output)
    proxy = onnx.ModelProto()
    proxy.CopyFrom(model)
    if not folded:
        return proxy
    from onnx.reference import ReferenceEvaluator

    given = [t for t in model.graph.initializer if t.name not in params]
    outputs = [o for n in folded for o in n.output]
    graph = helper.make_graph(folded, "fold", [], [helper.make_empty_tensor_value_info(o)
                                                   for o in outputs], initializer=given)
    sub = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        values = ReferenceEvaluator(sub).run(None, {})
    except Exception as err:  # a reference kernel missing or failing: infer without folding
        raise InferenceFailed(f"constant folding: {err}") from err
    done = set(outputs)
    kept = [n for n in proxy.graph.node if not (n.output and set(n.output) <= done)]
    del proxy.graph.node[:]
    proxy.graph.node.extend(kept)
    proxy.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), o)
                                   for o, v in zip(outputs, values))
    return proxy
