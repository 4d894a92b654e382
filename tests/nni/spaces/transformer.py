"""A one-layer transformer encoder model space (attention width and heads searched), NNI 2.x."""

import nni.retiarii.nn.pytorch as nn
import torch.nn.functional as F
from nni.retiarii import model_wrapper


@model_wrapper
class Transformer(nn.Module):
    def __init__(self, features=6, num_classes=4, heads=None):
        super().__init__()
        embed = nn.ValueChoice([4, 8], label="embed")
        if heads is None:
            heads = nn.ValueChoice([1, 2], label="heads")
        ratio = nn.ValueChoice([2, 3])  # unlabelled: NNI names it model_1
        self.proj = nn.Linear(features, embed)
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(embed)
        self.fc1 = nn.Linear(embed, embed * ratio)
        self.fc2 = nn.Linear(embed * ratio, embed)
        self.norm2 = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, num_classes)

    def forward(self, x):
        x = self.proj(x)
        x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
        x = self.norm2(x + self.fc2(F.gelu(self.fc1(x))))
        return self.head(x.mean(1))


def fixed_heads():
    """The space with two heads: NNI's DARTS cannot search ``num_heads``."""
    return Transformer(heads=2)
