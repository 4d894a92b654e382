"""Elastic supernet modules: Conv2d, Linear, Parameter (the base class is in ``elastic_base``).

Each module computes its active (sliced) tensors in one place, ``active_params``, which serves
the supernet forward, ``_save_to_sub_state_dict`` and the differentiable mixture alike, so the
supernet path and the materialized module cannot drift apart. A placeholder written with
``convention="nni"`` becomes NNI's layer instead (``nni_layers``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SearchSpaceError
from ..plain.modules import LearnedTensor
from ..space import placeholders as ph
from .elastic_base import ElasticModule, centre, check_positive
from .nni_layers import NniConv2d, NniLinear

__all__ = ["ElasticConv2d", "ElasticLinear", "ElasticParameter"]


class ElasticConv2d(ElasticModule):
    """Supernet ``Conv2d``: first-k channels, centre-cropped kernels, optional kernel transforms.

    ``kernel_transform``: False (centre crop only), True (learnt transforms ``transform_7to5``,
    ... beside ``weight``) or ``"ofa"`` (the same transforms in Once-for-All's parameter layout:
    ``7to5_matrix``, ... and the full kernel at ``conv.weight``).
    """

    placeholder = ph.Conv2d

    def __init__(self, args, strategy="sampling", memo=None, kernel_transform=False):
        super().__init__(args, strategy, memo)
        if self.args["padding_mode"] != "zeros":
            raise SearchSpaceError("elastic Conv2d supports padding_mode='zeros' only")
        combos = self.all_values()
        for v in combos:
            check_positive("Conv2d", v, ("in_channels", "out_channels", "kernel_size"))
        self.depthwise = any(v["groups"] != 1 for v in combos)
        if self.depthwise and not all(
            v["groups"] == v["in_channels"] and v["out_channels"] % v["in_channels"] == 0
            for v in combos
        ):
            raise SearchSpaceError(
                "elastic Conv2d: groups must be 1, or follow in_channels (depthwise) with "
                "out_channels a multiple of in_channels, under every arch")
        if self.depthwise and len({v["out_channels"] // v["in_channels"] for v in combos}) > 1:
            raise SearchSpaceError("elastic depthwise Conv2d: out/in channel ratio must be fixed")
        in_max = max(v["in_channels"] for v in combos)
        out_max = max(v["out_channels"] for v in combos)
        self.kernel_sizes = sorted({v["kernel_size"] for v in combos}, reverse=True)
        k_max = self.kernel_sizes[0]
        full = nn.Conv2d(in_max, out_max, k_max, groups=in_max if self.depthwise else 1,
                         bias=bool(self.args["bias"]))
        if kernel_transform not in (False, True, "ofa"):
            raise SearchSpaceError(f"kernel_transform must be False, True or 'ofa', "
                                   f"not {kernel_transform!r}")
        if kernel_transform == "ofa":
            # Once-for-All's DynamicSeparableConv2d layout, so that its checkpoints load as they
            # are: the full kernel at ``conv.weight``, the transforms named ``7to5_matrix``.
            self.conv = _Kernel(full.weight)
            self.bias = full.bias
        else:
            self.weight, self.bias = full.weight, full.bias
        self.kernel_transform = bool(kernel_transform)
        self._transforms: dict[tuple[int, int], str] = {}
        steps = list(zip(self.kernel_sizes, self.kernel_sizes[1:])) if kernel_transform else []
        for a, b in reversed(steps) if kernel_transform == "ofa" else steps:  # OFA's key order
            name = f"{a}to{b}_matrix" if kernel_transform == "ofa" else f"transform_{a}to{b}"
            self.register_parameter(name, nn.Parameter(torch.eye(b * b)))
            self._transforms[(a, b)] = name

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.Conv2d and module.is_elastic():
            if module.convention == "nni":
                return NniConv2d(module.init_args, mutate_kwargs["strategy"], memo)
            return cls(module.init_args, mutate_kwargs["strategy"], memo, module.kernel_transform)
        return None

    def crop_kernel(self, w: torch.Tensor, k: int) -> torch.Tensor:
        """Centre crop ``w`` to ``k``x``k``; with transforms, through every smaller step (OFA)."""
        if k == self.kernel_sizes[0]:
            return w
        if not self.kernel_transform:
            c = centre(w.shape[-1], k)
            return w[..., c, c]
        for a, b in zip(self.kernel_sizes, self.kernel_sizes[1:]):
            c = centre(a, b)
            w = w[..., c, c]
            m = getattr(self, self._transforms[(a, b)])
            w = F.linear(w.reshape(*w.shape[:2], b * b), m).reshape(*w.shape[:2], b, b)
            if b == k:
                break
        return w

    def kernel(self) -> torch.Tensor:
        """The full (largest) kernel, wherever the layout keeps it."""
        return self.conv.weight if "conv" in self._modules else self.weight

    def active_params(self, v):
        w = self.kernel()[: v["out_channels"], : v["in_channels"] // v["groups"]]
        w = self.crop_kernel(w, v["kernel_size"])
        b = None if self.bias is None else self.bias[: v["out_channels"]]
        return {"weight": w, "bias": b}

    def embed(self, key, t):
        if key != "weight":
            return self._embed_front(key, t)
        full = self.kernel()
        out = full.new_zeros(full.shape)
        c = centre(full.shape[-1], t.shape[-1])
        out[: t.shape[0], : t.shape[1], c, c] = t
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, p = self.forward_params()
        return F.conv2d(x, p["weight"], p["bias"], v["stride"], v["padding"], v["dilation"],
                        v["groups"])

    def freeze(self, memo):
        v = self.values(memo)
        return nn.Conv2d(v["in_channels"], v["out_channels"], v["kernel_size"], v["stride"],
                         v["padding"], v["dilation"], v["groups"], bool(v["bias"]), "zeros",
                         device="meta")


class _Kernel(nn.Module):
    """Holds a conv kernel as ``weight``: the inner ``conv`` of the Once-for-All layout."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight


