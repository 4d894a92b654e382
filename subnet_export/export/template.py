"""Graph templates: the traced graph of one arch, reused for archs of the same topology.

Archs that differ only in widths and kernel sizes trace to the same ONNX graph: the same nodes,
values and initializer names, with other initializer shapes and a few shape-dependent numbers.
A :class:`GraphTemplate` keeps one raw trace (without its weights); :meth:`instantiate` writes
another plain model's tensors into it and recomputes those numbers from the shapes the new
weights imply:

- ``Conv``: ``kernel_shape`` is the weight's; ``group`` keeps the template's output channels
  per group (a depthwise conv stays depthwise); "same" padding (``dilation * (k - 1) // 2`` each
  side, as read off the template) follows the kernel;
- the shape constants (``shape_constants.py``): each element that equals a dimension run of its
  op's data input in the template equals that run in the new graph, found by shape inference
  in rounds until nothing changes.

What it cannot derive is a :class:`TemplateMismatch`, and the caller traces afresh: other
tensor names or dtypes, a kernel change where the template does not pad "same", a constant whose
runs disagree, a graph that strict shape inference rejects, a conv whose input channels are not
``group`` times its weight's. The result is then validated like any export, and a failed parity
check is not trusted either (``pipeline.py`` traces again and validates that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .shape_constants import (
    Element,
    InferenceFailed,
    Shapes,
    constants,
    elements,
    infer,
    store_constant,
)
from .topology import AttrElement, apply_ints, attribute_elements, covers

__all__ = ["GraphTemplate", "TemplateMismatch"]

_MAX_ROUNDS = 50


class TemplateMismatch(Exception):
    """This template cannot be proven to fit the plain model; the message says why."""


@dataclass(frozen=True)
class _ConvFacts:
    """A template conv: its kernel and group, output channels, and "same" dilations or None."""

    kernel: tuple[int, ...]
    group: int
    out_channels: int
    same: tuple[int, ...] | None


@dataclass
class GraphTemplate:
    """A raw dynamo trace without its weights, and what it takes to reuse it.

    Attributes:
        model: the trace, weight initializers as shapes only (constants keep their data).
        params: the initializer names that are plain-model tensors.
        unused: the plain-model tensors the trace never reads.
        key: :func:`topology_key` of the model it was traced from.
    """

    model: onnx.ModelProto
    params: frozenset[str]
    unused: frozenset[str]
    key: str
    _elements: list[Element] = field(default_factory=list, repr=False)
    _convs: dict[str, _ConvFacts] = field(default_factory=dict, repr=False)
    _value_info: list[onnx.ValueInfoProto] = field(default_factory=list, repr=False)
    loose: str = ""
    ints: Mapping[str, int] = field(default_factory=dict)
    _attr_elements: list[AttrElement] = field(default_factory=list, repr=False)

    @classmethod
    def from_trace(cls, raw: onnx.ModelProto, base_dir: Path, names: set[str] | frozenset[str],
                   key: str, loose: str = "", ints: Mapping[str, int] | None = None
                   ) -> GraphTemplate:
        """The template of ``raw``, whose weights are still in files under ``base_dir``.

        ``names`` are the plain model's tensor names (parameters and persistent buffers);
        ``loose`` and ``ints`` its loose key and integer attributes (``template_ints.py``).

        Raises:
            TemplateMismatch: the trace's shapes cannot be read (no template for it).
        """
        model = onnx.ModelProto()
        model.CopyFrom(raw)
        params = set()
        for tensor in model.graph.initializer:
            if tensor.name in names:
                params.add(tensor.name)
                _drop_data(tensor)
            elif tensor.data_location == TensorProto.EXTERNAL:
                onnx.external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))
                tensor.ClearField("data_location")
                del tensor.external_data[:]
        value_info = list(model.graph.value_info)
        del model.graph.value_info[:]
        template = cls(model, frozenset(params), frozenset(set(names) - params), key)
        template._value_info = value_info
        shapes = template._shapes(model)
        template._elements = elements(model, shapes)
        template._convs = {n.output[0]: _conv_facts(n, shapes) for n in _convs(model)}
        template.loose, template.ints = loose, dict(ints or {})
        template._attr_elements = attribute_elements(
            model, ((e.value, e.index) for e in template._elements), template.ints)
        return template

    def covers(self, ints: Mapping[str, int]) -> bool:
        """Whether a model with these integer attributes may be fitted (``template_ints``)."""
        return covers(self.ints, self._attr_elements, ints)

    def instantiate(self, state: Mapping[str, Any],
                    ints: Mapping[str, int] | None = None) -> onnx.ModelProto:
        """This graph holding ``state`` (name -> array), its numbers fitted to the new shapes.

        ``ints``: the model's integer attributes, when they may differ from the traced ones.

        Raises:
            TemplateMismatch: the tensors or the shapes they imply do not fit (see the module
                docstring); the caller exports afresh.
        """
        names = set(state)
        if not self.params <= names or names - self.params != self.unused:
            missing = sorted(self.params - names)[:3]
            new = sorted(names - self.params - self.unused)[:3]
            raise TemplateMismatch(f"other tensors (missing {missing}, new {new})")
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        arrays = {}
        for tensor in model.graph.initializer:
            if tensor.name in self.params:
                array = np.asarray(state[tensor.name])
                if helper.np_dtype_to_tensor_dtype(array.dtype) != tensor.data_type:
                    raise TemplateMismatch(f"{tensor.name} is {array.dtype} now")
                del tensor.dims[:]
                tensor.dims.extend(array.shape)
                arrays[tensor.name] = array
        if ints is not None and ints != self.ints:
            if not self.covers(ints):
                raise TemplateMismatch("other integer attributes than the trace holds")
            apply_ints(model, self._attr_elements, ints)
        for _ in range(_MAX_ROUNDS):
            if not self._fit(model, self._shapes(model)):
                break
        else:
            raise TemplateMismatch(f"shapes still moving after {_MAX_ROUNDS} rounds")
        shapes = self._shapes(model, strict=True)
        _check_groups(model, shapes)
        for info in model.graph.output:
            _fit_shape(info, shapes)
        for traced in self._value_info:
            info = model.graph.value_info.add()
            info.CopyFrom(traced)
            _fit_shape(info, shapes)
        for tensor in model.graph.initializer:
            if tensor.name in arrays:
                tensor.raw_data = numpy_helper.from_array(arrays[tensor.name]).raw_data
        return model

    def _shapes(self, model: onnx.ModelProto, strict: bool = False) -> Shapes:
        try:
            return infer(model, self.params, strict=strict)
        except InferenceFailed as err:
            raise TemplateMismatch(str(err)) from err

    def _fit(self, model: onnx.ModelProto, shapes: Shapes) -> bool:
        """One round: conv attributes and shape constants from ``shapes``; True if any moved."""
        changed = False
        for node in _convs(model):
            changed |= _fit_conv(node, shapes, self._convs[node.output[0]])
        values = constants(model)
        for element in self._elements:
            try:
                new = element.fitted(shapes)
            except InferenceFailed as err:
                raise TemplateMismatch(str(err)) from err
            array = values[element.value]
            if new is not None and int(array.flat[element.index]) != new:
                array.flat[element.index] = new
                store_constant(model, element.value, array)
                changed = True
        return changed


def _drop_data(tensor: TensorProto) -> None:
    for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
        tensor.ClearField(name)
    tensor.ClearField("data_location")
    del tensor.external_data[:]


def _convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _conv_facts(node: onnx.NodeProto, shapes: Shapes) -> _ConvFacts:
    weight = shapes.get(node.input[1])
    if not weight or None in weight:
        raise TemplateMismatch(f"{node.name or node.output[0]}: weight shape unknown")
    kernel = tuple(weight[2:])
    pads, dil, group = _attr(node, "pads"), _attr(node, "dilations"), _attr(node, "group")
    dilations = tuple(dil.ints) if dil else (1,) * len(kernel)
    same = (pads is not None and all(k > 1 for k in kernel)
            and list(pads.ints) == [d * (k - 1) // 2 for d, k in zip(dilations, kernel)] * 2)
    return _ConvFacts(kernel, group.i if group else 1, weight[0], dilations if same else None)


def _fit_conv(node: onnx.NodeProto, shapes: Shapes, facts: _ConvFacts) -> bool:
    weight = shapes.get(node.input[1])
    if not weight or None in weight:
        return False
    kernel = list(weight[2:])
    changed = _set_ints(node, "kernel_shape", kernel)
    if facts.group != 1:
        per_group, left = divmod(facts.out_channels, facts.group)
        group = weight[0] // per_group
        if left or weight[0] % per_group:
            raise TemplateMismatch(f"{node.name}: {weight[0]} outputs in groups of {per_group}")
        attr = _attr(node, "group")
        if attr.i != group:
            attr.i, changed = group, True
    if tuple(kernel) != facts.kernel and _attr(node, "pads") is not None:
        if facts.same is None:
            raise TemplateMismatch(f"{node.name}: kernel {kernel}, and the template's "
                                   f"{list(facts.kernel)} does not pad 'same'")
        changed |= _set_ints(node, "pads", [d * (k - 1) // 2
                                            for d, k in zip(facts.same, kernel)] * 2)
    return changed


def _set_ints(node: onnx.NodeProto, name: str, values: list[int]) -> bool:
    attr = _attr(node, name)
    if attr is None or list(attr.ints) == values:
        return False
    del attr.ints[:]
    attr.ints.extend(values)
    return True


def _check_groups(model: onnx.ModelProto, shapes: Shapes) -> None:
    for node in _convs(model):
        data, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
        group = _attr(node, "group")
        if data is None or len(data) < 2 or data[1] is None or weight is None:
            raise TemplateMismatch(f"{node.name}: input channels unknown")
        if data[1] != (group.i if group else 1) * weight[1]:
            raise TemplateMismatch(f"{node.name}: {data[1]} input channels for weight {weight}")


def _fit_shape(info: onnx.ValueInfoProto, shapes: Shapes) -> None:
    """The traced value's static dims set to the inferred ones (symbolic dims kept as traced)."""
    if not info.type.tensor_type.HasField("shape"):
        return  # traced without a shape: nothing to fit
    dims, shape = shapes.get(info.name), info.type.tensor_type.shape
    if dims is None or len(dims) != len(shape.dim):
        raise TemplateMismatch(f"value {info.name}: shape unknown")
    for dim, value in zip(shape.dim, dims):
        if dim.HasField("dim_value"):
            if value is None:
                raise TemplateMismatch(f"value {info.name}: a static dim became unknown")
            dim.dim_value = value
