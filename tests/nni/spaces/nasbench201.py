"""A small NAS-Bench-201 space (nn.NasBench201Cell), as an NNI 2.x user writes it."""

import nni.retiarii.nn.pytorch as nn
import torch.nn.functional as F
from nni.retiarii import model_wrapper


def conv(kernel):
    def make(c_in, c_out):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2,
                                                  bias=False), nn.BatchNorm2d(c_out))
    return make


class Zero(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()

    def forward(self, x):
        return x * 0.0


OPS = {
    "none": Zero,
    "skip_connect": lambda c_in, c_out: nn.Identity(),
    "conv_1x1": conv(1),
    "conv_3x3": conv(3),
    "avg_pool_3x3": lambda c_in, c_out: nn.AvgPool2d(3, stride=1, padding=1),
}


@model_wrapper
class NasBench201(nn.Module):
    def __init__(self, channels=4, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.cell1 = nn.NasBench201Cell(OPS, channels, channels, label="cell1")
        self.cell2 = nn.NasBench201Cell(OPS, channels, channels)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.cell2(self.cell1(self.stem(x)))
        return self.head(F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1))
