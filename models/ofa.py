"""Once-for-All's supernets, ``mobilenetv3_w10``, ``_w12``, ``proxyless_w13`` and ``resnet50``.

The spaces of ``OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
depth_list=[2, 3, 4], width_mult=1.0 or 1.2)`` and of ``OFAProxylessNASNets`` with the same
lists and ``width_mult=1.3``, written with our layers but with OFA's module names, so that
``state_dict()`` has exactly its keys, shapes and BatchNorm settings and its checkpoints
(``torch.load(path)["state_dict"]``) load strictly, unmapped. ``resnet50`` (OFA's
``OFAResNets``) is in models/ofa_resnet.py and re-exported here.

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
its layout (``se.Conv2d(..., kernel_transform="ofa")``). The spaces themselves are in
models/_ofa_blocks.py; their ``translate_state_dict`` renames the keys of older OFA checkpoints
(``.mobile_inverted_conv.``).

Labels follow OFA's arch dict ``{"ks": [...], "e": [...], "d": [...]}``: ``ks.{j}`` and
``e.{j}`` for block slot ``j`` (``blocks.{j + 1}``), ``d.{s}`` for each stage ``s`` of four
slots; :func:`ofa_arch_to_labels` and :func:`labels_to_ofa_arch` translate, given the
network's :class:`Layout` (:data:`MOBILENETV3` or :data:`PROXYLESS`), and
:func:`config_to_ofa_arch` reads the ``net.config`` of an extracted subnet.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from subnet_export.errors import ArchError

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._ofa_blocks import (
        DEPTHS,
        EXPAND_RATIOS,
        KERNELS,
        MBV3_STAGES,
        MOBILENETV3,
        PROXYLESS,
        PROXYLESS_STAGES,
        Layout,
        OFAMobileNetV3Space,
        OFAProxylessSpace,
        stage_widths,
    )
    from .ofa_resnet import resnet50
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _ofa_blocks import (
        DEPTHS,
        EXPAND_RATIOS,
        KERNELS,
        MBV3_STAGES,
        MOBILENETV3,
        PROXYLESS,
        PROXYLESS_STAGES,
        Layout,
        OFAMobileNetV3Space,
        OFAProxylessSpace,
        stage_widths,
    )
    from ofa_resnet import resnet50

__all__ = ["MOBILENETV3", "PROXYLESS", "Layout", "OFAMobileNetV3Space", "OFAProxylessSpace",
           "config_to_ofa_arch", "labels_to_ofa_arch", "mobilenetv3_w10", "mobilenetv3_w12",
           "ofa_arch_to_labels", "proxyless_w13", "resnet50", "translate_arch"]

_STAGES = {MOBILENETV3: MBV3_STAGES, PROXYLESS: PROXYLESS_STAGES}


def _build(space: Any, layout: Layout, width_mult: float, strategy: str, seed: int,
           num_classes: int, resolution: int, calib_steps: int) -> nn.Module:
    net = seeded_supernet(lambda: space(width_mult, num_classes), strategy, seed,
                          (1, 3, resolution, resolution), calib_steps=calib_steps)
    # se.freeze and --arch take OFA's {ks, e, d} and net.config too
    widths = tuple(w for w, *_ in stage_widths(_STAGES[layout], width_mult))
    net.translate_arch = functools.partial(translate_arch, layout=layout, widths=widths)
    return net


def translate_arch(arch: Mapping[str, Any], layout: Layout = MOBILENETV3,
                   widths: Sequence[int] | None = None) -> dict[str, int] | None:
    """Our labels of an OFA arch: its arch dict ``{ks, e, d}`` or a subnet's ``net.config``.

    None when ``arch`` is neither (no ``ks``/``e``/``d``, no ``name`` and ``blocks``). OFA's
    ``r`` / ``image_size`` (the resolution the arch was searched at) is not part of the
    network: give it as the input shape (``--input-shape 1x3xRxR``). ``widths`` (the stage
    widths of the supernet) lets a ``net.config`` of another width be refused.
    """
    if "name" in arch and "blocks" in arch:
        return ofa_arch_to_labels(config_to_ofa_arch(arch, layout, widths), layout)
    if not {"ks", "e", "d"} & set(arch):
        return None
    extra = sorted(set(arch) - {"ks", "e", "d", "r", "image_size"})
    if extra:
        raise ArchError(f"unknown key {extra[0]!r} in the OFA arch; it has 'ks', 'e' and 'd' "
                        "(and optionally 'r' or 'image_size')", extra[0])
    return ofa_arch_to_labels(arch, layout)


def config_to_ofa_arch(config: Mapping[str, Any], layout: Layout = MOBILENETV3,
                       widths: Sequence[int] | None = None) -> dict[str, list[Any]]:
    """OFA's arch dict ``{ks, e, d}`` of the ``net.config`` of one of its extracted subnets.

    ``config`` is what ``ofa_net.get_active_subnet(preserve_weight=True).config`` returns,
    ``{"name": "MobileNetV3", "blocks": [...], ...}``: after the fixed ``blocks[0]``, the
    consecutive blocks of one width make a stage (its depth is their number), and each block's
    ``conv`` has its ``kernel_size`` and ``expand_ratio``. Slots beyond a stage's depth get the
    smallest candidates (they are ignored).

    Raises:
        ArchError: the config is of another network (its ``name``, its number of stages or,
            given ``widths``, a stage's width differs) or is not a ``net.config``.
    """
    if config.get("name") != layout.name:
        raise ArchError(f"the net.config is of a {config.get('name')!r} network, this supernet "
                        f"is OFA's {layout.name}: give the config of one of its subnets", "name")
    blocks = config.get("blocks")
    if not isinstance(blocks, list) or len(blocks) < 2 or not all(
            isinstance(b, Mapping) and isinstance(b.get("conv"), Mapping) for b in blocks):
        raise ArchError("the net.config's 'blocks' must be a list of OFA block configs, each "
                        "with its 'conv'", "blocks")
    stages: list[list[Mapping[str, Any]]] = []
    for block in blocks[1:]:
        conv = block["conv"]
        if not stages or conv.get("out_channels") != stages[-1][-1].get("out_channels"):
            stages.append([])
        stages[-1].append(conv)
    found = [convs[0].get("out_channels") for convs in stages]
    if len(stages) != len(layout.stages) or (widths is not None and found != list(widths)):
        want = list(widths) if widths is not None else f"{len(layout.stages)} stages"
        raise ArchError(f"the net.config's stages have {found} channels, this supernet's "
                        f"{want}: give the config of one of its subnets", "blocks")
    arch: dict[str, list[Any]] = {"ks": [], "e": [], "d": []}
    for s, (convs, slots) in enumerate(zip(stages, layout.stages, strict=True)):
        if len(convs) > slots:
            raise ArchError(f"stage {s} of the net.config has {len(convs)} blocks, this "
                            f"supernet's at most {slots}", f"d.{s}")
        pad = slots - len(convs)
        arch["ks"] += [c.get("kernel_size") for c in convs] + [KERNELS[0]] * pad
        arch["e"] += [c.get("expand_ratio") for c in convs] + [EXPAND_RATIOS[0]] * pad
        arch["d"].append(len(convs))
    return arch


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
