"""Plain building blocks shared by the spaces: rounding, squeeze-excite.

Nothing here holds supernet state; a block written with ``se.*`` placeholders becomes elastic
only where its arguments are choices. The zero op and the sum that skips it are the core's
(``se.Zero``, ``se.sum_terms``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import subnet_export as se

__all__ = ["SqueezeExcite", "make_divisible", "maybe_compose"]


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
