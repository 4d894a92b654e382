"""Once-for-All's blocks and networks, written with our layers under OFA's module names.

Its MobileNetV3 and ProxylessNAS supernets (see models/ofa.py): the (dynamic) MBConv block, its
squeeze-excite, the residual wrapper, the flat list of elastic stages that OFA keeps in
``blocks``, the stage layouts, the two spaces; and the renaming of older checkpoints' keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._layers import make_divisible, maybe_compose
except ImportError:  # pragma: no cover - exercised through the CLI
    from _layers import make_divisible, maybe_compose

__all__ = ["DEPTHS", "EXPAND_RATIOS", "KERNELS", "MBV3_STAGES", "MOBILENETV3", "PROXYLESS",
           "PROXYLESS_STAGES", "Layout", "MBConv", "OFAMobileNetV3Space", "OFAProxylessSpace",
           "ResidualBlock", "SqueezeExcite", "act", "elastic_stages", "seq", "stage_widths",
           "translate_ofa_keys"]

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


KERNELS = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
DEPTHS = (2, 3, 4)


@dataclass(frozen=True)
class Layout:
    """The block slots of each stage of an OFA network (its ``block_group_info``).

    A stage of ``max(DEPTHS)`` slots has an elastic depth (label ``d.{s}``); a shorter one is
    fixed, and OFA's depth for it is clipped to its length, as OFA's ``set_active_subnet``
    does (``min(len(stage), d)``). ``name`` is the ``name`` of the network's ``net.config``.
    """

    stages: tuple[int, ...]
    name: str = "MobileNetV3"

    @property
    def n_slots(self) -> int:
        """Elastic block slots in all (the length of OFA's ``ks`` and ``e``)."""
        return sum(self.stages)

    def elastic(self, s: int) -> bool:
        """Whether stage ``s`` has a depth choice."""
        return self.stages[s] == max(DEPTHS)

    def depths(self) -> list[Any]:
        """The depths of ``se.Repeat`` for the stages: a ``Choice`` or the fixed length."""
        return [se.Choice(DEPTHS, f"d.{s}") if self.elastic(s) else n
                for s, n in enumerate(self.stages)]


MOBILENETV3 = Layout((4, 4, 4, 4, 4), "MobileNetV3")
PROXYLESS = Layout((4, 4, 4, 4, 4, 1), "ProxylessNASNets")
#: (base width, stride, activation, squeeze-excite) of the elastic stages.
MBV3_STAGES = ((24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hswish", False),
               (112, 1, "hswish", True), (160, 2, "hswish", True))
PROXYLESS_STAGES = ((24, 2, "relu6", False), (40, 2, "relu6", False), (80, 2, "relu6", False),
                    (96, 1, "relu6", False), (192, 2, "relu6", False), (320, 1, "relu6", False))


def stage_widths(stages: Sequence[tuple[int, int, str, bool]],
                 width_mult: float) -> list[tuple]:
    """``stages`` with each base width scaled by ``width_mult`` (OFA's ``make_divisible``)."""
    return [(make_divisible(w * width_mult, 8), *rest) for w, *rest in stages]


class OFAMobileNetV3Space(nn.Module):
    """The search space (placeholders) of ``OFAMobileNetV3`` at ``width_mult``."""

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000,
                 dropout: float = 0.1) -> None:
        super().__init__()
        stem, first, expand, mix = (make_divisible(w * width_mult, 8) for w in (16, 16, 960, 1280))
        bn = {"eps": 1e-5, "momentum": 0.1}  # OFA's bn_param=(0.1, 1e-5), set by set_bn_param
        self.first_conv = seq(conv=nn.Conv2d(3, stem, 3, 2, 1, bias=False),
                              bn=nn.BatchNorm2d(stem, **bn), act=nn.Hardswish())
        head = MBConv(stem, first, 3, 1, 1, "relu", False, bn["eps"], dynamic=False)
        stages = stage_widths(MBV3_STAGES, width_mult)
        blocks = elastic_stages(first, stages, MOBILENETV3.stages, KERNELS, EXPAND_RATIOS,
                                bn["eps"])
        self.blocks = se.Repeat([ResidualBlock(head, stem == first), *blocks],
                                [1, *MOBILENETV3.depths()])
        cin = stages[-1][0]
        self.final_expand_layer = seq(conv=nn.Conv2d(cin, expand, 1, bias=False),
                                      bn=nn.BatchNorm2d(expand, **bn), act=nn.Hardswish())
        self.feature_mix_layer = seq(conv=nn.Conv2d(expand, mix, 1, bias=False),
                                     act=nn.Hardswish())
        self.classifier = seq(dropout=nn.Dropout(dropout), linear=nn.Linear(mix, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand_layer(self.blocks(self.first_conv(x)))
        x = self.feature_mix_layer(x.mean((2, 3), keepdim=True))
        return self.classifier(torch.flatten(x, 1))

    def translate_state_dict(self, state: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
        """An older OFA checkpoint's state renamed to this network's keys, and a note; or None.

        See :func:`translate_ofa_keys`.
        """
        return translate_ofa_keys(state, self.state_dict().keys())


class OFAProxylessSpace(nn.Module):
    """The search space (placeholders) of ``OFAProxylessNASNets`` at ``width_mult``."""

    def __init__(self, width_mult: float = 1.3, num_classes: int = 1000,
                 dropout: float = 0.1) -> None:
        super().__init__()
        stem, first, mix = (make_divisible(w * width_mult, 8) for w in (32, 16, 1280))
        bn = {"eps": 1e-3, "momentum": 0.1}  # OFA's default bn_param=(0.1, 1e-3)
        self.first_conv = seq(conv=nn.Conv2d(3, stem, 3, 2, 1, bias=False),
                              bn=nn.BatchNorm2d(stem, **bn), act=nn.ReLU6())
        head = MBConv(stem, first, 3, 1, 1, "relu6", False, bn["eps"], dynamic=False)
        stages = stage_widths(PROXYLESS_STAGES, width_mult)
        blocks = elastic_stages(first, stages, PROXYLESS.stages, KERNELS, EXPAND_RATIOS,
                                bn["eps"])
        self.blocks = se.Repeat([ResidualBlock(head, False), *blocks], [1, *PROXYLESS.depths()])
        self.feature_mix_layer = seq(conv=nn.Conv2d(stages[-1][0], mix, 1, bias=False),
                                     bn=nn.BatchNorm2d(mix, **bn), act=nn.ReLU6())
        self.classifier = seq(dropout=nn.Dropout(dropout), linear=nn.Linear(mix, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_mix_layer(self.blocks(self.first_conv(x)))
        return self.classifier(x.mean((2, 3)))

    def translate_state_dict(self, state: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
        """An older OFA checkpoint's state renamed to this network's keys, and a note; or None.

        See :func:`translate_ofa_keys`.
        """
        return translate_ofa_keys(state, self.state_dict().keys())


#: The block attribute of OFA's older releases (``MobileInvertedResidualBlock``), renamed.
OLD_BLOCK_ATTR = (".mobile_inverted_conv.", ".conv.")
#: One level of OFA's dynamic wrappers added or removed, as OFA's ``load_state_dict`` tries.
OFA_NESTING = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"),
               (".linear.linear.", ".linear."), (".linear.", ".linear.linear."),
               ("bn.", "bn.bn."), ("conv.weight", "conv.conv.weight"))


def translate_ofa_keys(state: Mapping[str, Any],
                       own: Collection[str]) -> tuple[dict[str, Any], str] | None:
    """``state`` with the keys of older OFA checkpoints renamed, as OFA's own loader does.

    A key the network lacks gets ``.mobile_inverted_conv.`` renamed ``.conv.``, then, if that is
    still not one of the network's, one of :data:`OFA_NESTING` (the first giving one).

    Args:
        state: a checkpoint's state dict.
        own: the keys of the network it is for.

    Returns:
        (the renamed state, in its order, and a one-line note of what was renamed), or None
        when no key could be renamed to one of ``own``.
    """
    out: dict[str, Any] = {}
    counts = {"old": 0, "nesting": 0}
    for key, value in state.items():
        new = key
        if key not in own:
            renamed = key.replace(*OLD_BLOCK_ATTR)
            nested = [renamed.replace(o, r) for o, r in OFA_NESTING if o in renamed]
            hit = next((c for c in [renamed, *nested] if c in own and c != key), None)
            if hit is not None:
                new = hit
                counts["old" if ".mobile_inverted_conv." in key else "nesting"] += 1
        out[new] = value
    if not any(counts.values()):
        return None
    parts = ([f"{counts['old']} from '.mobile_inverted_conv.' to '.conv.'"] if counts["old"]
             else []) + ([f"{counts['nesting']} by one level of OFA's dynamic wrappers"]
                         if counts["nesting"] else [])
    return out, "renamed the keys of an older OFA checkpoint: " + ", ".join(parts)
