"""Once-for-All's supernets, ``mobilenetv3_w10``, ``_w12``, ``proxyless_w13``.

The spaces of ``OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
depth_list=[2, 3, 4], width_mult=1.0 or 1.2)`` and of ``OFAProxylessNASNets`` with the same
lists and ``width_mult=1.3``, written with our layers but with OFA's module names, so that
``state_dict()`` has exactly its keys, shapes and BatchNorm settings and its checkpoints
(``torch.load(path)["state_dict"]``) load strictly, unmapped.

MobileNetV3 (BatchNorm eps 1e-5, momentum 0.1): ``first_conv`` (3x3 stride 2, BN, hardswish);
``blocks``: ``blocks.0`` a fixed 3x3 depthwise block without expansion, then five stages of
four elastic MBConv blocks (``blocks.1`` ... ``blocks.20``, one flat list as in OFA, widths
24, 40, 80, 112, 160 at 1.0, strides 2, 2, 2, 1, 2, ReLU in stages 1-2 and hardswish after,
squeeze-excite in stages 2, 4 and 5); ``final_expand_layer`` (1x1 to 960, BN, hardswish),
global pooling, ``feature_mix_layer`` (1x1 to 1280 without BN, hardswish) and ``classifier``
(dropout, linear).

ProxylessNAS (BatchNorm eps 1e-3, OFA's default ``bn_param``; momentum 0.1; ReLU6 throughout,
no squeeze-excite): ``first_conv`` (3x3 stride 2, BN, ReLU6), ``blocks.0`` fixed as above
(never residual), five stages of four elastic blocks and a sixth of one (``blocks.1`` ...
``blocks.21``; widths 24, 40, 80, 96, 192, 320 at 1.0, strides 2, 2, 2, 1, 2, 1), then
``feature_mix_layer`` (1x1 to 1280, BN, ReLU6) before global pooling, and ``classifier``.

The wrappers OFA puts around its dynamic layers (``...conv.conv.weight``, ``...bn.bn.weight``)
are single-child containers here; the depthwise kernels use OFA's learnt kernel transforms in
its layout (``se.Conv2d(..., kernel_transform="ofa")``).

Labels follow OFA's arch dict ``{"ks": [...], "e": [...], "d": [...]}``: ``ks.{j}`` and
``e.{j}`` for block slot ``j`` (``blocks.{j + 1}``), ``d.{s}`` for each stage ``s`` of four
slots; :func:`ofa_arch_to_labels` and :func:`labels_to_ofa_arch` translate, given the
network's :class:`Layout` (:data:`MOBILENETV3` or :data:`PROXYLESS`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import subnet_export as se
from subnet_export.errors import ArchError

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._layers import make_divisible
    from ._ofa_blocks import MBConv, ResidualBlock, elastic_stages, seq
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _layers import make_divisible
    from _ofa_blocks import MBConv, ResidualBlock, elastic_stages, seq

__all__ = ["MOBILENETV3", "PROXYLESS", "Layout", "OFAMobileNetV3Space", "OFAProxylessSpace",
           "labels_to_ofa_arch", "mobilenetv3_w10", "mobilenetv3_w12", "ofa_arch_to_labels",
           "proxyless_w13", "translate_arch"]

KERNELS = (3, 5, 7)
EXPAND_RATIOS = (3, 4, 6)
DEPTHS = (2, 3, 4)


@dataclass(frozen=True)
class Layout:
    """The block slots of each stage of an OFA network (its ``block_group_info``).

    A stage of ``max(DEPTHS)`` slots has an elastic depth (label ``d.{s}``); a shorter one is
    fixed, and OFA's depth for it is clipped to its length, as OFA's ``set_active_subnet``
    does (``min(len(stage), d)``).
    """

    stages: tuple[int, ...]

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


MOBILENETV3 = Layout((4, 4, 4, 4, 4))
PROXYLESS = Layout((4, 4, 4, 4, 4, 1))
#: (base width, stride, activation, squeeze-excite) of the elastic stages.
MBV3_STAGES = ((24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hswish", False),
               (112, 1, "hswish", True), (160, 2, "hswish", True))
PROXYLESS_STAGES = ((24, 2, "relu6", False), (40, 2, "relu6", False), (80, 2, "relu6", False),
                    (96, 1, "relu6", False), (192, 2, "relu6", False), (320, 1, "relu6", False))


def _widths(stages: tuple[tuple[int, int, str, bool], ...], width_mult: float) -> list[tuple]:
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
        stages = _widths(MBV3_STAGES, width_mult)
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
        stages = _widths(PROXYLESS_STAGES, width_mult)
        blocks = elastic_stages(first, stages, PROXYLESS.stages, KERNELS, EXPAND_RATIOS,
                                bn["eps"])
        self.blocks = se.Repeat([ResidualBlock(head, False), *blocks], [1, *PROXYLESS.depths()])
        self.feature_mix_layer = seq(conv=nn.Conv2d(stages[-1][0], mix, 1, bias=False),
                                     bn=nn.BatchNorm2d(mix, **bn), act=nn.ReLU6())
        self.classifier = seq(dropout=nn.Dropout(dropout), linear=nn.Linear(mix, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_mix_layer(self.blocks(self.first_conv(x)))
        return self.classifier(x.mean((2, 3)))


def _build(space: Any, layout: Layout, width_mult: float, strategy: str, seed: int,
           num_classes: int, resolution: int, calib_steps: int) -> nn.Module:
    net = seeded_supernet(lambda: space(width_mult, num_classes), strategy, seed,
                          (1, 3, resolution, resolution), calib_steps=calib_steps)
    # se.freeze and --arch take OFA's {ks, e, d} too
    net.translate_arch = functools.partial(translate_arch, layout=layout)
    return net


def translate_arch(arch: Mapping[str, Any], layout: Layout = MOBILENETV3) -> dict[str, int] | None:
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
    return ofa_arch_to_labels(arch, layout)


def mobilenetv3_w10(strategy: str = "sampling", seed: int = 0, *, num_classes: int = 1000,
                    resolution: int = 224, calib_steps: int = 0) -> nn.Module:
    """OFA's ``ofa_mbv3_d234_e346_k357_w1.0`` supernet, seeded (load trained weights over it).

    BatchNorm statistics are seeded random ones; ``calib_steps`` > 0 estimates them instead.
    """
    return _build(OFAMobileNetV3Space, MOBILENETV3, 1.0, strategy, seed, num_classes,
                  resolution, calib_steps)


def mobilenetv3_w12(strategy: str = "sampling", seed: int = 0, *, num_classes: int = 1000,
                    resolution: int = 224, calib_steps: int = 0) -> nn.Module:
    """OFA's ``ofa_mbv3_d234_e346_k357_w1.2`` supernet, seeded; see :func:`mobilenetv3_w10`."""
    return _build(OFAMobileNetV3Space, MOBILENETV3, 1.2, strategy, seed, num_classes,
                  resolution, calib_steps)


