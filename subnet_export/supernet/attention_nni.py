"""Multi-head attention under ``convention="nni"``: NNI 2.10's ``MixedMultiHeadAttention``.

The supernet is ``nn.MultiheadAttention`` at the largest sizes, with its parameter names and
shapes (packed ``in_proj_weight``, or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when
``kdim`` or ``vdim`` differ or are choices, ``bias_k``/``bias_v``, ``out_proj.weight``), so NNI's
checkpoints load as they are. A subnet of ``E`` dims takes rows ``[0:E]``, ``[Emax:Emax+E]``,
``[2Emax:2Emax+E]`` (q, k, v) and the first ``E`` columns; its heads split those ``E`` dims.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SearchSpaceError
from .elastic_base import ElasticModule, mutable
from .mixing import Distribution, slice_by
from .nni_layers import super_value

__all__ = ["NniMultiheadAttention"]


class _OutProj(nn.Module):
    """Holds the output projection as ``out_proj.weight`` and ``out_proj.bias``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias


class NniMultiheadAttention(ElasticModule):
    """NNI's ``MixedMultiHeadAttention``; the plain module is ``nn.MultiheadAttention``.

    Every ``embed_dim`` must be divisible by every ``num_heads`` it meets. Under the
    differentiable strategy ``num_heads`` and ``dropout`` must be constants.
    """

    def __init__(self, args, strategy="sampling", memo=None, convention="nni"):
        super().__init__(args, strategy, memo, convention)
        self._check_archs()
        a = self.args
        sv = {k: super_value("MultiheadAttention", k, v) if mutable(v) else v
              for k, v in a.items()}
        try:
            full = nn.MultiheadAttention(sv["embed_dim"], sv["num_heads"], sv["dropout"],
                                         bool(a["bias"]), bool(a["add_bias_kv"]),
                                         bool(a["add_zero_attn"]), sv["kdim"], sv["vdim"])
        except (AssertionError, ValueError, TypeError) as err:
            raise SearchSpaceError(f"MultiheadAttention: the supernet {sv} cannot be built: "
                                   f"{err}") from None
        e_max = self.embed_max = full.embed_dim
        # NNI keeps q, k, v apart when kdim or vdim is given and may differ from embed_dim.
        self.separate = not full._qkv_same_embed_dim or any(
            a[d] is not None and sv[d] == e_max and (mutable(a[d]) or mutable(a["embed_dim"]))
            for d in ("kdim", "vdim"))
        if self.separate and full._qkv_same_embed_dim:
            full.q_proj_weight = nn.Parameter(torch.empty(e_max, e_max))
            full.k_proj_weight = nn.Parameter(torch.empty(e_max, full.kdim))
            full.v_proj_weight = nn.Parameter(torch.empty(e_max, full.vdim))
            full.register_parameter("in_proj_weight", None)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                nn.init.xavier_uniform_(getattr(full, name))
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                     "in_proj_bias", "bias_k", "bias_v"):
            self.register_parameter(name, getattr(full, name))
        self.out_proj = _OutProj(full.out_proj)

    def _check_archs(self) -> None:
        for v in self.all_values():
            e, h = v["embed_dim"], v["num_heads"]
            dims = [e, h] + [v[d] for d in ("kdim", "vdim") if v[d] is not None]
            if not all(type(d) is int and d > 0 for d in dims) or e % h:
                raise SearchSpaceError(
                    f"MultiheadAttention: embed_dim {e!r}, num_heads {h!r}, kdim {v['kdim']!r}, "
                    f"vdim {v['vdim']!r} under some arch; every embed_dim must be divisible by "
                    "every num_heads, all positive ints")
        if self.strategy == "differentiable":
            for key in ("num_heads", "dropout"):
                if mutable(self.args[key]):
                    raise SearchSpaceError(
                        f"MultiheadAttention: {key} must not be a choice under the "
                        "differentiable strategy (NNI's one-shot rule); use the sampling "
                        "strategy or a constant")

    def _blocks(self, e: Any) -> tuple[list[slice], slice]:
        m = self.embed_max
        return [slice(0, e), slice(m, m + e), slice(2 * m, 2 * m + e)], slice(0, e)

    def _sliced(self, e: Any, kd: Any, vd: Any) -> dict[str, torch.Tensor | None]:
        # One rule for the path (ints) and the mixture (distributions), as NNI's slice_param.
        p: dict[str, torch.Tensor | None] = {
            "in_proj_weight": slice_by(self.in_proj_weight, e, lambda x: self._blocks(x)),
            "in_proj_bias": slice_by(self.in_proj_bias, e, lambda x: self._blocks(x)[:1]),
            "bias_k": slice_by(self.bias_k, e, lambda x: (slice(None), slice(None), slice(0, x))),
            "bias_v": slice_by(self.bias_v, e, lambda x: (slice(None), slice(None), slice(0, x))),
            "out_proj.weight": slice_by(self.out_proj.weight, e,
                                        lambda x: (slice(0, x), slice(0, x))),
            "out_proj.bias": slice_by(self.out_proj.bias, e, lambda x: (slice(0, x),)),
        }
        if self.separate:
            p["q_proj_weight"] = slice_by(self.q_proj_weight, e,
                                          lambda x: (slice(0, x), slice(0, x)))
            for key, dim in (("k_proj_weight", kd), ("v_proj_weight", vd)):
                t = slice_by(getattr(self, key), e, lambda x: (slice(0, x),))
                p[key] = slice_by(t, dim, lambda x: (slice(None), slice(0, x)))
        return p

    def active_params(self, v):
        e = v["embed_dim"]
        kd, vd = (e if v[d] is None else v[d] for d in ("kdim", "vdim"))
        p = self._sliced(e, kd, vd)
        packed = kd == e and vd == e  # the plain module's layout
        if packed and self.separate:
            p["in_proj_weight"] = torch.cat([p.pop("q_proj_weight"), p.pop("k_proj_weight"),
                                             p.pop("v_proj_weight")])
        order = (["in_proj_weight"] if packed else
                 ["q_proj_weight", "k_proj_weight", "v_proj_weight"])
        order += ["in_proj_bias", "bias_k", "bias_v", "out_proj.weight", "out_proj.bias"]
        return {key: p.get(key) for key in order}

    def _mixture(self) -> tuple[int, dict[str, Any], dict[str, Any]]:
        m = self.mixed_args()
        e = m["embed_dim"]
        kd, vd = (e if m[d] is None else m[d] for d in ("kdim", "vdim"))
        used = self.embed_max if isinstance(e, Distribution) else e
        return used, m, self._sliced(e, kd, vd)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if self.mixing():
            e, v, p = self._mixture()
        else:
            v = self.values()
            e, p = v["embed_dim"], self.active_params(v)
        if v["batch_first"]:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        separate = p.get("in_proj_weight") is None
        out, weights = F.multi_head_attention_forward(
            query, key, value, e, v["num_heads"], p.get("in_proj_weight"), p["in_proj_bias"],
            p["bias_k"], p["bias_v"], bool(v["add_zero_attn"]), v["dropout"],
            p["out_proj.weight"], p["out_proj.bias"], training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=separate, q_proj_weight=p.get("q_proj_weight"),
            k_proj_weight=p.get("k_proj_weight"), v_proj_weight=p.get("v_proj_weight"),
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        if v["batch_first"]:
            out = out.transpose(0, 1)
        return out, weights

    def freeze(self, memo):
        v = self.values(memo)
        return nn.MultiheadAttention(v["embed_dim"], v["num_heads"], v["dropout"], bool(v["bias"]),
                                     bool(v["add_bias_kv"]), bool(v["add_zero_attn"]), v["kdim"],
                                     v["vdim"], batch_first=bool(v["batch_first"]),
                                     device="meta")
