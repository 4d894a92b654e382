"""Plain modules that a materialized subnet may contain besides ``torch.nn``'s own.

They hold no supernet state: an input choice frozen to its indices (:class:`SelectInputs`), a
node frozen to its chosen edges (:class:`ChosenEdges`), a learnt tensor (:class:`LearnedTensor`)
and the ``none`` op of cell spaces (:class:`Zero`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["ChosenEdges", "LearnedTensor", "SelectInputs", "Zero", "reduce_inputs", "sum_terms"]


def reduce_inputs(tensors: Sequence[torch.Tensor], reduction: str) -> Any:
    """Sum, mean or concatenate (dim 1) ``tensors``; ``"none"``: the list of them."""
    if reduction == "none":
        return list(tensors)
    if len(tensors) == 1:
        return tensors[0]
    if reduction == "concat":
        return torch.cat(list(tensors), dim=1)
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out / len(tensors) if reduction == "mean" else out


class SelectInputs(nn.Module):
    """Take the inputs at ``indices`` from a list and reduce them (a frozen ``InputChoice``)."""

    def __init__(self, indices: Sequence[int], reduction: str = "sum") -> None:
        super().__init__()
        self.indices = [int(i) for i in indices]
        self.reduction = reduction

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return reduce_inputs([inputs[i] for i in self.indices], self.reduction)

    def extra_repr(self) -> str:
        return f"indices={self.indices}, reduction={self.reduction!r}"


class Zero(nn.Module):
    """The ``none`` op of cell spaces: zeros shaped like the (strided) input.

    :func:`sum_terms` skips it, so a plain model only computes it when every term of a node is
    zero.
    """

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return x.mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def sum_terms(pairs: Sequence[tuple[nn.Module, torch.Tensor]]) -> torch.Tensor:
    """``sum(op(x) for op, x in pairs)``, skipping :class:`Zero` ops of a plain model.

    Adding an exact zero changes no bit of a float sum, so the supernet path (which still
    runs its zero ops inside layer choices) and the plain model agree exactly, while the
    exported graph has no dead multiply-by-zero branch.

    Args:
        pairs: ``(op, input)`` pairs, at least one.

    Returns:
        The sum of the non-zero terms; the first op's output when every op is a :class:`Zero`.
    """
    terms = [op(x) for op, x in pairs if not isinstance(op, Zero)]
    if not terms:
        op, x = pairs[0]
        return op(x)
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


class ChosenEdges(nn.Module):
    """A frozen ``EdgeChoice``: ``sum(ops[k](inputs[indices[k]]))`` over the chosen edges only.

    Args:
        indices: the chosen edges (indices into the node's list of inputs), sorted.
        ops: the frozen op of each chosen edge, in the order of ``indices``.
    """

    def __init__(self, indices: Sequence[int], ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.indices = [int(i) for i in indices]
        self.ops = nn.ModuleList(ops)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum_terms([(op, inputs[i]) for i, op in zip(self.indices, self.ops)])

    def extra_repr(self) -> str:
        return f"indices={self.indices}"


class LearnedTensor(nn.Module):
    """A learnt tensor as a module (a frozen ``se.Parameter``): ``forward()`` returns ``weight``.

    Args:
        shape: the tensor's shape.
        std: standard deviation of the truncated-normal init (cut at two std), as ViTs init
            their cls token and position embedding.
        device: where to allocate; on ``"meta"`` nothing is allocated or initialised.
    """

    def __init__(self, shape: Sequence[int], std: float = 0.02, device: Any = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(tuple(shape), device=device))
        if self.weight.device.type != "meta":
            nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}"
