"""Once-for-All's ResNet layers, written with our layers under OFA's module names.

The pieces of ``OFAResNets`` (see models/ofa_resnet.py): its 3x3 conv layer of the input stem
(``DynamicConvLayer``), its bottleneck block (``DynamicResNetBottleneckBlock``), and the widths
and depths of its published configuration.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._layers import make_divisible
except ImportError:  # pragma: no cover - exercised through the CLI
    from _layers import make_divisible

__all__ = ["BASE_DEPTHS", "BN", "Bottleneck", "DEPTHS", "EXPAND_RATIOS", "STAGE_WIDTHS",
           "STEM_MID_WIDTHS", "STEM_WIDTHS", "STRIDES", "WIDTH_MULTS", "conv_layer",
           "mid_channels", "pick"]

#: OFA's ``bn_param=(0.1, 1e-5)``, set on every BatchNorm by ``set_bn_param``.
BN = {"eps": 1e-5, "momentum": 0.1}
#: ``ResNets.BASE_DEPTH_LIST``: the blocks a stage always keeps; ``DEPTHS`` are the extra ones.
BASE_DEPTHS = (2, 2, 4, 2)
DEPTHS = (0, 1, 2)
EXPAND_RATIOS = (0.2, 0.25, 0.35)
WIDTH_MULTS = (0.65, 0.8, 1.0)
STRIDES = (1, 2, 2, 2)
#: the input stem's last width, its first two (``make_divisible(c // 2)``), then the stages'
#: (``ResNets.STAGE_WIDTH_LIST`` scaled), per width multiplier. 24 is twice in STEM_MID_WIDTHS.
STEM_WIDTHS = tuple(make_divisible(64 * m, 8) for m in WIDTH_MULTS)
STEM_MID_WIDTHS = tuple(make_divisible(c // 2, 8) for c in STEM_WIDTHS)
STAGE_WIDTHS = tuple(tuple(make_divisible(w * m, 8) for m in WIDTH_MULTS)
                     for w in (256, 512, 1024, 2048))


def mid_channels(width: int, ratio: float) -> int:
    """A bottleneck's middle width, as OFA computes it (``active_middle_channels``)."""
    return make_divisible(round(width * ratio), 8)


def pick(table: tuple[int, ...], index: Any) -> Any:
    """``table[index]`` for a width-multiplier index that may be a choice."""
    return se.compose(lambda i: table[i], index)


def _wrap(name: str, module: nn.Module) -> nn.Sequential:
    # OFA's dynamic wrappers (DynamicConv2d.conv, DynamicBatchNorm2d.bn, DynamicLinear.linear)
    return nn.Sequential(OrderedDict([(name, module)]))


def _conv_bn(cin: Any, cout: Any, kernel: int, stride: int = 1, act: bool = True,
             pool: int | None = None) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    if pool is not None:
        layers.append(("avg_pool", nn.AvgPool2d(pool, pool, 0, ceil_mode=True)))
    layers += [("conv", _wrap("conv", se.Conv2d(cin, cout, kernel, stride, kernel // 2,
                                                bias=False))),
               ("bn", _wrap("bn", se.BatchNorm2d(cout, **BN)))]
    if act:
        layers.append(("act", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


def conv_layer(cin: Any, cout: Any, stride: int) -> nn.Sequential:
    """OFA's ``DynamicConvLayer`` of the stem: 3x3 ``conv.conv`` (same padding), ``bn.bn``, ReLU."""
    return _conv_bn(cin, cout, 3, stride)


class Bottleneck(nn.Module):
    """OFA's ``DynamicResNetBottleneckBlock`` (``avgpool_conv`` downsampling).

    ``conv1`` (1x1 to ``mid``), ``conv2`` (3x3 with the stride), ``conv3`` (1x1 to ``cout``),
    added to the shortcut, then ReLU. The shortcut is the input itself when ``identity``, else
    ``downsample``: average pooling by the stride (ceil mode), 1x1 conv and BatchNorm.
    """

    def __init__(self, cin: Any, cout: Any, mid: Any, stride: int, identity: bool) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, mid, 1)
        self.conv2 = _conv_bn(mid, mid, 3, stride)
        self.conv3 = _conv_bn(mid, cout, 1, act=False)
        self.downsample = None if identity else _conv_bn(cin, cout, 1, act=False, pool=stride)
        self.final_act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.final_act(self.conv3(self.conv2(self.conv1(x))) + residual)
