"""Elastic multi-head attention: embed dim and number of heads as choices, heads never split.

A placeholder written with ``convention="nni"`` becomes NNI's attention (``attention_nni``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SearchSpaceError
from ..space import placeholders as ph
from .attention_nni import NniMultiheadAttention
from .elastic_base import ElasticModule

__all__ = ["ElasticMultiheadAttention"]


class ElasticMultiheadAttention(ElasticModule):
    """Supernet ``MultiheadAttention``.

    The supernet keeps ``H_max`` heads of ``D_max`` dimensions each, where ``D_max`` is the
    largest ``embed_dim / num_heads`` of the space. A subnet with ``E`` dims and ``H`` heads uses
    the first ``E / H`` dimensions of each of the first ``H`` heads, in q, k and v separately,
    and the first ``E`` input and output features. The plain module is ``nn.MultiheadAttention``.
    """

    placeholder = ph.MultiheadAttention

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.MultiheadAttention and module.is_elastic():
            if module.convention == "nni":
                return NniMultiheadAttention(module.init_args, mutate_kwargs["strategy"], memo)
            return cls(module.init_args, mutate_kwargs["strategy"], memo)
        return None

    def __init__(self, args, strategy="sampling", memo=None):
        super().__init__(args, strategy, memo)
        extras = {"add_bias_kv": False, "add_zero_attn": False, "kdim": None, "vdim": None}
        for key, default in extras.items():
            if self.args.get(key, default) != default:
                raise SearchSpaceError(
                    f"MultiheadAttention: {key}={self.args[key]!r} needs convention='nni' "
                    "(the native convention slices head by head, without it)")
        combos = self.all_values()
        for v in combos:
            e, h = v["embed_dim"], v["num_heads"]
            if type(e) is not int or type(h) is not int or e <= 0 or h <= 0 or e % h:
                raise SearchSpaceError(
                    f"MultiheadAttention: embed_dim {e!r} is not divisible by num_heads {h!r} "
                    "under some arch; every combination must divide evenly")
        self.embed_max = max(v["embed_dim"] for v in combos)
        self.heads_max = max(v["num_heads"] for v in combos)
        self.head_dim_max = max(v["embed_dim"] // v["num_heads"] for v in combos)
        inner = self.heads_max * self.head_dim_max
        bias = bool(self.args["bias"])
        # Initialise like nn.MultiheadAttention: xavier on the packed in-projection, zero biases.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, self.embed_max))
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        out = nn.Linear(inner, self.embed_max, bias=bias)
        self.out_proj_weight = out.weight
        self.out_proj_bias = nn.Parameter(torch.zeros(self.embed_max)) if bias else None

    def _head_index(self, e: int, h: int) -> torch.Tensor:
        d = e // h
        heads = torch.arange(h).unsqueeze(1) * self.head_dim_max
        return (heads + torch.arange(d)).reshape(-1)

    def active_params(self, v):
        e, h = v["embed_dim"], v["num_heads"]
        idx = self._head_index(e, h).to(self.in_proj_weight.device)
        inner = self.heads_max * self.head_dim_max
        rows = torch.cat([idx, idx + inner, idx + 2 * inner])
        return {
            "in_proj_weight": self.in_proj_weight[rows, :e],
            "in_proj_bias": None if self.in_proj_bias is None else self.in_proj_bias[rows],
            "out_proj.weight": self.out_proj_weight[:e, idx],
            "out_proj.bias": None if self.out_proj_bias is None else self.out_proj_bias[:e],
        }

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        # full width under the differentiable mixture: the arch weights act through the layers
        # that feed it
        v = self.forward_values()
        p = self.active_params(v)
        batch_first = v["batch_first"]
        if batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, v["embed_dim"], v["num_heads"], p["in_proj_weight"],
            p["in_proj_bias"], None, None, False, v["dropout"], p["out_proj.weight"],
            p["out_proj.bias"], training=self.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        if batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def freeze(self, memo):
        v = self.values(memo)
        return nn.MultiheadAttention(v["embed_dim"], v["num_heads"], v["dropout"], bool(v["bias"]),
                                     batch_first=v["batch_first"], device="meta")