class ElasticLinear(ElasticModule):
    """Supernet ``Linear``: the first ``out_features`` rows and ``in_features`` columns."""

    placeholder = ph.Linear

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.Linear and module.is_elastic():
            if module.convention == "nni":
                return NniLinear(module.init_args, mutate_kwargs["strategy"], memo)
            return cls(module.init_args, mutate_kwargs["strategy"], memo)
        return None

    def __init__(self, args, strategy="sampling", memo=None):
        super().__init__(args, strategy, memo)
        combos = self.all_values()
        for v in combos:
            check_positive("Linear", v, ("in_features", "out_features"))
        full = nn.Linear(max(v["in_features"] for v in combos),
                         max(v["out_features"] for v in combos), bias=bool(self.args["bias"]))
        self.weight, self.bias = full.weight, full.bias

    def active_params(self, v):
        w = self.weight[: v["out_features"], : v["in_features"]]
        b = None if self.bias is None else self.bias[: v["out_features"]]
        return {"weight": w, "bias": b}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, p = self.forward_params()
        return F.linear(x, p["weight"], p["bias"])

    def freeze(self, memo):
        v = self.values(memo)
        return nn.Linear(v["in_features"], v["out_features"], bool(v["bias"]), device="meta")


class ElasticParameter(ElasticModule):
    """Supernet ``Parameter``: the largest shape, sliced to the first k along every dim."""

    placeholder = ph.Parameter

    def __init__(self, args, strategy="sampling", memo=None):
        super().__init__(args, strategy, memo)
        shapes = [v["shape"] for v in self.all_values()]
        for shape in shapes:
            if not all(type(s) is int and s > 0 for s in shape):
                raise SearchSpaceError(f"Parameter: shape evaluates to {shape}; need positive ints")
        full = tuple(max(dims) for dims in zip(*shapes))
        self.weight = LearnedTensor(full, self.args["std"]).weight

    def active_params(self, v):
        return {"weight": self.weight[tuple(slice(0, s) for s in v["shape"])]}

    def forward(self) -> torch.Tensor:
        _, p = self.forward_params()
        return p["weight"]

    def freeze(self, memo):
        v = self.values(memo)
        return LearnedTensor(v["shape"], v["std"], device="meta")
