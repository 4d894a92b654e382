"""Conv2d and Linear under ``convention="nni"``: NNI 2.10's ``MixedConv2d`` and ``MixedLinear``.

The super-kernel has NNI's shapes (so NNI's one-shot checkpoints load key for key), the sampling
path slices as NNI does, the differentiable mixture is NNI's per-dimension one
(:mod:`.mixing`), and NNI's errors are raised, at construction rather than in a forward.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchError, SearchSpaceError
from ..space.choice import possible_values
from .elastic_base import ElasticModule, check_positive, mutable
from .mixing import Distribution, slice_by

__all__ = ["NniConv2d", "NniLinear", "super_value"]


def super_value(module: str, key: str, expr: Any, pick=max) -> Any:
    """The super-kernel value of a choice argument: NNI's ``max(traverse_all_options(...))``."""
    try:
        return pick(possible_values(expr))
    except TypeError:
        raise SearchSpaceError(
            f"{module}: the values of {key!r} ({expr!r}) do not compare, so no largest one "
            "can size the supernet; use candidates of one type") from None


def _pair(value: Any) -> tuple[Any, Any]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _constant_ratio(a: Any, b: Any) -> float | None:
    # NNI's evaluate_constant(a / b): the ratio when it is one number under every arch.
    ratios = possible_values(a / b)
    return ratios[0] if len(ratios) == 1 else None


