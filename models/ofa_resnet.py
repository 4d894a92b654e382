"""Once-for-All's ResNet50 supernet, ``resnet50`` (also ``models/ofa.py:resnet50``).

The space of ``OFAResNets(depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
width_mult_list=[0.65, 0.8, 1.0])``, OFA's ``ofa_resnet50``, with OFA's module names, so that
its ``state_dict()`` is OFA's key for key (shapes, order, BatchNorm eps 1e-5 and momentum 0.1)
and its checkpoints load strictly, unmapped.

``input_stem``: a 3x3 stride-2 conv layer, a residual 3x3 conv layer (identity shortcut) that an
arch may skip, and a 3x3 conv layer; 3x3 max pooling (stride 2); ``blocks``: four stages of
bottleneck blocks (2, 2, 4, 2 always kept plus 0-2 more each: ``blocks.0`` ... ``blocks.17``,
one flat list as in OFA; widths 256, 512, 1024, 2048 at 1.0, strides 1, 2, 2, 2); global
pooling; ``classifier`` (linear).

Labels follow OFA's arch dict ``{"d": [5], "e": [18], "w": [6]}``:

- ``d.0`` in (0, 1): whether the stem keeps its residual layer (OFA keeps it only when its
  ``d[0]`` is the largest depth, 2); ``d.1`` ... ``d.4`` in (0, 1, 2): the blocks a stage has
  beyond its base depth, OFA's ``d[1:]``;
- ``e.{j}`` in (0.2, 0.25, 0.35): the expand ratio of block ``j`` (middle width
  ``make_divisible(round(width * e), 8)``);
- ``w.{i}`` in (0, 1, 2): the index of the width multiplier of the stem's first two layers
  (``w.0``), its last one (``w.1``) and each stage (``w.2`` ... ``w.5``), as OFA's ``w``.

:func:`resnet_arch_to_labels` and :func:`labels_to_resnet_arch` translate; the root's
``translate_arch`` takes either OFA's dict or a subnet's ``net.config``
(:func:`config_to_resnet_arch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import subnet_export as se
from subnet_export.errors import ArchError

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._ofa_blocks import ResidualBlock, seq, translate_ofa_keys
    from ._ofa_resnet_blocks import (
        BASE_DEPTHS,
        DEPTHS,
        EXPAND_RATIOS,
        STAGE_WIDTHS,
        STEM_MID_WIDTHS,
        STEM_WIDTHS,
        STRIDES,
        WIDTH_MULTS,
        Bottleneck,
        conv_layer,
        mid_channels,
        pick,
    )
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _ofa_blocks import ResidualBlock, seq, translate_ofa_keys
    from _ofa_resnet_blocks import (
        BASE_DEPTHS,
        DEPTHS,
        EXPAND_RATIOS,
        STAGE_WIDTHS,
        STEM_MID_WIDTHS,
        STEM_WIDTHS,
        STRIDES,
        WIDTH_MULTS,
        Bottleneck,
        conv_layer,
        mid_channels,
        pick,
    )

__all__ = ["N_BLOCKS", "OFAResNetSpace", "config_to_resnet_arch", "labels_to_resnet_arch",
           "resnet50", "resnet_arch_to_labels"]

#: block slots in all, the length of OFA's ``e``
N_BLOCKS = sum(BASE_DEPTHS) + len(BASE_DEPTHS) * max(DEPTHS)
N_WIDTHS = 2 + len(BASE_DEPTHS)


class OFAResNetSpace(nn.Module):
    """The search space (placeholders) of OFA's ``ofa_resnet50`` (``OFAResNets``)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        w = [se.Choice(tuple(range(len(WIDTH_MULTS))), f"w.{i}") for i in range(N_WIDTHS)]
        mid, cin = pick(STEM_MID_WIDTHS, w[0]), pick(STEM_WIDTHS, w[1])
        stem = [conv_layer(3, mid, 2), ResidualBlock(conv_layer(mid, mid, 1), True),
                conv_layer(mid, cin, 1)]
        self.input_stem = se.Repeat(stem, [1, se.Choice((0, 1), "d.0"), 1])
        self.max_pooling = nn.MaxPool2d(3, 2, 1)
        blocks: list[nn.Module] = []
        depths: list[Any] = []
        for s, (base, stride) in enumerate(zip(BASE_DEPTHS, STRIDES, strict=True)):
            cout = pick(STAGE_WIDTHS[s], w[s + 2])
            for i in range(base + max(DEPTHS)):
                ratio = se.Choice(EXPAND_RATIOS, f"e.{len(blocks)}")
                blocks.append(Bottleneck(cin, cout, se.compose(mid_channels, cout, ratio),
                                         stride if i == 0 else 1, identity=i > 0))
                cin = cout
            depths += [base, se.Choice(DEPTHS, f"d.{s + 1}")]
        self.blocks = se.Repeat(blocks, depths)
        self.classifier = seq(linear=seq(linear=se.Linear(cin, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.max_pooling(self.input_stem(x)))
        return self.classifier(x.mean(3).mean(2))  # OFA's MyGlobalAvgPool2d

    def translate_arch(self, arch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Our labels of OFA's ``{d, e, w}`` or of a subnet's ``net.config``; None for others.

        OFA's ``r`` / ``image_size`` is not part of the network: give it as the input shape.
        """
        if "name" in arch and "blocks" in arch:  # a net.config, this network's or another's
            return resnet_arch_to_labels(config_to_resnet_arch(arch))
        if not {"d", "e", "w"} & set(arch):
            return None
        extra = sorted(set(arch) - {"d", "e", "w", "r", "image_size"})
        if extra:
            raise ArchError(f"unknown key {extra[0]!r} in the OFA ResNet arch; it has 'd', 'e' "
                            "and 'w' (and optionally 'r' or 'image_size')", extra[0])
        return resnet_arch_to_labels(arch)

    def translate_state_dict(self, state: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
        """A state with OFA's other wrapper nesting renamed to this network's keys, and a note.

        See ``translate_ofa_keys`` in models/_ofa_blocks.py; None when nothing applies.
        """
        return translate_ofa_keys(state, self.state_dict().keys())


def resnet50(strategy: str = "sampling", seed: int = 0, *, num_classes: int = 1000,
             resolution: int = 224, calib_steps: int = 0) -> nn.Module:
    """OFA's ``ofa_resnet50`` supernet, seeded (load trained weights over it).

    BatchNorm statistics are seeded random ones; ``calib_steps`` > 0 estimates them instead.
    """
    return seeded_supernet(lambda: OFAResNetSpace(num_classes), strategy, seed,
                           (1, 3, resolution, resolution), calib_steps=calib_steps)


def _values(arch: Mapping[str, Any], key: str, n: int) -> list[Any]:
    if key not in arch:
        raise ArchError(f"the OFA ResNet arch has no {key!r}; it needs 'd', 'e' and 'w'", key)
    value = arch[key]
    if type(value) in (int, float):  # OFA's val2list: one value for every entry
        return [value] * n
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ArchError(f"OFA ResNet arch {key!r} must be a number or a list of {n}, got "
                        f"{value!r}", key)
    return list(value)


def _valid(value: Any, candidates: tuple[Any, ...]) -> bool:
    return any(type(value) is type(c) and value == c for c in candidates)


def _check(key: str, i: int, value: Any, candidates: tuple[Any, ...]) -> None:
    if not _valid(value, candidates):
        raise ArchError(f"OFA ResNet arch {key}[{i}] is {value!r}; valid values are "
                        f"{list(candidates)}", f"{key}.{i}")


def resnet_arch_to_labels(arch: Mapping[str, Any]) -> dict[str, Any]:
    """Our arch (labels ``d.{s}``, ``e.{j}``, ``w.{i}``) of OFA's ResNet arch dict.

    Args:
        arch: ``{"d": [5], "e": [18], "w": [6]}`` as ``OFAResNets.sample_active_subnet``
            returns it (a number stands for every entry, as in OFA).

    Returns:
        A complete arch of :func:`resnet50`. ``d[0]`` below 2 skips the stem's residual layer
        (``d.0`` 0), as OFA does. The ratios of blocks beyond a stage's depth are ignored, as
        in OFA: a valid one is kept, anything else becomes 0.2.

    Raises:
        ArchError: a key is missing, a list has the wrong length, or an active value is not
            a candidate.
    """
    d, e, w = (_values(arch, "d", 1 + len(BASE_DEPTHS)), _values(arch, "e", N_BLOCKS),
               _values(arch, "w", N_WIDTHS))
    for s, value in enumerate(d):
        _check("d", s, value, DEPTHS)
    widths = tuple(range(len(WIDTH_MULTS)))
    for i, value in enumerate(w):
        _check("w", i, value, widths)
    out: dict[str, Any] = {"d.0": int(d[0] == max(DEPTHS))}
    out.update({f"d.{s}": d[s] for s in range(1, len(d))})
    out.update({f"w.{i}": value for i, value in enumerate(w)})
    j = 0
    for s, base in enumerate(BASE_DEPTHS):
        for i in range(base + max(DEPTHS)):
            if i < base + d[s + 1]:
                _check("e", j, e[j], EXPAND_RATIOS)
            out[f"e.{j}"] = e[j] if _valid(e[j], EXPAND_RATIOS) else EXPAND_RATIOS[0]
            j += 1
    return out


def labels_to_resnet_arch(arch: Mapping[str, Any]) -> dict[str, list[Any]]:
    """OFA's ResNet arch dict ``{"d", "e", "w"}`` of our arch (labels as above).

    A stem with its residual layer has ``d[0]`` 2, one without 0, as OFA's sampler writes them.

    Raises:
        ArchError: a label is missing.
    """
    try:
        return {"d": [max(DEPTHS) if arch["d.0"] else min(DEPTHS),
                      *(int(arch[f"d.{s}"]) for s in range(1, 1 + len(BASE_DEPTHS)))],
                "e": [float(arch[f"e.{j}"]) for j in range(N_BLOCKS)],
                "w": [int(arch[f"w.{i}"]) for i in range(N_WIDTHS)]}
    except KeyError as err:
        raise ArchError(f"label {err.args[0]!r} is missing from the arch", err.args[0]) from None


def _index(table: tuple[int, ...], channels: Any, label: str, what: str) -> int:
    if channels not in table:
        raise ArchError(f"the net.config's {what} has {channels!r} channels; OFA ResNet50's has "
                        f"{sorted(set(table))}: give the config of one of its subnets", label)
    return table.index(channels)  # 24 channels are w 0 and w 1 of the stem: the same layers


def _stages(blocks: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    # A stage starts at a block with a downsampling shortcut (stride or width change).
    stages: list[list[Mapping[str, Any]]] = []
    for b in blocks:
        if not stages or b.get("stride") != 1 or b.get("in_channels") != b.get("out_channels"):
            stages.append([])
        stages[-1].append(b)
    if len(stages) != len(BASE_DEPTHS):
        raise ArchError(f"the net.config's blocks make {len(stages)} stages, OFA ResNet50 has "
                        f"{len(BASE_DEPTHS)}", "blocks")
    return stages


def config_to_resnet_arch(config: Mapping[str, Any]) -> dict[str, list[Any]]:
    """OFA's ``{d, e, w}`` of the ``net.config`` of a subnet of OFA's ResNet50.

    ``config`` is what ``ofa_net.get_active_subnet(preserve_weight=True).config`` returns,
    ``{"name": "ResNets", "input_stem": [...], "blocks": [...], ...}``: the stem has its
    residual layer when it has three layers; ``w`` comes from the widths (the first index of
    a width: the stem's first two layers have 24 channels at both 0.65 and 0.8); a stage's
    depth is its number of blocks beyond the base depth, each block's ``expand_ratio`` its
    ``e`` (its ``mid_channels`` must agree). The ratios beyond a stage's depth are 0.2.

    Raises:
        ArchError: the config is of another network or its widths or depths are not OFA
            ResNet50's.
    """
    stem, blocks = config.get("input_stem"), config.get("blocks")
    if config.get("name") != "ResNets" or not all(
            isinstance(x, list) and all(isinstance(m, Mapping) for m in x)
            for x in (stem, blocks)) or len(stem) not in (2, 3):
        raise ArchError(f"this is not the net.config of a subnet of OFA's ResNet50 (name "
                        f"{config.get('name')!r}; it is 'ResNets' with 2 or 3 'input_stem' "
                        "layers and its 'blocks')", "name")
    arch: dict[str, list[Any]] = {
        "d": [max(DEPTHS) if len(stem) == 3 else min(DEPTHS)], "e": [],
        "w": [_index(STEM_MID_WIDTHS, stem[0].get("out_channels"), "w.0", "stem's first layer"),
              _index(STEM_WIDTHS, stem[-1].get("out_channels"), "w.1", "stem's last layer")]}
    for s, group in enumerate(_stages(blocks)):
        extra = len(group) - BASE_DEPTHS[s]
        if extra not in DEPTHS:
            raise ArchError(f"stage {s} of the net.config has {len(group)} blocks; OFA "
                            f"ResNet50's has {BASE_DEPTHS[s]} to "
                            f"{BASE_DEPTHS[s] + max(DEPTHS)}", f"d.{s + 1}")
        width = group[0].get("out_channels")
        arch["w"].append(_index(STAGE_WIDTHS[s], width, f"w.{s + 2}", f"stage {s}"))
        for b in group:
            ratio = b.get("expand_ratio")
            if _valid(ratio, EXPAND_RATIOS) and b.get("mid_channels") != mid_channels(width,
                                                                                        ratio):
                raise ArchError(f"a block of stage {s} of the net.config has expand ratio "
                                f"{ratio} but {b.get('mid_channels')} middle channels, not "
                                f"{mid_channels(width, ratio)}", "blocks")
            arch["e"].append(ratio)
        arch["e"] += [EXPAND_RATIOS[0]] * (max(DEPTHS) - extra)
        arch["d"].append(extra)
    return arch
