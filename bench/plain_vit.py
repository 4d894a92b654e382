"""A plain Vision Transformer (Dosovitskiy et al., 2021) with per-layer heads and MLP widths.

Written as an ordinary ``nn.Module`` for the side-by-side export of an AutoFormer subnet: a
strided-conv patch embedding, a class token and learnt position embedding, pre-norm blocks
(LayerNorm, multi-head self-attention, LayerNorm, GELU MLP), a final LayerNorm and a linear head
on the class token. As in AutoFormer, a head has a fixed width, so a layer with ``h`` heads has
``h * head_dim`` attention features, which may differ from the embed dim; q, k and v are
separate projections, as the AutoFormer subnet has them (a fused ``qkv`` layer would be a
different graph: one MatMul and a Split instead of three MatMuls). It imports nothing from the
supernet or ``models/``.

:func:`load_from_materialized` copies a materialized subnet's weights in through an explicit name
mapping (:func:`name_mapping`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerSpec", "ViT", "load_from_materialized", "name_mapping"]

#: (heads, MLP hidden features) of one block.
LayerSpec = tuple[int, int]


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``heads`` heads of ``head_dim`` features."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (self._split(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.head_dim ** -0.5, dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """Two linear layers with GELU between."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, heads: int, head_dim: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, head_dim)
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    """ViT with one :data:`LayerSpec` per block."""

    def __init__(self, dim: int, layers: Sequence[LayerSpec], head_dim: int = 64,
                 image: int = 224, patch: int = 16, num_classes: int = 1000,
                 eps: float = 1e-6) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.encoder = nn.ModuleList(EncoderBlock(dim, h, head_dim, hidden, eps)
                                     for h, hidden in layers)
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.encoder:
            x = block(x)
        return self.classifier(self.ln(x)[:, 0])


# -- weights from a materialized subnet ------------------------------------------------------------
_TOP = {"patch_embed": "patch", "cls_token": "cls_token", "pos_embed": "pos_embed",
        "norm": "ln", "head": "classifier"}
_IN_BLOCK = {"norm1": "ln1", "norm2": "ln2", "attn.q": "attn.q_proj", "attn.k": "attn.k_proj",
             "attn.v": "attn.v_proj", "attn.proj": "attn.out_proj", "fc1": "mlp.fc1",
             "fc2": "mlp.fc2"}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def name_mapping(materialized_keys: list[str]) -> dict[str, str]:
    """``{materialized AutoFormer key: plain ViT key}``.

    The subnet keeps its learnt tokens as modules (``cls_token.weight``); here they are plain
    parameters (``cls_token``).
    """
    out: dict[str, str] = {}
    for key in materialized_keys:
        m = _BLOCK_KEY.match(key)
        if m is not None:
            out[key] = f"encoder.{m[1]}.{_IN_BLOCK[m[2]]}.{m[3]}"
            continue
        layer, _, leaf = key.rpartition(".")
        if layer in ("cls_token", "pos_embed"):
            out[key] = layer
        elif layer in _TOP:
            out[key] = f"{_TOP[layer]}.{leaf}"
        else:
            raise KeyError(f"no plain ViT layer for {key!r}")
    return out


def load_from_materialized(plain: nn.Module, materialized: nn.Module) -> dict[str, str]:
    """Copy ``materialized``'s weights into ``plain`` (strict: every key, every shape).

    Returns:
        The name mapping used.
    """
    source: Mapping[str, torch.Tensor] = materialized.state_dict()
    mapping = name_mapping(list(source))
    plain.load_state_dict({mapping[k]: v.clone() for k, v in source.items()}, strict=True)
    return mapping
