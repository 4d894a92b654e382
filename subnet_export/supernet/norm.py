"""Elastic normalisation layers: BatchNorm2d and LayerNorm, first-k of every per-channel tensor.

Split from :mod:`.elastic` (the base class and the layers with weights); the slicing rule is the
same, through the same ``active_params``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..space import placeholders as ph
from .elastic import ElasticModule, check_positive

__all__ = ["ElasticBatchNorm2d", "ElasticLayerNorm"]


class ElasticBatchNorm2d(ElasticModule):
    """Supernet ``BatchNorm2d``: first-k weight, bias, running mean and variance.

    In training mode the running statistics of the active channels are updated in place.
    Under the differentiable mixture it runs at full width (channel masks come from the convs).
    """

    placeholder = ph.BatchNorm2d

    def __init__(self, args, strategy="sampling", memo=None):
        super().__init__(args, strategy, memo)
        combos = self.all_values()
        for v in combos:
            check_positive("BatchNorm2d", v, ("num_features",))
        a = self.args
        full = nn.BatchNorm2d(max(v["num_features"] for v in combos), a["eps"], a["momentum"],
                              a["affine"], a["track_running_stats"])
        self.weight, self.bias = full.weight, full.bias
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


class ElasticLayerNorm(ElasticModule):
    """Supernet ``LayerNorm`` over the last dimension: first-k weight and bias."""

    placeholder = ph.LayerNorm

    def __init__(self, args, strategy="sampling", memo=None):
        super().__init__(args, strategy, memo)
        combos = self.all_values()
        for v in combos:
            check_positive("LayerNorm", v, ("normalized_shape",))
        a = self.args
        full = nn.LayerNorm(max(v["normalized_shape"] for v in combos), a["eps"],
                            a["elementwise_affine"], bias=a["bias"])
        self.weight, self.bias = full.weight, full.bias

    def active_params(self, v):
        k = v["normalized_shape"]
        return {"weight": None if self.weight is None else self.weight[:k],
                "bias": None if self.bias is None else self.bias[:k]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.forward_values()
        p = self.active_params(v)
        return F.layer_norm(x, (v["normalized_shape"],), p["weight"], p["bias"], v["eps"])

    def freeze(self, memo):
        v = self.values(memo)
        return nn.LayerNorm(v["normalized_shape"], v["eps"], v["elementwise_affine"],
                            bias=v["bias"], device="meta")
