"""A DARTS-style space of two nn.Cell (op factories, op modules), as NNI 2.x users write it."""

import nni.retiarii.nn.pytorch as nn
import torch.nn.functional as F
from nni.retiarii import model_wrapper


def cell_ops(c):
    """The candidate ops of every edge; NNI calls each with (node, op, input) indices."""
    return {
        "conv3": lambda node, op, inp: nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)),
        "conv1": lambda node, op, inp: nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)),
        "avg_pool": lambda node, op, inp: nn.AvgPool2d(3, stride=1, padding=1),
        "skip": lambda node, op, inp: nn.Identity(),
    }


@model_wrapper
class DartsSpace(nn.Module):
    def __init__(self, channels=4, nodes=3, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.cell1 = nn.Cell(cell_ops(channels), num_nodes=nodes, num_ops_per_node=2,
                             num_predecessors=2, merge_op="all", label="cell1")
        self.reduce = nn.Conv2d(channels * nodes, channels, 1)
        # candidates as modules (NNI deep-copies them per op): the cell keeps its own choices
        candidates = {name: make(0, 0, None) for name, make in cell_ops(channels).items()}
        self.cell2 = nn.Cell(candidates, num_nodes=nodes, num_ops_per_node=2,
                             num_predecessors=2, merge_op="all", label="cell2")
        self.head = nn.Linear(channels * nodes, num_classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)  # DARTS's first cell takes the stem twice
        s0, s1 = s1, self.reduce(self.cell1([s0, s1]))
        out = self.cell2([s0, s1])
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))
