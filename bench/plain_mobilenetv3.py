"""MobileNetV3-Large written from the paper, as an ordinary ``nn.Module``, for side-by-side export.

Howard et al., "Searching for MobileNetV3" (ICCV 2019), Table 1: a 3x3 stride-2 stem with
hardswish, fifteen bottlenecks (1x1 expansion, kxk depthwise, optional squeeze-and-excite with
hard-sigmoid gating, 1x1 linear projection; residual when stride 1 and widths match), a 1x1 conv
to 960 channels, global pooling and a two-layer classifier (1280 hidden, hardswish), BatchNorm
with eps 1e-3 and average decay 0.99. Nothing here imports the supernet or ``models/``: the
point is a model a person would write by hand, so that its export is the reference the
materialized subnet is held to.

:func:`load_from_materialized` copies a materialized subnet's weights into it through an explicit
name mapping (:func:`name_mapping`), checking every key and shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LARGE", "BlockSpec", "MobileNetV3Large", "load_from_materialized", "name_mapping"]

#: (kernel, expanded width, output width, squeeze-excite, activation, stride): paper, Table 1.
BlockSpec = tuple[int, int, int, bool, str, int]
LARGE: tuple[BlockSpec, ...] = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # the paper trains with a batch-norm average decay of 0.99


def _divisible(value: float, divisor: int = 8) -> int:
    # The rounding of the reference implementation: nearest multiple, never below 90% of value.
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def _activation(kind: str) -> nn.Module:
    return nn.ReLU() if kind == "RE" else nn.Hardswish()


class SqueezeExcitation(nn.Module):
    """Channel gating: global pool, 1x1 reduce to a quarter (rounded to 8), ReLU, 1x1, h-sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = _divisible(channels // 4)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * F.hardsigmoid(gate)


class Bottleneck(nn.Module):
    """The MobileNetV3 bottleneck; the expansion conv is absent when it would not widen."""

    def __init__(self, in_ch: int, spec: BlockSpec) -> None:
        super().__init__()
        kernel, expanded, out_ch, use_se, act, stride = spec
        self.residual = stride == 1 and in_ch == out_ch
        self.has_expand = expanded != in_ch
        if self.has_expand:
            self.conv_pw = nn.Conv2d(in_ch, expanded, 1, bias=False)
            self.bn_pw = nn.BatchNorm2d(expanded, eps=_BN_EPS, momentum=_BN_MOMENTUM)
            self.act_pw = _activation(act)
        self.conv_dw = nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2,
                                 groups=expanded, bias=False)
        self.bn_dw = nn.BatchNorm2d(expanded, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act_dw = _activation(act)
        self.se = SqueezeExcitation(expanded) if use_se else None
        self.conv_pwl = nn.Conv2d(expanded, out_ch, 1, bias=False)
        self.bn_pwl = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act_pw(self.bn_pw(self.conv_pw(x))) if self.has_expand else x
        y = self.act_dw(self.bn_dw(self.conv_dw(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn_pwl(self.conv_pwl(y))
        return x + y if self.residual else y


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large at width multiplier 1.0 (5.48 M parameters at 1000 classes)."""

    def __init__(self, num_classes: int = 1000, blocks: tuple[BlockSpec, ...] = LARGE,
                 stem: int = 16, head: int = 960, hidden: int = 1280) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn_stem = nn.BatchNorm2d(stem, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        layers, width = [], stem
        for spec in blocks:
            layers.append(Bottleneck(width, spec))
            width = spec[2]
        self.blocks = nn.Sequential(*layers)
        self.conv_head = nn.Conv2d(width, head, 1, bias=False)
        self.bn_head = nn.BatchNorm2d(head, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.fc_hidden = nn.Linear(head, hidden)
        self.dropout = nn.Dropout(0.2)
        self.fc_out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.bn_stem(self.conv_stem(x)))
        x = F.hardswish(self.bn_head(self.conv_head(self.blocks(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc_out(self.dropout(F.hardswish(self.fc_hidden(x))))


# -- weights from a materialized subnet ------------------------------------------------------------
# Materialized (torchvision-like) layer name -> this file's layer name, inside a block.
_BLOCK_LAYERS = {
    "expand.0": "conv_pw", "expand.1": "bn_pw",
    "depthwise.0": "conv_dw", "depthwise.1": "bn_dw",
    "se.fc1": "se.reduce", "se.fc2": "se.expand",
    "project.0": "conv_pwl", "project.1": "bn_pwl",
}
_TOP_LAYERS = {"stem.0": "conv_stem", "stem.1": "bn_stem", "last_conv.0": "conv_head",
               "last_conv.1": "bn_head", "classifier.0": "fc_hidden", "classifier.3": "fc_out"}
_BLOCK_KEY = re.compile(r"^(?:first|stages\.(\d+)\.(\d+))\.(.+)\.(\w+)$")


def name_mapping(materialized_keys: list[str]) -> dict[str, str]:
    """``{materialized state-dict key: plain key}`` for a materialized MobileNetV3 subnet.

    Blocks are numbered in execution order: ``first`` is block 0, then the blocks of
    ``stages.<s>.<j>`` in (s, j) order, however many each stage kept.
    """
    order: list[tuple[int, int]] = sorted({(int(m[1]), int(m[2])) for k in materialized_keys
                                           if (m := _BLOCK_KEY.match(k)) and m[1] is not None})
    index = {pos: i + 1 for i, pos in enumerate(order)}
    out: dict[str, str] = {}
    for key in materialized_keys:
        layer, _, leaf = key.rpartition(".")
        if layer in _TOP_LAYERS:
            out[key] = f"{_TOP_LAYERS[layer]}.{leaf}"
            continue
        m = _BLOCK_KEY.match(key)
        if m is None:
            raise KeyError(f"no plain MobileNetV3 layer for {key!r}")
        block = 0 if m[1] is None else index[(int(m[1]), int(m[2]))]
        out[key] = f"blocks.{block}.{_BLOCK_LAYERS[m[3]]}.{m[4]}"
    return out


def load_from_materialized(plain: nn.Module, materialized: nn.Module) -> dict[str, str]:
    """Copy ``materialized``'s weights into ``plain`` (strict: every key, every shape).

    Returns:
        The name mapping used.

    Raises:
        KeyError / RuntimeError: a key has no counterpart or a shape differs.
    """
    source: Mapping[str, torch.Tensor] = materialized.state_dict()
    mapping = name_mapping(list(source))
    plain.load_state_dict({mapping[k]: v.clone() for k, v in source.items()}, strict=True)
    return mapping
