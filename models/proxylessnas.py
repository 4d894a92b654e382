"""ProxylessNAS (mobile) space: per block one of six MBConvs or a skip, elastic stage depth.

Layout of ProxylessNAS-Mobile: 3x3 stem (32, ReLU6), a fixed MBConv1 k3 to 16 channels, six
stages (widths 24, 40, 80, 96, 192, 320; strides 2, 2, 2, 1, 2, 1), a 1x1 conv to 1280 and a
linear classifier. Each block chooses among MBConv with kernel {3,5,7} and expand ratio {3,6}
(keys ``k3e3`` ... ``k7e6``); blocks after a stage's first, which carry the residual, may also be
``skip`` (ProxylessNAS's zero op: the block reduces to its shortcut). Stage depth {2,3,4} keeps the
first blocks (the last stage has one block). Candidates are plain layers: weight sharing is
between archs, not between candidates. Registered at ``width_mult=0.125``, 32x32, so that the
seeded checkpoint stays under 2.5 MB.
"""

from __future__ import annotations

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._layers import make_divisible
    from ._registry import get_space, register_space
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _layers import make_divisible
    from _registry import get_space, register_space

__all__ = ["MBConv", "ProxylessSpace", "Residual", "build", "supernet"]

INPUT_SHAPE = (1, 3, 32, 32)
#: (output width, max blocks, stride) at width multiplier 1.0.
STAGES = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))
DEPTHS = (2, 3, 4)
OPS = tuple((k, e) for k in (3, 5, 7) for e in (3, 6))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class MBConv(nn.Sequential):
    """[1x1 expand, ReLU6], kxk depthwise, ReLU6, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int) -> None:
        mid = cin * expand
        layers = _conv_bn(cin, mid, 1) if expand != 1 else []
        layers += _conv_bn(mid, mid, kernel, stride, groups=mid)
        layers += _conv_bn(mid, cout, 1, act=False)
        super().__init__(*layers)


class Residual(nn.Module):
    """``x + body(x)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _block(label: str, cin: int, cout: int, stride: int, first: bool) -> nn.Module:
    ops: dict[str, nn.Module] = {}
    for k, e in OPS:
        body = MBConv(cin, cout, k, e, stride)
        ops[f"k{k}e{e}"] = body if first else Residual(body)
    if not first:
        ops["skip"] = nn.Identity()
    return se.LayerChoice(ops, label=label)


class ProxylessSpace(nn.Module):
    """The search space; labels ``s{i}.depth`` and ``s{i}.b{j}``."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        scale = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        stem, first = scale(32), scale(16)
        self.stem = nn.Sequential(*_conv_bn(3, stem, 3, 2))
        self.first = MBConv(stem, first, 3, 1, 1)
        stages, cin = [], first
        for i, (width, blocks, stride) in enumerate(STAGES, start=1):
            cout = scale(width)
            made = [_block(f"s{i}.b{j}", cin if j == 0 else cout, cout, stride if j == 0 else 1,
                           j == 0) for j in range(blocks)]
            depth = se.Choice(DEPTHS, f"s{i}.depth") if blocks > 1 else blocks
            stages.append(se.Repeat(made, depth))
            cin = cout
        self.stages = nn.Sequential(*stages)
        # ProxylessNAS keeps 1280 features below width multiplier 1.0.
        features = make_divisible(1280 * width_mult, 8) if width_mult > 1.0 else 1280
        self.feature_mix = nn.Sequential(*_conv_bn(cin, features, 1))
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_mix(self.stages(self.first(self.stem(x))))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_space("proxylessnas", input_shape=INPUT_SHAPE,
                description="ProxylessNAS-Mobile: MBConv k{3,5,7} e{3,6} or skip, elastic depth")
def build(strategy: str = "sampling", seed: int = 0, *, width_mult: float = 0.125,
          num_classes: int = 10, resolution: int = 32, calib_steps: int = 6) -> nn.Module:
    """The seeded supernet (registered default: ``width_mult=0.125``, 10 classes, 32x32)."""
    return seeded_supernet(lambda: ProxylessSpace(width_mult, num_classes), strategy, seed,
                           (1, 3, resolution, resolution), calib_steps=calib_steps)


def supernet(strategy: str = "sampling") -> nn.Module:
    """CLI factory: the registered configuration with its shipped trained weights."""
    return get_space("proxylessnas").build(strategy)