def proxyless_w13(strategy: str = "sampling", seed: int = 0, *, num_classes: int = 1000,
                  resolution: int = 224, calib_steps: int = 0) -> nn.Module:
    """OFA's ``ofa_proxyless_d234_e346_k357_w1.3`` supernet, seeded; see :func:`mobilenetv3_w10`.

    Its arch dicts have 21 ``ks`` and ``e`` values and 6 ``d`` values (the last stage has one
    block, whatever its ``d``).
    """
    return _build(OFAProxylessSpace, PROXYLESS, 1.3, strategy, seed, num_classes, resolution,
                  calib_steps)


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


def ofa_arch_to_labels(arch: Mapping[str, Any], layout: Layout = MOBILENETV3) -> dict[str, int]:
    """Our arch (labels ``ks.{j}``, ``e.{j}``, ``d.{s}``) of an OFA arch dict.

    Args:
        arch: ``{"ks": [...], "e": [...], "d": [...]}`` as OFA's ``sample_active_subnet``
            returns it (``layout.n_slots``, ``layout.n_slots`` and ``len(layout.stages)``
            values: 20, 20 and 5 for MobileNetV3, 21, 21 and 6 for ProxylessNAS; an int
            stands for every slot, as in OFA).
        layout: the network's :class:`Layout`.

    Returns:
        A complete arch for the layout's supernets. Slots beyond a stage's depth are ignored,
        as OFA ignores them: a valid value there is kept, anything else becomes the smallest
        candidate. A fixed stage has no label; its depth must be a depth candidate or its
        length (OFA clips it to the length).

    Raises:
        ArchError: a key is missing, a list has the wrong length, or an active value is not
            a candidate.
    """
    n = layout.n_slots
    ks, es, ds = (_values(arch, "ks", n), _values(arch, "e", n),
                  _values(arch, "d", len(layout.stages)))
    out: dict[str, int] = {}
    active: list[bool] = []
    for s, (d, slots) in enumerate(zip(ds, layout.stages, strict=True)):
        _check("d", s, d, DEPTHS if layout.elastic(s) else tuple(sorted({slots, *DEPTHS})))
        if layout.elastic(s):
            out[f"d.{s}"] = d
        active += [i < d for i in range(slots)]
    for j in range(n):
        for key, values, cands in (("ks", ks, KERNELS), ("e", es, EXPAND_RATIOS)):
            if active[j]:
                _check(key, j, values[j], cands)
            valid = type(values[j]) is int and values[j] in cands
            out[f"{key}.{j}"] = values[j] if valid else cands[0]
    return out


def labels_to_ofa_arch(arch: Mapping[str, Any],
                       layout: Layout = MOBILENETV3) -> dict[str, list[int]]:
    """OFA's arch dict ``{"ks": [...], "e": [...], "d": [...]}`` of our arch (labels as above).

    A fixed stage's depth is its length, as OFA's ``sample_active_subnet`` gives it.

    Raises:
        ArchError: a label is missing.
    """
    try:
        return {"ks": [int(arch[f"ks.{j}"]) for j in range(layout.n_slots)],
                "e": [int(arch[f"e.{j}"]) for j in range(layout.n_slots)],
                "d": [int(arch[f"d.{s}"]) if layout.elastic(s) else n
                      for s, n in enumerate(layout.stages)]}
    except KeyError as err:
        raise ArchError(f"label {err.args[0]!r} is missing from the arch", err.args[0]) from None
