"""The parts NNI 2.10's cells are built from: op candidates, cell inputs, the inner choices.

``create_cell_op_candidates`` and ``preprocess_cell_inputs`` follow NNI's functions of the same
names; :class:`CellOpChoice` and :class:`CellInputChoice` are the layer and input choices a
:class:`~subnet_export.nni.cell.Cell` holds, converted by the supernet modules of
``cell_supernet.py`` with NNI's keys (``_arch_alpha``) and arch values (a bare input index).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..plain.modules import sum_terms
from ..space.containers import LayerChoice
from ..space.placeholders import Placeholder

__all__ = [
    "CellInputChoice",
    "CellOpChoice",
    "DefaultPostprocessor",
    "ListIdentity",
    "cell_output",
    "create_cell_op_candidates",
    "node_sum",
    "preprocess_cell_inputs",
]


class ListIdentity(nn.Identity):
    """The default preprocessor: the list of predecessors itself (not a copy), as NNI's."""

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return x


class DefaultPostprocessor(nn.Module):
    """The default postprocessor: the cell's own output."""

    def forward(self, this_cell: torch.Tensor, prev_cell: list[torch.Tensor]) -> torch.Tensor:
        return this_cell


def create_cell_op_candidates(op_candidates: Any, node_index: int, op_index: int,
                              chosen: int | None) -> tuple[dict[str, nn.Module], bool]:
    """The candidates of one op of a cell, and whether a factory made any of them.

    Args:
        op_candidates: a list or dict of modules (deep-copied) or factories
            ``fn(node_index, op_index, input_index) -> module``, or (deprecated in NNI) a
            callable returning the candidates.
        node_index: the node, counting the predecessors.
        op_index: the op within the node.
        chosen: the input index the op reads, None while unknown.

    Raises:
        SearchSpaceError: a candidate is neither a module nor a callable.
    """
    has_factory = False

    def convert(op: Any) -> nn.Module:
        nonlocal has_factory
        if isinstance(op, nn.Module):
            return copy.deepcopy(op)
        if callable(op):
            has_factory = True
            return op(node_index, op_index, chosen)
        raise SearchSpaceError(
            f"Cell op candidate {op!r} is a {type(op).__name__}; give an nn.Module or a "
            "factory fn(node_index, op_index, input_index) -> nn.Module")

    if isinstance(op_candidates, list):
        return {str(i): convert(op) for i, op in enumerate(op_candidates)}, has_factory
    if isinstance(op_candidates, Mapping):
        return {key: convert(op) for key, op in op_candidates.items()}, has_factory
    if callable(op_candidates):
        made = op_candidates()
        return (dict(made) if isinstance(made, Mapping)
                else {str(i): m for i, m in enumerate(made)}), True
    raise SearchSpaceError(
        f"Cell op_candidates is a {type(op_candidates).__name__}; give a list or dict of "
        "modules or factories")


def preprocess_cell_inputs(num_predecessors: int, *inputs: Any) -> list[torch.Tensor]:
    """The cell's predecessors as a new list: ``cell([a, b])`` and ``cell(a, b)`` are one call.

    Raises:
        SearchSpaceError: the number of inputs is not ``num_predecessors``.
    """
    if len(inputs) == 1 and isinstance(inputs[0], list):
        processed = list(inputs[0])
    else:
        processed = list(inputs)
    if len(processed) != num_predecessors:
        raise SearchSpaceError(
            f"the cell has {num_predecessors} predecessors but was called with {len(processed)} "
            "inputs; pass one tensor per predecessor")
    return processed


def cell_output(states: list[torch.Tensor], num_predecessors: int,
                concat_dim: int) -> torch.Tensor:
    """Every node of the cell (the predecessors left out), concatenated on ``concat_dim``."""
    return torch.cat(states[num_predecessors:], concat_dim)


def node_sum(ops: list[nn.Module], states: list[torch.Tensor], indices: list[int]) -> Any:
    """``sum(op(states[j]))`` of a plain cell's node, zero ops left out (see ``sum_terms``)."""
    return sum_terms([(op, states[j]) for op, j in zip(ops, indices)])


class CellOpChoice(LayerChoice):
    """An op of a cell: a layer choice whose differentiable alpha is NNI's ``_arch_alpha``."""


class CellInputChoice(Placeholder):
    """The input of an op of a cell: one of ``n_candidates`` states; the arch value is its index.

    NNI writes a one-of-n input choice as a bare int (``"cell/input_2_0": 1``), and so does the
    supernet module that replaces this placeholder.
    """

    def __init__(self, n_candidates: int, label: str) -> None:
        super().__init__()
        if n_candidates < 1:
            raise SearchSpaceError(f"CellInputChoice {label!r} needs at least one candidate")
        self.n_candidates, self.label = n_candidates, label

    def is_elastic(self) -> bool:
        return True

    def extra_repr(self) -> str:
        return f"n_candidates={self.n_candidates}, label={self.label!r}"


#: A factory of cell ops: ``fn(node_index, op_index, input_index) -> module``.
CellOpFactory = Callable[[int, int, "int | None"], nn.Module]
