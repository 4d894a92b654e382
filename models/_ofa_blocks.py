"""Once-for-All's blocks, written with our layers under OFA's module names (see models/ofa.py).

Shared by its MobileNetV3 and ProxylessNAS supernets: the (dynamic) MBConv block, its
squeeze-excite, the residual wrapper, and the flat list of elastic stages that OFA keeps in
``blocks``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._layers import make_divisible, maybe_compose
except ImportError:  # pragma: no cover - exercised through the CLI
    from _layers import make_divisible, maybe_compose

__all__ = ["MBConv", "ResidualBlock", "SqueezeExcite", "act", "elastic_stages", "seq"]

_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}


def act(kind: str) -> nn.Module:
    """OFA's ``build_activation`` for its networks' kinds: ``relu``, ``relu6``, ``hswish``."""
    return _ACTS[kind]()


def seq(**layers: nn.Module | None) -> nn.Sequential:
    """An ``nn.Sequential`` of the named layers that are not None, in order."""
    return nn.Sequential(OrderedDict((k, m) for k, m in layers.items() if m is not None))


class SqueezeExcite(nn.Module):
    """OFA's SEModule: mean pool, ``fc.reduce`` (1x1), ReLU, ``fc.expand`` (1x1), hardsigmoid."""

    def __init__(self, channels: Any, squeeze: Any) -> None:
        super().__init__()
        self.fc = seq(reduce=se.Conv2d(channels, squeeze, 1), relu=nn.ReLU(),
                      expand=se.Conv2d(squeeze, channels, 1), h_sigmoid=nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class MBConv(nn.Module):
    """OFA's (Dynamic)MBConvLayer: [inverted_bottleneck], depth_conv [+ se], point_linear.

    ``dynamic`` nests every conv and BN one level down as OFA's dynamic wrappers do
    (``conv.conv``, ``bn.bn``); the fixed first block has no such nesting. ``eps`` is the
    network's BatchNorm eps (OFA's ``bn_param``; momentum is 0.1 in both networks).
    """

    def __init__(self, cin: int, cout: int, kernel: Any, ratio: Any, stride: int, act_kind: str,
                 use_se: bool, eps: float, dynamic: bool = True) -> None:
        super().__init__()
        wrap = (lambda name, m: seq(**{name: m})) if dynamic else (lambda name, m: m)

        def bn(channels: Any) -> nn.Module:
            return wrap("bn", se.BatchNorm2d(channels, eps=eps, momentum=0.1))

        mid = maybe_compose(lambda e: make_divisible(round(cin * e), 8), ratio)
        self.inverted_bottleneck = None if ratio == 1 else seq(
            conv=wrap("conv", se.Conv2d(cin, mid, 1, bias=False)), bn=bn(mid), act=act(act_kind))
        depthwise = se.Conv2d(mid, mid, kernel, stride, maybe_compose(lambda k: k // 2, kernel),
                              groups=mid, bias=False, kernel_transform="ofa" if dynamic else False)
        squeeze = maybe_compose(lambda m: make_divisible(m // 4, 8), mid)
        self.depth_conv = seq(conv=depthwise, bn=bn(mid), act=act(act_kind),
                              se=SqueezeExcite(mid, squeeze) if use_se else None)
        self.point_linear = seq(conv=wrap("conv", se.Conv2d(mid, cout, 1, bias=False)),
                                bn=bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ResidualBlock(nn.Module):
    """OFA's ResidualBlock: ``conv(x)``, plus ``x`` when the shortcut is an identity."""

    def __init__(self, conv: MBConv, residual: bool) -> None:
        super().__init__()
        self.conv = conv
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x if self.residual else self.conv(x)


def elastic_stages(cin: int, stages: Sequence[tuple[int, int, str, bool]],
                   slots: Sequence[int], kernels: Sequence[int], ratios: Sequence[int],
                   eps: float) -> list[ResidualBlock]:
    """OFA's elastic blocks, one flat list: stage ``s`` has ``slots[s]`` blocks of
    ``stages[s] = (width, stride, activation, squeeze-excite)``, the first with the stride.

    Block slot ``j`` (counted over all stages) chooses ``ks.{j}`` in ``kernels`` and ``e.{j}``
    in ``ratios``; a block has the identity shortcut when its stride is 1 and its width
    unchanged, as in OFA.
    """
    blocks = []
    for (width, stride, act_kind, use_se), n in zip(stages, slots, strict=True):
        for i in range(n):
            j, step = len(blocks), stride if i == 0 else 1
            mb = MBConv(cin, width, se.Choice(tuple(kernels), f"ks.{j}"),
                        se.Choice(tuple(ratios), f"e.{j}"), step, act_kind, use_se, eps)
            blocks.append(ResidualBlock(mb, step == 1 and cin == width))
            cin = width
    return blocks
