"""Graph clean-ups applied to every export: small, exact, and each with a checked contract.

A pass follows onnx-ir's shape: ``requires(model)`` (its precondition), ``call(model)`` (the
change, in place), ``ensures(model)`` (its postcondition). Running one checks all three, plus what
every pass here keeps: the graph's inputs, outputs and initializers, so the file still holds
exactly the plain model's weights. A broken contract is an ``ExportError`` naming the pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from ..errors import ExportError

__all__ = ["GraphPass", "PassResult", "StripZeroConvBias", "strip_zero_conv_bias"]


@dataclass(frozen=True)
class PassResult:
    """What a pass did: whether it changed the model, and how many places."""

    modified: bool
    changed: int


def _signature(model: onnx.ModelProto) -> tuple[list[str], list[str], list[str]]:
    graph = model.graph
    return ([i.name for i in graph.input], [o.name for o in graph.output],
            [t.name for t in graph.initializer])


class GraphPass:
    """An in-place ONNX graph pass with a checked contract (see the module docstring)."""

    name = "pass"

    def requires(self, model: onnx.ModelProto) -> str | None:
        """Why the pass cannot run on ``model``, or None."""
        return None

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Change ``model`` in place."""
        raise NotImplementedError

    def ensures(self, model: onnx.ModelProto) -> str | None:
        """What the pass failed to achieve on ``model``, or None."""
        return None

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        """Run the pass with its contract checked.

        Raises:
            ExportError: a precondition or postcondition does not hold.
        """
        why = self.requires(model)
        if why:
            raise ExportError(f"export: pass {self.name} cannot run: {why}")
        before = _signature(model)
        result = self.call(model)
        why = self.ensures(model)
        if not why and _signature(model) != before:
            why = "it changed the graph's inputs, outputs or initializers"
        if why:
            raise ExportError(f"export: pass {self.name} broke its contract: {why}; this is a bug "
                              "of subnet-export, please report it")
        return result


def _zero_bias(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto]) -> bool:
    """Whether a Conv's bias is torch.onnx's run-time zero, ``Expand(CastLike(0, x), ...)``."""
    def made_by(name: str, op: str) -> onnx.NodeProto | None:
        found = producer.get(name)
        return found if found is not None and found.op_type == op else None

    if node.op_type != "Conv" or len(node.input) != 3 or not node.input[2]:
        return False
    expand = made_by(node.input[2], "Expand")
    cast = made_by(expand.input[0], "CastLike") if expand is not None else None
    const = made_by(cast.input[0], "Constant") if cast is not None else None
    if const is None:
        return False
    values = [numpy_helper.to_array(a.t) for a in const.attribute if a.name == "value"]
    return len(values) == 1 and values[0].size == 1 and values[0].item() == 0


class StripZeroConvBias(GraphPass):
    """Drop the all-zero bias that torch.onnx (dynamo, unoptimised) gives every bias-less Conv.

    See :func:`strip_zero_conv_bias`. Ensures: no Conv is left with such a bias.
    """

    name = "strip_zero_conv_bias"

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        producer = {o: n for n in graph.node for o in n.output}
        changed = 0
        for node in graph.node:
            if _zero_bias(node, producer):
                del node.input[2]
                changed += 1
        if changed:
            _remove_dead_nodes(graph)
        return PassResult(bool(changed), changed)

    def ensures(self, model: onnx.ModelProto) -> str | None:
        graph = model.graph
        producer = {o: n for n in graph.node for o in n.output}
        left = [n.name for n in graph.node if _zero_bias(n, producer)]
        return f"Conv nodes {left[:3]} still take a run-time zero bias" if left else None


def strip_zero_conv_bias(model: onnx.ModelProto) -> int:
    """Drop the all-zero bias that torch.onnx (dynamo, unoptimised) gives every bias-less Conv.

    The translation of ``aten.convolution`` without a bias writes
    ``Conv(x, W, Expand(CastLike(0, x), Shape(W)[0:1]))``: a bias computed at run time that
    onnxruntime can neither constant-fold (CastLike reads ``x``) nor fuse with the following
    BatchNormalization, which made MobileNetV3 2.4x slower on onnxruntime CPU. Removing the
    third input is exact (a zero bias adds nothing); the nodes that fed only it go too.
    Initializers are untouched, so their bytes still equal the plain model's.

    Returns:
        The number of Conv nodes changed.

    Raises:
        ExportError: the pass broke its contract (:class:`StripZeroConvBias`).
    """
    return StripZeroConvBias()(model).changed


def _names_read(graph: onnx.GraphProto) -> Iterator[str]:
    # Inputs of every node, including nodes of If/Loop/Scan bodies, which may read outer names.
    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _names_read(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _names_read(sub)


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    while True:
        used = set(_names_read(graph)) | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
