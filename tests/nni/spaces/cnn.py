"""A small CNN model space using every NNI 2.x choice kind, as an NNI 2.10 user writes it."""

import nni.retiarii.nn.pytorch as nn
import torch
import torch.nn.functional as F
from nni.retiarii import model_wrapper


class Block(nn.Module):
    """A residual conv block; its width is the space's shared width choice."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return x + F.relu(self.bn(self.conv(x)))


@model_wrapper
class CNN(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        width = nn.ValueChoice([4, 8])  # unlabelled: NNI names it model_1
        kernel = nn.ValueChoice([3, 5], label="stem_k")
        mid = nn.ValueChoice([6, 8], label="mid")
        self.stem = nn.Conv2d(3, width, kernel_size=kernel, padding=kernel // 2)
        self.stem_bn = nn.BatchNorm2d(width)
        self.op1 = nn.LayerChoice({
            "conv": nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)),
            "pool": nn.AvgPool2d(3, stride=1, padding=1),
            "skip": nn.Identity(),
        }, label="op1")
        self.blocks = nn.Repeat(lambda index: Block(width), (1, 3))
        self.skip = nn.InputChoice(n_candidates=2, n_chosen=1)
        self.expand = nn.Conv2d(width, width * 2, 1)
        self.expand_bn = nn.BatchNorm2d(width * 2)
        self.op2 = nn.LayerChoice([
            nn.Conv2d(width * 2, mid, 3, padding=1),
            nn.Conv2d(width * 2, mid, 1),
        ])
        self.merge = nn.InputChoice(n_candidates=3, n_chosen=2, reduction="mean", label="merge")
        self.head = nn.Linear(mid, num_classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = self.blocks(self.op1(x))
        y = self.skip([x, y])
        y = F.relu(self.expand_bn(self.expand(y)))
        y = self.op2(y)
        y = self.merge([y, F.relu(y), torch.tanh(y)])
        return self.head(y.mean((2, 3)))