class NniConv2d(ElasticModule):
    """NNI's ``MixedConv2d``: prefix channels, kernels cropped from the centre (floor to the left).

    ``groups`` may be a choice or an expression (``in_channels // 4``); the super-kernel has
    ``in_channels_max // groups_super`` input columns, ``groups_super`` as NNI computes it. Under
    the differentiable strategy ``stride`` and ``dilation`` must be constants, ``padding`` may be
    a choice only with ``kernel_size`` (the largest padding is used), and ``groups`` only as a
    constant share of ``in_channels`` (depthwise-like).
    """

    def __init__(self, args, strategy="sampling", memo=None, convention="nni"):
        super().__init__(args, strategy, memo, convention)
        a = self.args
        sv = {k: super_value("Conv2d", k, v) if mutable(v) else v for k, v in a.items()}
        if mutable(a["groups"]):
            sv["groups"] = self._super_groups()
        try:
            full = nn.Conv2d(sv["in_channels"], sv["out_channels"], sv["kernel_size"],
                             sv["stride"], sv["padding"], sv["dilation"], sv["groups"],
                             bool(a["bias"]), a["padding_mode"])
        except (ValueError, TypeError, RuntimeError) as err:
            raise SearchSpaceError(f"Conv2d: the supernet conv {sv} cannot be built: {err}") \
                from None
        self.weight, self.bias = full.weight, full.bias
        self.super_kernel, self.super_padding = full.kernel_size, full.padding
        self._pad = full._reversed_padding_repeated_twice
        self._check_archs()
        if strategy == "differentiable":
            self._check_differentiable()

    def _super_groups(self) -> Any:
        a = self.args
        if mutable(a["in_channels"]):
            ratio = _constant_ratio(a["in_channels"], a["groups"])
            if ratio is not None:
                return max(possible_values(a["groups"])) // int(ratio)
            warnings.warn("Conv2d: in_channels and groups are both choices and their ratio is "
                          "not constant; the supernet keeps in_channels / min(groups) columns",
                          RuntimeWarning, stacklevel=4)
        return super_value("Conv2d", "groups", a["groups"], min)

    def _check_archs(self) -> None:
        cols, (ka, kb) = self.weight.shape[1], self.super_kernel
        for v in self.all_values():
            check_positive("Conv2d", v, ("in_channels", "out_channels", "groups"))
            k = _pair(v["kernel_size"])
            if not (0 < k[0] <= ka and 0 < k[1] <= kb):
                raise SearchSpaceError(
                    f"Conv2d: kernel_size {v['kernel_size']!r} does not fit in the supernet "
                    f"kernel {(ka, kb)} (NNI's largest candidate); make every kernel fit in it")
            if v["in_channels"] % v["groups"] or v["in_channels"] // v["groups"] > cols:
                raise SearchSpaceError(
                    f"Conv2d: in_channels {v['in_channels']} with groups {v['groups']} does not "
                    f"fit the supernet's {cols} input columns per group; choose groups that "
                    "divide in_channels under every arch")
            if self.strategy == "sampling":  # a DARTS mixture never runs one arch
                _plain_conv(v, SearchSpaceError)
            if v["padding_mode"] != "zeros" and _pad_of(v) != self._pad:
                raise SearchSpaceError(
                    f"Conv2d: with padding_mode {v['padding_mode']!r} NNI pads every arch as "
                    f"the supernet conv, but {v} pads otherwise; make padding a constant that "
                    "is the same for every kernel, or padding_mode 'zeros'")

    def _check_differentiable(self) -> None:
        a = self.args
        for key in ("stride", "dilation"):
            if mutable(a[key]):
                raise SearchSpaceError(
                    f"Conv2d: {key} must not be a choice under the differentiable strategy "
                    "(NNI's MixedConv2d); use the sampling strategy or a constant")
        if mutable(a["padding"]) and not mutable(a["kernel_size"]):
            raise SearchSpaceError("Conv2d: padding may be a choice under the differentiable "
                                   "strategy only together with kernel_size (NNI uses the "
                                   "largest padding); make padding a constant")
        if mutable(a["kernel_size"]) and isinstance(self.super_padding, str):
            raise SearchSpaceError(f"Conv2d: padding {self.super_padding!r} is not supported "
                                   "with a kernel_size choice under the differentiable strategy")
        if mutable(a["groups"]):
            ratio = None
            if mutable(a["in_channels"]) and mutable(a["out_channels"]):
                ratio = _constant_ratio(a["in_channels"], a["groups"])
            if ratio is None or ratio != int(ratio):
                raise SearchSpaceError(
                    "Conv2d: with groups a choice under the differentiable strategy, "
                    "in_channels and out_channels must be choices too and in_channels / groups "
                    "one integer under every arch (NNI's rule)")
            self._per_group = int(ratio)

    def active_params(self, v):
        w = self.weight[: v["out_channels"], : v["in_channels"] // v["groups"]]
        ka, kb = _pair(v["kernel_size"])
        la, lb = (self.super_kernel[0] - ka) // 2, (self.super_kernel[1] - kb) // 2
        w = w[:, :, la:la + ka, lb:lb + kb]
        b = None if self.bias is None else self.bias[: v["out_channels"]]
        return {"weight": w, "bias": b}

    def _mixed(self, x: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor, Any]:
        m = self.mixed_args()
        w = slice_by(self.weight, m["out_channels"], lambda o: (slice(0, o),))
        if isinstance(m["groups"], Distribution):
            w = w[:, : self._per_group]
            if x.size(1) % self._per_group:
                raise RuntimeError(f"Conv2d: the input's {x.size(1)} channels are not a multiple "
                                   f"of in_channels / groups = {self._per_group}")
            m["groups"] = x.size(1) // self._per_group
        else:
            g = m["groups"]
            w = slice_by(w, m["in_channels"], lambda i: (slice(None), slice(0, i // g)))
        full_a, full_b = self.super_kernel

        def crop(k):
            ka, kb = _pair(k)
            la, lb = (full_a - ka) // 2, (full_b - kb) // 2
            return slice(None), slice(None), slice(la, la + ka), slice(lb, lb + kb)

        w = slice_by(w, m["kernel_size"], crop)
        if isinstance(m["kernel_size"], Distribution):
            m["padding"] = self.super_padding
        b = slice_by(self.bias, m["out_channels"], lambda o: (slice(0, o),))
        return m, w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixing():
            v, w, b = self._mixed(x)
        else:
            v = self.values()
            p = self.active_params(v)
            w, b = p["weight"], p["bias"]
        if v["padding_mode"] != "zeros":
            return F.conv2d(F.pad(x, self._pad, mode=v["padding_mode"]), w, b,
                            _pair(v["stride"]), (0, 0), _pair(v["dilation"]), v["groups"])
        return F.conv2d(x, w, b, _pair(v["stride"]), v["padding"], _pair(v["dilation"]),
                        v["groups"])

    def freeze(self, memo):
        return _plain_conv(self.values(memo), ArchError)


def _pad_of(v: dict[str, Any]) -> Any:
    try:
        return _plain_conv(v, SearchSpaceError)._reversed_padding_repeated_twice
    except SearchSpaceError:
        return None


def _plain_conv(v: dict[str, Any], error: type[Exception]) -> nn.Conv2d:
    # ``error`` says whose fault an invalid conv is: the space's, or the arch's.
    try:
        return nn.Conv2d(v["in_channels"], v["out_channels"], v["kernel_size"], v["stride"],
                         v["padding"], v["dilation"], v["groups"], bool(v["bias"]),
                         v["padding_mode"], device="meta")
    except (ValueError, TypeError, RuntimeError) as err:
        raise error(f"Conv2d: arguments {v} are not a valid conv: {err}; choose an arch (or "
                    "candidates) under which every conv is valid") from None


class NniLinear(ElasticModule):
    """NNI's ``MixedLinear``: the first ``out_features`` rows and ``in_features`` columns."""

    def __init__(self, args, strategy="sampling", memo=None, convention="nni"):
        super().__init__(args, strategy, memo, convention)
        for v in self.all_values():
            check_positive("Linear", v, ("in_features", "out_features"))
        a = self.args
        full = nn.Linear(*(super_value("Linear", k, a[k]) if mutable(a[k]) else a[k]
                           for k in ("in_features", "out_features")), bias=bool(a["bias"]))
        self.weight, self.bias = full.weight, full.bias

    def active_params(self, v):
        w = self.weight[: v["out_features"], : v["in_features"]]
        b = None if self.bias is None else self.bias[: v["out_features"]]
        return {"weight": w, "bias": b}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.mixing():
            p = self.active_params(self.values())
            return F.linear(x, p["weight"], p["bias"])
        m = self.mixed_args()
        w = slice_by(self.weight, m["out_features"], lambda o: (slice(0, o),))
        w = slice_by(w, m["in_features"], lambda i: (slice(None), slice(0, i)))
        b = slice_by(self.bias, m["out_features"], lambda o: (slice(0, o),))
        return F.linear(x, w, b)

    def freeze(self, memo):
        v = self.values(memo)
        return nn.Linear(v["in_features"], v["out_features"], bool(v["bias"]), device="meta")
