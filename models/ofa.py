"""Once-for-All's MobileNetV3 supernets, parameter for parameter: ``mobilenetv3_w10``, ``_w12``.

The spaces of ``OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
depth_list=[2, 3, 4], width_mult=1.0 or 1.2)``, written with our layers but with its module
names, so that ``state_dict()`` has exactly its keys, shapes and BatchNorm settings (eps 1e-5,
momentum 0.1) and its checkpoints (``torch.load(path)["state_dict"]``) load strictly, unmapped.

Layout: ``first_conv`` (3x3 stride 2, BN, hardswish); ``blocks``: ``blocks.0`` a fixed 3x3
depthwise block without expansion, then five stages of four elastic MBConv blocks
(``blocks.1`` ... ``blocks.20``, one flat list as in OFA, widths 24, 40, 80, 112, 160 at 1.0,
strides 2, 2, 2, 1, 2, ReLU in stages 1-2 and hardswish after, squeeze-excite in stages 2, 4
and 5); ``final_expand_layer`` (1x1 to 960, BN, hardswish), global pooling,
``feature_mix_layer`` (1x1 to 1280 without BN, hardswish) and ``classifier`` (dropout, linear).
The wrappers OFA puts around its dynamic layers (``...conv.conv.weight``, ``...bn.bn.weight``)
are single-child containers here; the depthwise kernels use OFA's learnt kernel transforms in
its layout (``se.Conv2d(..., kernel_transform="ofa")``).

Labels follow OFA's arch dict ``{"ks": [20], "e": [20], "d": [5]}``: ``ks.{j}`` and ``e.{j}``
for block slot ``j`` (``blocks.{j + 1}``), ``d.{s}`` for stage ``s``;
:func:`ofa_arch_to_labels` and :func:`labels_to_ofa_arch` translate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import subnet_export as se
from subnet_export.errors import ArchError

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._layers import make_divisible, maybe_compose
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _layers import make_divisible, maybe_compose

__all__ = ["OFAMobileNetV3Space", "labels_to_ofa_arch", "mobilenetv3_w10", "mobilenetv3_w12",
           "ofa_arch_to_labels", "translate_arch"]

KERNELS = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
DEPTHS = (2, 3, 4)
N_STAGES, N_SLOTS = 5, 20
BN_ARGS = {"eps": 1e-5, "momentum": 0.1}  # OFA's bn_param=(0.1, 1e-5), set by set_bn_param
#: OFA's base_stage_width: stem, first block, the five stages, final expand, feature mix.
BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
#: (stride, activation, squeeze-excite) of the five elastic stages.
STAGES = ((2, "relu", False), (2, "relu", True), (2, "hswish", False), (1, "hswish", True),
          (2, "hswish", True))


def _act(kind: str) -> nn.Module:
    return nn.ReLU() if kind == "relu" else nn.Hardswish()


def _seq(**layers: nn.Module | None) -> nn.Sequential:
    return nn.Sequential(OrderedDict((k, m) for k, m in layers.items() if m is not None))


class SqueezeExcite(nn.Module):
    """OFA's SEModule: mean pool, ``fc.reduce`` (1x1), ReLU, ``fc.expand`` (1x1), hardsigmoid."""

    def __init__(self, channels: Any, squeeze: Any) -> None:
        super().__init__()
        self.fc = _seq(reduce=se.Conv2d(channels, squeeze, 1), relu=nn.ReLU(),
                       expand=se.Conv2d(squeeze, channels, 1), h_sigmoid=nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class MBConv(nn.Module):
    """OFA's (Dynamic)MBConvLayer: [inverted_bottleneck], depth_conv [+ se], point_linear.

    ``dynamic`` nests every conv and BN one level down as OFA's dynamic wrappers do
    (``conv.conv``, ``bn.bn``); the fixed first block has no such nesting.
    """

    def __init__(self, cin: int, cout: int, kernel: Any, ratio: Any, stride: int, act: str,
                 use_se: bool, dynamic: bool = True) -> None:
        super().__init__()
        wrap = (lambda name, m: _seq(**{name: m})) if dynamic else (lambda name, m: m)
        mid = maybe_compose(lambda e: make_divisible(round(cin * e), 8), ratio)
        self.inverted_bottleneck = None if ratio == 1 else _seq(
            conv=wrap("conv", se.Conv2d(cin, mid, 1, bias=False)),
            bn=wrap("bn", se.BatchNorm2d(mid, **BN_ARGS)), act=_act(act))
        depthwise = se.Conv2d(mid, mid, kernel, stride, maybe_compose(lambda k: k // 2, kernel),
                              groups=mid, bias=False, kernel_transform="ofa" if dynamic else False)
        squeeze = maybe_compose(lambda m: make_divisible(m // 4, 8), mid)
        self.depth_conv = _seq(conv=depthwise, bn=wrap("bn", se.BatchNorm2d(mid, **BN_ARGS)),
                               act=_act(act), se=SqueezeExcite(mid, squeeze) if use_se else None)
        self.point_linear = _seq(conv=wrap("conv", se.Conv2d(mid, cout, 1, bias=False)),
                                 bn=wrap("bn", se.BatchNorm2d(cout, **BN_ARGS)))

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


class OFAMobileNetV3Space(nn.Module):
    """The search space (placeholders) of ``OFAMobileNetV3`` at ``width_mult``."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000,
                 dropout: float = 0.1) -> None:
        super().__init__()
        widths = [make_divisible(w * width_mult, 8) for w in BASE_WIDTHS]
        stem, first = widths[0], widths[1]
        self.first_conv = _seq(conv=nn.Conv2d(3, stem, 3, 2, 1, bias=False),
                               bn=nn.BatchNorm2d(stem, **BN_ARGS), act=nn.Hardswish())
        blocks = [ResidualBlock(MBConv(stem, first, 3, 1, 1, "relu", False, dynamic=False),
                                stem == first)]
        cin = first
        for s, (stride, act, use_se) in enumerate(STAGES):
            for i in range(max(DEPTHS)):
                j = s * max(DEPTHS) + i
                step = stride if i == 0 else 1
                mb = MBConv(cin, widths[2 + s], se.Choice(KERNELS, f"ks.{j}"),
                            se.Choice(EXPAND_RATIOS, f"e.{j}"), step, act, use_se)
                blocks.append(ResidualBlock(mb, step == 1 and cin == widths[2 + s]))
                cin = widths[2 + s]
        depths = [se.Choice(DEPTHS, f"d.{s}") for s in range(N_STAGES)]
        self.blocks = se.Repeat(blocks, [1, *depths])
        self.final_expand_layer = _seq(conv=nn.Conv2d(cin, widths[7], 1, bias=False),
                                       bn=nn.BatchNorm2d(widths[7], **BN_ARGS),
                                       act=nn.Hardswish())
        self.feature_mix_layer = _seq(conv=nn.Conv2d(widths[7], widths[8], 1, bias=False),
                                      act=nn.Hardswish())
        self.classifier = _seq(dropout=nn.Dropout(dropout),
                               linear=nn.Linear(widths[8], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand_layer(self.blocks(self.first_conv(x)))
        x = self.feature_mix_layer(x.mean((2, 3), keepdim=True))
        return self.classifier(torch.flatten(x, 1))


def _build(width_mult: float, strategy: str, seed: int, num_classes: int,
           resolution: int, calib_steps: int) -> nn.Module:
    net = seeded_supernet(lambda: OFAMobileNetV3Space(width_mult, num_classes), strategy, seed,
                          (1, 3, resolution, resolution), calib_steps=calib_steps)
    net.translate_arch = translate_arch  # se.freeze and --arch take OFA's {ks, e, d} too
    return net


def translate_arch(arch: Mapping[str, Any]) -> dict[str, int] | None:
    """Our labels of an OFA arch dict, or None when ``arch`` is not one (no ``ks``/``e``/``d``).

    OFA's ``r`` / ``image_size`` (the resolution the arch was searched at) is not part of the
    network: give it as the input shape (``--input-shape 1x3xRxR``).
    """
    if not {"ks", "e", "d"} & set(arch):
        return None
    extra = sorted(set(arch) - {"ks", "e", "d", "r", "image_size"})
    if extra:
        raise ArchError(f"unknown key {extra[0]!r} in the OFA arch; it has 'ks', 'e' and 'd' "
                        "(and optionally 'r' or 'image_size')", extra[0])
    return ofa_arch_to_labels(arch)


def mobilenetv3_w10(strategy: str = "sampling", seed: int = 0, *, num_classes: int = 1000,
                    resolution: int = 224, calib_steps: int = 0) -> nn.Module:
    """OFA's ``ofa_mbv3_d234_e346_k357_w1.0`` supernet, seeded (load trained weights over it).

    BatchNorm statistics are seeded random ones; ``calib_steps`` > 0 estimates them instead.
    """
    return _build(1.0, strategy, seed, num_classes, resolution, calib_steps)


def mobilenetv3_w12(strategy: str = "sampling", seed: int = 0, *, num_classes: int = 1000,
                    resolution: int = 224, calib_steps: int = 0) -> nn.Module:
    """OFA's ``ofa_mbv3_d234_e346_k357_w1.2`` supernet, seeded; see :func:`mobilenetv3_w10`."""
    return _build(1.2, strategy, seed, num_classes, resolution, calib_steps)


def _values(arch: Mapping[str, Any], key: str, n: int) -> list[Any]:
    if key not in arch:
        raise ArchError(f"the OFA arch has no {key!r}; it needs 'ks', 'e' and 'd'", key)
    value = arch[key]
    if type(value) is int:  # OFA's val2list: one value for every slot
        return [value] * n
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ArchError(f"OFA arch {key!r} must be an int or a list of {n}, got {value!r}", key)
    return list(value)


def _check(key: str, j: int, value: Any, candidates: tuple[int, ...]) -> None:
    if type(value) is not int or value not in candidates:
        raise ArchError(f"OFA arch {key}[{j}] is {value!r}; valid values are "
                        f"{list(candidates)}", f"{key}.{j}")


def ofa_arch_to_labels(arch: Mapping[str, Any]) -> dict[str, int]:
    """Our arch (labels ``ks.{j}``, ``e.{j}``, ``d.{s}``) of an OFA arch dict.

    Args:
        arch: ``{"ks": [...], "e": [...], "d": [...]}`` as OFA's ``sample_active_subnet``
            returns it (20, 20 and 5 values; an int stands for every slot, as in OFA).

    Returns:
        A complete arch for :func:`mobilenetv3_w10` and :func:`mobilenetv3_w12`. Slots beyond a
        stage's depth are ignored, as OFA ignores them: a valid value there is kept, anything
        else becomes the smallest candidate.

    Raises:
        ArchError: a key is missing, a list has the wrong length, or an active value is not
            a candidate.
    """
    ks, es, ds = (_values(arch, "ks", N_SLOTS), _values(arch, "e", N_SLOTS),
                  _values(arch, "d", N_STAGES))
    out: dict[str, int] = {}
    for s, d in enumerate(ds):
        _check("d", s, d, DEPTHS)
        out[f"d.{s}"] = d
    for j in range(N_SLOTS):
        active = j % max(DEPTHS) < ds[j // max(DEPTHS)]
        for key, values, cands in (("ks", ks, KERNELS), ("e", es, EXPAND_RATIOS)):
            if active:
                _check(key, j, values[j], cands)
            valid = type(values[j]) is int and values[j] in cands
            out[f"{key}.{j}"] = values[j] if valid else cands[0]
    return out


def labels_to_ofa_arch(arch: Mapping[str, Any]) -> dict[str, list[int]]:
    """OFA's arch dict ``{"ks": [20], "e": [20], "d": [5]}`` of our arch (labels as above).

    Raises:
        ArchError: a label is missing.
    """
    try:
        return {"ks": [int(arch[f"ks.{j}"]) for j in range(N_SLOTS)],
                "e": [int(arch[f"e.{j}"]) for j in range(N_SLOTS)],
                "d": [int(arch[f"d.{s}"]) for s in range(N_STAGES)]}
    except KeyError as err:
        raise ArchError(f"label {err.args[0]!r} is missing from the arch", err.args[0]) from None
