"""Once-for-All MobileNetV3 space, widened so that it contains MobileNetV3-Large and -Small.

Layout (torchvision's MobileNetV3 naming): a 3x3 stem (16 channels, hardswish); a first block
without expansion (``b0``: kernel, stride 1 or 2, SE, activation); five stages ``s1..s5`` with
elastic depth {2,3,4} (``s3`` may also be skipped, depth 0), an elastic output width, and per
block a kernel {3,5,7} and an expanded width; then a 1x1 conv to 6x the last width, pooling and a
two-layer classifier whose hidden width is a choice.

Expanded widths are absolute channel counts rather than ratios: the candidates of a block are
{3,4,6} times each width its input can have, plus the published MobileNetV3 widths (e.g. 200 and
184, ratios 2.5 and 2.3 of Large's 80-channel stage), so both published networks are exact.
Squeeze-excite and the activation (ReLU or hardswish) are chosen per stage, as in the paper's
tables, where they are uniform within each stage. MobileNetV3-Small downsamples in its first
block and has four stages: it is the arch with ``b0.stride`` 2 and ``s3.depth`` 0.

Every width in an arch is the paper's (width multiplier 1.0) value; the ``width_mult`` of the
supernet scales them all (rounded to multiples of 8, as torchvision does), so one arch file fits
every width multiplier. The registered default is ``width_mult=0.25`` at 32x32 for fast tests.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._layers import SqueezeExcite, make_divisible, maybe_compose
    from ._registry import get_space, register_space
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _layers import SqueezeExcite, make_divisible, maybe_compose
    from _registry import get_space, register_space

__all__ = ["MBConv", "MobileNetV3Space", "build", "supernet"]

INPUT_SHAPE = (1, 3, 32, 32)
KERNELS = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
HEAD_FEATURES = (1024, 1280)
STEM = 16
#: (label, output widths, depths, stride) at width multiplier 1.0.
STAGES: tuple[tuple[str, tuple[int, ...], tuple[int, ...], int], ...] = (
    ("s1", (16, 24), (2, 3, 4), 2),
    ("s2", (32, 40), (2, 3, 4), 2),
    ("s3", (64, 80), (0, 2, 3, 4), 2),   # depth 0: MobileNetV3-Small has no such stage
    ("s4", (48, 80, 112), (2, 3, 4), 1),
    ("s5", (96, 128, 160), (2, 3, 4), 2),
)
#: Expanded widths of MobileNetV3-Large and -Small per stage and block (torchvision's tables).
PUBLISHED_EXPANSION: dict[str, tuple[tuple[int, ...], ...]] = {
    "s1": ((64, 72), (72, 88)),
    "s2": ((72, 96), (120, 240), (120, 240)),
    "s3": ((240,), (200,), (184,), (184,)),
    "s4": ((480, 120), (672, 144)),
    "s5": ((672, 288), (960, 576), (960, 576)),
}
BN_ARGS = {"eps": 1e-3, "momentum": 0.01}  # torchvision's MobileNetV3 BatchNorm


def _act(label: str) -> nn.Module:
    return se.LayerChoice({"relu": nn.ReLU(), "hswish": nn.Hardswish()}, label=label)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand], kxk depthwise, [squeeze-excite], 1x1 project.

    The residual is taken when the stride is 1 and the widths agree, which may depend on the
    arch (``use_res`` is then a choice attribute, a plain bool in the materialized block).
    """

    def __init__(self, in_ch: Any, expanded: Any, out_ch: Any, kernel: Any, stride: Any,
                 act: str, se_label: str, expand: bool = True) -> None:
        super().__init__()
        if expand:
            self.expand = nn.Sequential(se.Conv2d(in_ch, expanded, 1, bias=False),
                                        se.BatchNorm2d(expanded, **BN_ARGS), _act(act))
        else:
            self.expand = nn.Identity()
        self.depthwise = nn.Sequential(
            se.Conv2d(expanded, expanded, kernel, stride, maybe_compose(lambda k: k // 2, kernel),
                      groups=expanded, bias=False),
            se.BatchNorm2d(expanded, **BN_ARGS), _act(act))
        squeeze = maybe_compose(lambda e: make_divisible(e // 4, 8), expanded)
        self.se = se.LayerChoice({"none": nn.Identity(), "se": SqueezeExcite(expanded, squeeze)},
                                 label=se_label)
        self.project = nn.Sequential(se.Conv2d(expanded, out_ch, 1, bias=False),
                                     se.BatchNorm2d(out_ch, **BN_ARGS))
        self.use_res = maybe_compose(lambda s, i, o: s == 1 and i == o, stride, in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_res else out


class MobileNetV3Space(nn.Module):
    """The search space (placeholders); see the module docstring for its labels."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        super().__init__()
        scale = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
        width = lambda choice: se.compose(scale, choice)  # noqa: E731
        stem = scale(STEM)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(stem, **BN_ARGS), nn.Hardswish())
        self.first = MBConv(stem, stem, stem, se.Choice(KERNELS, "b0.kernel"),
                            se.Choice([1, 2], "b0.stride"), "b0.act", "b0.se", expand=False)
        stages, prev_out, prev_widths = [], stem, (STEM,)
        for name, widths, depths, stride in STAGES:
            out = width(se.Choice(widths, f"{name}.width"))
            depth = se.Choice(depths, f"{name}.depth")
            in_widths = [prev_widths, widths]

            def block(j, name=name, out=out, stride=stride, prev_out=prev_out,
                      in_widths=in_widths):
                extra = PUBLISHED_EXPANSION[name][j] if j < len(PUBLISHED_EXPANSION[name]) else ()
                cands = sorted({r * w for r in EXPAND_RATIOS for w in in_widths[min(j, 1)]}
                               | set(extra))
                return MBConv(prev_out if j == 0 else out,
                              width(se.Choice(cands, f"{name}.b{j}.expand")), out,
                              se.Choice(KERNELS, f"{name}.b{j}.kernel"), stride if j == 0 else 1,
                              f"{name}.act", f"{name}.se")

            stages.append(se.Repeat(block, depth))
            if 0 in depths:  # a skipped stage passes its input's width on
                prev_out = se.compose(lambda d, w, p: w if d else p, depth, out, prev_out)
                prev_widths = tuple(sorted(set(prev_widths) | set(widths)))
            else:
                prev_out, prev_widths = out, widths
        self.stages = nn.Sequential(*stages)
        last = se.compose(lambda c: 6 * c, prev_out)
        hidden = width(se.Choice(HEAD_FEATURES, "head.features"))
        self.last_conv = nn.Sequential(se.Conv2d(prev_out, last, 1, bias=False),
                                       se.BatchNorm2d(last, **BN_ARGS), nn.Hardswish())
        self.classifier = nn.Sequential(se.Linear(last, hidden), nn.Hardswish(),
                                        nn.Dropout(dropout), se.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_conv(self.stages(self.first(self.stem(x))))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_space("mobilenetv3", input_shape=INPUT_SHAPE,
                description="Once-for-All MobileNetV3 (contains MobileNetV3-Large and -Small)")
def build(strategy: str = "sampling", seed: int = 0, *, width_mult: float = 0.25,
          num_classes: int = 10, resolution: int = 32, calib_steps: int = 6) -> nn.Module:
    """The seeded supernet. ``width_mult=1.0, num_classes=1000, resolution=224`` is full size."""
    return seeded_supernet(lambda: MobileNetV3Space(width_mult, num_classes), strategy, seed,
                           (1, 3, resolution, resolution), calib_steps=calib_steps)


def supernet(strategy: str = "sampling") -> nn.Module:
    """CLI factory: the registered configuration with its shipped trained weights."""
    return get_space("mobilenetv3").build(strategy)
