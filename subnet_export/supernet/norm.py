"""Elastic normalisation layers: BatchNorm2d and LayerNorm, first-k of every per-channel tensor.

Split from :mod:`.elastic` (the layers with weights); the slicing rule is the same, through the
same ``active_params``. Under ``convention="nni"`` they follow NNI 2.10's ``MixedBatchNorm2d``
and ``MixedLayerNorm``: tuple shapes for LayerNorm, no ``num_batches_tracked`` update, and eps
and momentum constants under the differentiable strategy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SearchSpaceError
from ..space import placeholders as ph
from ..space.choice import possible_values
from .elastic_base import ElasticModule, check_positive, mutable

__all__ = ["ElasticBatchNorm2d", "ElasticLayerNorm"]


def _nni_constants(module: ElasticModule, keys: tuple[str, ...]) -> None:
    # NNI's differentiable MixedOperation refuses a distribution for these arguments.
    if module.convention == "nni" and module.strategy == "differentiable":
        for key in keys:
            if mutable(module.args[key]):
                raise SearchSpaceError(
                    f"{type(module).__name__[7:]}: {key} must not be a choice under the "
                    "differentiable strategy (NNI's one-shot rule); use the sampling strategy "
                    "or a constant")


class ElasticBatchNorm2d(ElasticModule):
    """Supernet ``BatchNorm2d``: first-k weight, bias, running mean and variance.

    In training mode the running statistics of the active channels are updated in place.
    Under the differentiable mixture it runs at full width (channel masks come from the convs).
    """

    placeholder = ph.BatchNorm2d

    def __init__(self, args, strategy="sampling", memo=None, convention="native"):
        super().__init__(args, strategy, memo, convention)
        combos = self.all_values()
        for v in combos:
            check_positive("BatchNorm2d", v, ("num_features",))
            if convention == "nni" and v["momentum"] is None:
                raise SearchSpaceError("BatchNorm2d: NNI's supernet BatchNorm needs a float "
                                       "momentum, not None")
        _nni_constants(self, ("eps", "momentum"))
        a = self.args
        full = nn.BatchNorm2d(max(v["num_features"] for v in combos), a["eps"], a["momentum"],
                              a["affine"], a["track_running_stats"])
        self.weight, self.bias = full.weight, full.bias
        self.full_features = full.num_features
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(full, name))

    def active_params(self, v):
        k = v["num_features"]
        out = {key: None if t is None else t[:k] for key, t in
               (("weight", self.weight), ("bias", self.bias),
                ("running_mean", self.running_mean), ("running_var", self.running_var))}
        out["num_batches_tracked"] = self.num_batches_tracked
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.forward_values()
        p = self.active_params(v)
        momentum = v["momentum"]
        if self.convention == "nni":  # NNI's MixedBatchNorm2d: num_batches_tracked stays
            if self.mixing():  # NNI runs the full width, whatever the expression's largest
                p = self.active_params({"num_features": self.full_features})
            track = not self.training or bool(v["track_running_stats"])
            use_batch = self.training or (p["running_mean"] is None and p["running_var"] is None)
            return F.batch_norm(x, p["running_mean"] if track else None,
                                p["running_var"] if track else None, p["weight"], p["bias"],
                                use_batch, momentum, v["eps"])
        use_batch = self.training or p["running_mean"] is None
        if self.training and p["num_batches_tracked"] is not None:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"],
                            use_batch, momentum or 0.0, v["eps"])

    def freeze(self, memo):
        v = self.values(memo)
        return nn.BatchNorm2d(v["num_features"], v["eps"], v["momentum"], v["affine"],
                              v["track_running_stats"], device="meta")


def _shape(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


class ElasticLayerNorm(ElasticModule):
    """Supernet ``LayerNorm`` over the last dimension: first-k weight and bias.

    Under ``convention="nni"`` the shape may be a tuple (a choice of tuples): the supernet keeps
    the largest size of each dimension and a subnet the first k of each.
    """

    placeholder = ph.LayerNorm

    def __init__(self, args, strategy="sampling", memo=None, convention="native"):
        super().__init__(args, strategy, memo, convention)
        combos = self.all_values()
        if convention == "nni":
            full_shape = self._nni_full_shape()
        else:
            for v in combos:
                check_positive("LayerNorm", v, ("normalized_shape",))
            full_shape = max(v["normalized_shape"] for v in combos)
        _nni_constants(self, ("eps",))
        a = self.args
        full = nn.LayerNorm(full_shape, a["eps"], a["elementwise_affine"], bias=a["bias"])
        self.weight, self.bias = full.weight, full.bias
        self.full_shape = tuple(full.normalized_shape)

    def _nni_full_shape(self) -> tuple[int, ...]:
        shapes = [_shape(s) for s in possible_values(self.args["normalized_shape"])]
        if len({len(s) for s in shapes}) != 1 or not all(
                type(d) is int and d > 0 for s in shapes for d in s):
            raise SearchSpaceError(
                f"LayerNorm: normalized_shape takes the values {shapes}; they must be positive "
                "ints, or tuples of positive ints of one length")
        return tuple(max(dims) for dims in zip(*shapes))

    def active_params(self, v):
        if self.convention == "nni":
            idx = tuple(slice(0, min(i, j)) for i, j in
                        zip(_shape(v["normalized_shape"]), self.full_shape))
        else:
            idx = (slice(0, v["normalized_shape"]),)
        return {"weight": None if self.weight is None else self.weight[idx],
                "bias": None if self.bias is None else self.bias[idx]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.forward_values()
        if self.convention == "nni" and self.mixing():
            v["normalized_shape"] = self.full_shape
        p = self.active_params(v)
        return F.layer_norm(x, _shape(v["normalized_shape"]), p["weight"], p["bias"], v["eps"])

    def freeze(self, memo):
        v = self.values(memo)
        return nn.LayerNorm(v["normalized_shape"], v["eps"], v["elementwise_affine"],
                            bias=v["bias"], device="meta")
