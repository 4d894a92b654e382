"""Plain building blocks shared by the spaces: rounding, the zero op, squeeze-excite, sums.

Nothing here holds supernet state; a block written with ``se.*`` placeholders becomes elastic
only where its arguments are choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import subnet_export as se

__all__ = ["SqueezeExcite", "Zero", "make_divisible", "maybe_compose", "sum_terms"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (MobileNet rule)."""
    min_value = min_value or divisor
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def maybe_compose(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` now when no argument is a choice, else ``se.compose(fn, *args)``.

    Keeps fixed sizes plain ints, so layers with no choice stay plain torch layers.
    """
    if any(isinstance(a, se.ChoiceExpr) for a in args):
        return se.compose(fn, *args)
    return fn(*args)


class Zero(nn.Module):
    """The ``none`` op of cell spaces: zeros shaped like the (strided) input.

    Containers skip it when summing (see :func:`sum_terms`), so a plain model only computes it
    when every term of a node is zero.
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
    runs its zero ops inside layer choices) and the plain model agree exactly.
    """
    terms = [op(x) for op, x in pairs if not isinstance(op, Zero)]
    if not terms:
        op, x = pairs[0]
        return op(x)
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as in MobileNetV3: pool, 1x1 reduce, ReLU, 1x1 expand, hardsigmoid.

    ``channels`` and ``squeeze`` may be choices (the 1x1 convs are then elastic).
    """

    def __init__(self, channels: Any, squeeze: Any) -> None:
        super().__init__()
        self.fc1 = se.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = se.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * self.gate(scale)
