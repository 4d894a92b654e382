"""AutoFormer space: a ViT whose embed dim (shared by all layers), depth, and per-layer heads and
MLP ratio are chosen.

Patch embedding (a strided conv), a cls token and position embedding, pre-norm transformer
blocks, a final LayerNorm and a linear head on the cls token. As in AutoFormer, a head has a
fixed width (``head_dim``) so q, k and v have ``heads * head_dim`` features, and the MLP has
``int(embed * ratio)`` hidden features. Weight entanglement: every choice takes the first
features of the supernet's tensors (cls token and position embedding included, sliced by embed
dim through ``se.Parameter``); heads are never split.

Labels: ``embed``, ``depth``, ``layer<i>.heads``, ``layer<i>.mlp_ratio``. AutoFormer-T is
``build(embed=(192, 216, 240), depths=(12, 13, 14), heads=(3, 4), head_dim=64, resolution=224,
patch=16)``; the registered default is a small one (32x32, patch 8) for fast tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._registry import get_space, register_space
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _registry import get_space, register_space

__all__ = ["Attention", "AutoFormerSpace", "Block", "build", "supernet"]

INPUT_SHAPE = (1, 3, 32, 32)
MLP_RATIOS = (3.5, 4.0)


class Attention(nn.Module):
    """Multi-head self-attention with ``heads`` heads of ``head_dim`` features each.

    ``heads`` may be a choice: it is then a choice attribute (a plain int once materialized),
    and q, k, v, proj slice whole heads.
    """

    def __init__(self, embed, heads, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.q, self.k, self.v = (se.Linear(embed, inner) for _ in range(3))
        self.proj = se.Linear(inner, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
                   for t in (self.q, self.k, self.v))
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.head_dim ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, embed, heads, head_dim: int, ratio) -> None:
        super().__init__()
        hidden = se.compose(lambda e, r: int(e * r), embed, ratio)
        self.norm1 = se.LayerNorm(embed, eps=1e-6)
        self.attn = Attention(embed, heads, head_dim)
        self.norm2 = se.LayerNorm(embed, eps=1e-6)
        self.fc1 = se.Linear(embed, hidden)
        self.fc2 = se.Linear(hidden, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class AutoFormerSpace(nn.Module):
    """The search space; see the module docstring."""

    def __init__(self, embed=(192, 216, 240), depths=(12, 13, 14), heads=(3, 4),
                 head_dim: int = 64, resolution: int = 224, patch: int = 16,
                 num_classes: int = 1000) -> None:
        super().__init__()
        e = se.Choice(embed, "embed")
        tokens = (resolution // patch) ** 2 + 1
        self.patch_embed = se.Conv2d(3, e, patch, patch)
        self.cls_token = se.Parameter(1, 1, e)
        self.pos_embed = se.Parameter(1, tokens, e)
        self.blocks = se.Repeat(
            lambda i: Block(e, se.Choice(heads, f"layer{i}.heads"), head_dim,
                            se.Choice(MLP_RATIOS, f"layer{i}.mlp_ratio")),
            se.Choice(depths, "depth"))
        self.norm = se.LayerNorm(e, eps=1e-6)
        self.head = se.Linear(e, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token().expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed()
        return self.head(self.norm(self.blocks(x))[:, 0])


@register_space("autoformer", input_shape=INPUT_SHAPE,
                description="AutoFormer ViT: shared embed dim, per-layer heads and MLP ratio")
def build(strategy: str = "sampling", seed: int = 0, *, embed=(32, 48, 64), depths=(2, 3, 4),
          heads=(2, 4), head_dim: int = 8, resolution: int = 32, patch: int = 8,
          num_classes: int = 10, calib_steps: int = 0) -> nn.Module:
    """The seeded supernet (registered default: embed 32-64, depth 2-4, 32x32 in 8x8 patches).

    No BatchNorm, so nothing to calibrate; LayerNorm affine parameters are seeded instead.
    """
    net = seeded_supernet(
        lambda: AutoFormerSpace(embed, depths, heads, head_dim, resolution, patch, num_classes),
        strategy, seed, (1, 3, resolution, resolution), calib_steps=calib_steps)
    # Fresh LayerNorms are the identity (weight 1, bias 0): perturb them, so that a wrong slice
    # of them shows in the outputs.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net


def supernet(strategy: str = "sampling") -> nn.Module:
    """CLI factory: the registered configuration with its shipped trained weights."""
    return get_space("autoformer").build(strategy)
