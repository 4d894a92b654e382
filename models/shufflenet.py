"""Single Path One-Shot (SPOS) ShuffleNetV2 space: four choice blocks per layer.

The SPOS supernet: a 3x3 stem (16, stride 2), four stages of 4, 4, 8 and 4 blocks (the first of
each strided), a 1x1 conv, global pooling and a bias-free classifier. Every block (label
``block<n>``, n = 0..19) is one of ``shufflenet_3x3``, ``shufflenet_5x5``, ``shufflenet_7x7``
(ShuffleNetV2 units with that depthwise kernel) or ``xception`` (three depthwise-separable 3x3
convs). A stride-1 block splits its input by channel shuffle and processes one half; a strided
block processes all of it on two branches. 4^20 archs. Registered with widths 24-160, 32x32.
"""

from __future__ import annotations

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._registry import get_space, register_space
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _registry import get_space, register_space

__all__ = ["ChoiceBlock", "ShuffleNetSpace", "build", "channel_shuffle", "supernet"]

INPUT_SHAPE = (1, 3, 32, 32)
REPEATS = (4, 4, 8, 4)
CHOICES = ("shufflenet_3x3", "shufflenet_5x5", "shufflenet_7x7", "xception")


def channel_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPOS's shuffle-and-split: even channels to the first half, odd channels to the second."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 2, 2, h * w).permute(2, 0, 1, 3).reshape(2, b, c // 2, h, w)
    return x[0], x[1]


def _pw(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _dw(c: int, k: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False), nn.BatchNorm2d(c)]


class ChoiceBlock(nn.Module):
    """One SPOS block. ``cin`` is the input width; the output has ``cout`` channels."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        inp = cin if stride == 2 else cin // 2  # channels the main branch reads
        outputs, mid = cout - inp, cout // 2
        if kind == "xception":
            main = (_dw(inp, 3, stride) + _pw(inp, mid) + _dw(mid, 3, 1) + _pw(mid, mid)
                    + _dw(mid, 3, 1) + _pw(mid, outputs))
        else:
            k = int(kind[-1])
            main = _pw(inp, mid) + _dw(mid, k, stride) + _pw(mid, outputs)
        self.main = nn.Sequential(*main)
        k = 3 if kind == "xception" else int(kind[-1])
        self.proj = nn.Sequential(*(_dw(inp, k, 2) + _pw(inp, inp))) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            keep, x = channel_shuffle(x)
            return torch.cat([keep, self.main(x)], dim=1)
        return torch.cat([self.proj(x), self.main(x)], dim=1)


class ShuffleNetSpace(nn.Module):
    """The SPOS supernet; ``widths`` are the four stage widths, ``last`` the final conv width."""

    def __init__(self, widths=(64, 160, 320, 640), last: int = 1024, num_classes: int = 1000,
                 repeats=REPEATS) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        blocks, cin, n = [], 16, 0
        for width, repeat in zip(widths, repeats):
            for j in range(repeat):
                stride = 2 if j == 0 else 1
                blocks.append(se.LayerChoice(
                    {kind: ChoiceBlock(kind, cin if j == 0 else width, width, stride)
                     for kind in CHOICES}, label=f"block{n}"))
                cin, n = width, n + 1
        self.blocks = nn.Sequential(*blocks)
        self.last_conv = nn.Sequential(*_pw(cin, last))
        self.classifier = nn.Linear(last, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_conv(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_space("shufflenet", input_shape=INPUT_SHAPE,
                description="SPOS ShuffleNetV2: 20 blocks x {k3, k5, k7, xception}")
def build(strategy: str = "sampling", seed: int = 0, *, widths=(24, 40, 80, 160),
          last: int = 320, num_classes: int = 10, resolution: int = 32,
          calib_steps: int = 6) -> nn.Module:
    """The seeded supernet (registered default: widths 24-160, 10 classes, 32x32)."""
    return seeded_supernet(lambda: ShuffleNetSpace(widths, last, num_classes), strategy, seed,
                           (1, 3, resolution, resolution), calib_steps=calib_steps)


def supernet(strategy: str = "sampling") -> nn.Module:
    """CLI factory: the registered configuration with its shipped trained weights."""
    return get_space("shufflenet").build(strategy)
