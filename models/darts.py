"""DARTS / NDS cell space: eight ops per edge, two chosen incoming edges per node.

The network of the DARTS paper's search phase: a 3x3 stem (3C channels), ``layers`` cells with
reduction cells at 1/3 and 2/3 of the depth (channels doubled), global pooling and a linear
classifier. A cell preprocesses its two inputs (the two previous cells' outputs) to C channels
and builds four nodes; node ``i`` has an incoming edge from each of its ``i + 2`` predecessors,
each edge chooses an op (``none``, ``max_pool_3x3``, ``avg_pool_3x3``, ``skip_connect``,
``sep_conv_3x3``, ``sep_conv_5x5``, ``dil_conv_3x3``, ``dil_conv_5x5``) and the node keeps two of
its edges. The cell's output concatenates the four nodes. All normal cells share one genotype
(labels ``normal.*``), all reduction cells another (``reduce.*``), as in DARTS.

Searched with the differentiable strategy: edge ops are softmax-mixed (label ``<cell>.n<i>.e<j>``)
and so are a node's edges (label ``<cell>.n<i>.in``); ``se.freeze`` exports the argmax op per edge
and the two edges of largest weight per node. Registered with C=8, 5 cells, 32x32.
"""

from __future__ import annotations

import torch
from torch import nn

import subnet_export as se

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._init import seeded_supernet
    from ._registry import get_space, register_space
except ImportError:  # pragma: no cover - exercised through the CLI
    from _init import seeded_supernet
    from _registry import get_space, register_space

__all__ = ["Cell", "DartsSpace", "OPS", "build", "supernet"]

INPUT_SHAPE = (1, 3, 32, 32)
NODES = 4


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=False)  # DARTS search: no affine parameters inside cells


class ReLUConvBN(nn.Sequential):
    """ReLU, conv, BatchNorm."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, padding, bias=False), _bn(cout))


class DilConv(nn.Sequential):
    """ReLU, dilated depthwise conv, 1x1 conv, BatchNorm."""

    def __init__(self, c: int, k: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(nn.ReLU(),
                         nn.Conv2d(c, c, k, stride, padding, dilation, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), _bn(c))


class SepConv(nn.Sequential):
    """Two stacked :class:`DilConv` with dilation 1 (the first one strided)."""

    def __init__(self, c: int, k: int, stride: int, padding: int) -> None:
        super().__init__(DilConv(c, k, stride, padding, 1), DilConv(c, k, 1, padding, 1))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset strided 1x1 convs, concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, 2, bias=False)
        self.bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


OPS = {
    "none": lambda c, s: se.Zero(s),
    "max_pool_3x3": lambda c, s: nn.Sequential(nn.MaxPool2d(3, s, 1), _bn(c)),
    "avg_pool_3x3": lambda c, s: nn.Sequential(
        nn.AvgPool2d(3, s, 1, count_include_pad=False), _bn(c)),
    "skip_connect": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, s: SepConv(c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConv(c, 5, s, 2),
    "dil_conv_3x3": lambda c, s: DilConv(c, 3, s, 2, 2),
    "dil_conv_5x5": lambda c, s: DilConv(c, 5, s, 4, 2),
}


class Cell(nn.Module):
    """One DARTS cell; ``kind`` (``normal`` or ``reduce``) prefixes its shared labels."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        kind = "reduce" if reduction else "normal"
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.nodes = nn.ModuleList()
        for i in range(NODES):
            edges = []
            for j in range(i + 2):
                stride = 2 if reduction and j < 2 else 1
                edges.append(se.LayerChoice({name: make(c, stride) for name, make in OPS.items()},
                                            label=f"{kind}.n{i}.e{j}"))
            self.nodes.append(se.EdgeChoice(edges, 2, label=f"{kind}.n{i}.in"))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in self.nodes:
            states.append(node(states))
        return torch.cat(states[2:], dim=1)


class DartsSpace(nn.Module):
    """The DARTS search network (``channels`` = C, ``layers`` cells)."""

    def __init__(self, channels: int = 16, layers: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(3 * c))
        c_pp, c_p, reduction_prev = 3 * c, 3 * c, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            self.cells.append(Cell(c_pp, c_p, c, reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, NODES * c, reduction
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(s1, 1), 1))


@register_space("darts", input_shape=INPUT_SHAPE, default_strategy="differentiable",
                description="DARTS cells: 8 ops per edge, 2 of i+2 edges per node, argmax export")
def build(strategy: str = "differentiable", seed: int = 0, *, channels: int = 8, layers: int = 5,
          num_classes: int = 10, resolution: int = 32, calib_steps: int = 6) -> nn.Module:
    """The seeded supernet (registered default: C=8, 5 cells, 10 classes, 32x32)."""
    return seeded_supernet(lambda: DartsSpace(channels, layers, num_classes), strategy, seed,
                           (1, 3, resolution, resolution), calib_steps=calib_steps)


def supernet(strategy: str = "differentiable") -> nn.Module:
    """CLI factory: the registered configuration with its shipped trained weights."""
    return get_space("darts").build(strategy)
