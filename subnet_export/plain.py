"""Plain modules that a materialized subnet may contain besides ``torch.nn``'s own.

They hold no supernet state: an input choice frozen to its indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SelectInputs", "reduce_inputs"]


def reduce_inputs(tensors: Sequence[torch.Tensor], reduction: str) -> torch.Tensor:
    """Sum, mean or concatenate (dim 1) ``tensors``."""
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
