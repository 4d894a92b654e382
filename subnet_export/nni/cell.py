"""NNI 2.x cells: ``Cell`` (DARTS / NDS cells) and ``NasBench201Cell``, with NNI 2.10's labels.

A :class:`Cell` is built as NNI builds it: node ``i`` (predecessors count from 0) sums
``num_ops_per_node`` ops, op ``k`` choosing its candidate (label ``{label}/op_{i}_{k}``) and the
state it reads (label ``{label}/input_{i}_{k}``, a bare index as NNI writes it). Through
``se.to_supernet`` it becomes what NNI's one-shot strategies make of it:

- op candidates given as modules with ``merge_op="all"``: the cell keeps its layout and its
  inner choices become layer and input choices (``cell_supernet.py``), keys as NNI's;
- op candidates given by factories, or ``merge_op="loose_end"``: one fully connected supernet
  cell (``cell_mixed.py``, NNI's ``PathSamplingCell`` / ``DifferentiableMixedCell``), which
  concatenates every node (NNI's one-shot cells ignore ``loose_end``).

The supernet modules of both are ``cell_supernet.CELL_HOOKS``, the hooks ``se.to_supernet``
tries for these placeholders.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..space.placeholders import Placeholder
from ._labels import auto_label
from .cell_ops import (
    CellInputChoice,
    CellOpChoice,
    DefaultPostprocessor,
    ListIdentity,
    cell_output,
    create_cell_op_candidates,
    preprocess_cell_inputs,
)

__all__ = ["Cell", "CellBody", "NasBench201Cell"]

MERGE_OPS = ("all", "loose_end")


class Cell(Placeholder):
    """NNI's ``Cell``: ``num_nodes`` nodes, each the sum of ``num_ops_per_node`` chosen ops.

    Args:
        op_candidates: a list or dict of modules (deep-copied per op) or of factories
            ``fn(node_index, op_index, input_index) -> module`` (``input_index`` is None while
            the space is built; the one-shot supernet calls them once per input). A callable
            returning the candidates is accepted as NNI does, but no one-shot supernet takes it.
        num_nodes: nodes of the cell.
        num_ops_per_node: ops summed by each node.
        num_predecessors: inputs of the cell (``cell([a, b])`` or ``cell(a, b)``).
        merge_op: ``"all"`` or ``"loose_end"`` (the one-shot supernet concatenates every node
            either way, as NNI's).
        preprocessor: ``fn(list of predecessors) -> list of tensors``; default: the list itself.
        postprocessor: ``fn(this_cell, predecessors) -> output``; default: ``this_cell``.
        concat_dim: the dim the nodes are concatenated on.
        label: the cell's label; default: NNI's next automatic label (``model_N``).

    Raises:
        SearchSpaceError: an unknown ``merge_op``, or a candidate that is neither a module nor
            a factory.
    """

    def __init__(self, op_candidates: Any, num_nodes: int, num_ops_per_node: int = 1,
                 num_predecessors: int = 1, merge_op: str = "all",
                 preprocessor: Callable | None = None, postprocessor: Callable | None = None,
                 concat_dim: int = 1, *, label: str | None = None) -> None:
        super().__init__()
        self._label = auto_label(label)
        if merge_op not in MERGE_OPS:
            raise SearchSpaceError(
                f"Cell {self._label!r}: merge_op {merge_op!r} is not one of {list(MERGE_OPS)}")
        self.preprocessor = preprocessor or ListIdentity()
        self.ops = nn.ModuleList()
        self.inputs = nn.ModuleList()
        self.postprocessor = postprocessor or DefaultPostprocessor()
        self.num_nodes, self.num_ops_per_node = num_nodes, num_ops_per_node
        self.num_predecessors, self.merge_op = num_predecessors, merge_op
        self.concat_dim = concat_dim
        self.output_node_indices = list(range(num_predecessors, num_predecessors + num_nodes))
        self.op_candidates_factory: Any = None
        for i in self.output_node_indices:
            ops, inputs = nn.ModuleList(), nn.ModuleList()
            for k in range(num_ops_per_node):
                inputs.append(CellInputChoice(i, label=f"{self._label}/input_{i}_{k}"))
                candidates, has_factory = create_cell_op_candidates(op_candidates, i, k, None)
                if has_factory:
                    self.op_candidates_factory = op_candidates
                ops.append(CellOpChoice(candidates, label=f"{self._label}/op_{i}_{k}"))
            self.ops.append(ops)
            self.inputs.append(inputs)

    @property
    def label(self) -> str:
        """The cell's label, the prefix of its choices' labels."""
        return self._label

    def is_elastic(self) -> bool:
        """Whether one supernet cell replaces this one (factories or loose ends), as in NNI."""
        return self.op_candidates_factory is not None or self.merge_op == "loose_end"

    def to_plain(self) -> nn.Module:
        """The cell as a plain container of its (still placeholder) choices."""
        return CellBody(self.preprocessor, self.ops, self.inputs, self.postprocessor,
                        self.num_predecessors, self.concat_dim, self._label)

    def extra_repr(self) -> str:
        return (f"label={self._label!r}, num_nodes={self.num_nodes}, "
                f"num_ops_per_node={self.num_ops_per_node}, "
                f"num_predecessors={self.num_predecessors}, merge_op={self.merge_op!r}")


class CellBody(nn.Module):
    """A cell of module candidates that merges all nodes: NNI's ``Cell`` and its ``forward``.

    ``ops[n][k]`` and ``inputs[n][k]`` are node ``n + num_predecessors``'s op ``k`` and the
    choice of the state it reads (after ``to_supernet``, supernet modules; after materialize,
    the chosen op and a ``SelectInputs``). Nodes sum their ops with ``torch.stack(...).sum(0)``
    as NNI's cell does.
    """

    def __init__(self, preprocessor: Callable, ops: nn.ModuleList, inputs: nn.ModuleList,
                 postprocessor: Callable, num_predecessors: int, concat_dim: int,
                 label: str) -> None:
        super().__init__()
        self.preprocessor, self.ops, self.inputs = preprocessor, ops, inputs
        self.postprocessor = postprocessor
        self.num_predecessors, self.concat_dim, self.label = num_predecessors, concat_dim, label
        self.num_nodes, self.num_ops_per_node = len(ops), len(ops[0]) if len(ops) else 0

    def forward(self, *inputs: Any) -> Any:
        processed = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states = self.preprocessor(processed)
        for ops, choices in zip(self.ops, self.inputs):
            current = [op(choice(states)) for op, choice in zip(ops, choices)]
            states.append(torch.sum(torch.stack(current), 0))
        return self.postprocessor(cell_output(states, self.num_predecessors, self.concat_dim),
                                  processed)


class NasBench201Cell(nn.Module):
    """NNI's ``NasBench201Cell``: ``num_tensors`` states, an op choice on every edge ``j -> t``.

    Args:
        op_candidates: a list or dict of factories ``fn(in_features, out_features) -> module``.
        in_features: channels of the input (state 0).
        out_features: channels of every other state.
        num_tensors: states of the cell, the input included.
        label: the cell's label; edge ``j -> t`` is labelled ``{label}/{j}_{t}``. Default: NNI's
            next automatic label.

    State ``t`` is the sum over ``j < t`` of ``layers[t - 1][j](state j)``; the output is the last
    state.
    """

    def __init__(self, op_candidates: Mapping[str, Callable[[int, int], nn.Module]]
                 | list[Callable[[int, int], nn.Module]], in_features: int, out_features: int,
                 num_tensors: int = 4, label: str | None = None) -> None:
        super().__init__()
        self._label = auto_label(label)
        self.layers = nn.ModuleList()
        self.in_features, self.out_features = in_features, out_features
        self.num_tensors = num_tensors
        factories = (OrderedDict((str(i), f) for i, f in enumerate(op_candidates))
                     if isinstance(op_candidates, list) else OrderedDict(op_candidates))
        for tid in range(1, num_tensors):
            node_ops = nn.ModuleList()
            for j in range(tid):
                width = in_features if j == 0 else out_features
                candidates = OrderedDict((key, make(width, out_features))
                                         for key, make in factories.items())
                node_ops.append(CellOpChoice(candidates, label=f"{self._label}/{j}_{tid}"))
            self.layers.append(node_ops)

    @property
    def label(self) -> str:
        """The cell's label, the prefix of its edges' labels."""
        return self._label

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        tensors = [inputs]
        for layer in self.layers:
            current = [op(tensors[i]) for i, op in enumerate(layer)]
            tensors.append(torch.sum(torch.stack(current), 0))
        return tensors[-1]
