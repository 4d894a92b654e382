"""NAS-Bench-201 space: one cell of four nodes, five ops on each of its six edges.

The NAS-Bench-201 network: a 3x3 stem (C channels), three stages of N cells (C, 2C, 4C) joined
by residual reduction blocks, BatchNorm-ReLU, global pooling and a linear classifier. Node ``j``
sums an op of every earlier node; each edge (label ``edge_<j>_<i>``, from node ``i`` to ``j``)
chooses ``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3`` or ``avg_pool_3x3``. All
cells share the labels, so the space has 5^6 = 15625 archs, as the benchmark.
Registered with C=8, N=2 at 32x32 (the benchmark uses C=16, N=5).
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

__all__ = ["NB201Cell", "NasBench201Space", "build", "supernet"]

INPUT_SHAPE = (1, 3, 32, 32)
NODES = 4


class ReLUConvBN(nn.Sequential):
    """ReLU, conv, BatchNorm."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout))


def _ops(c: int) -> dict[str, nn.Module]:
    return {
        "none": se.Zero(),
        "skip_connect": nn.Identity(),
        "nor_conv_1x1": ReLUConvBN(c, c, 1),
        "nor_conv_3x3": ReLUConvBN(c, c, 3),
        "avg_pool_3x3": nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    }


class NB201Cell(nn.Module):
    """Node ``j`` = sum over ``i < j`` of ``edges[j][i](node i)``; the output is the last node."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList(se.LayerChoice(_ops(c), label=f"edge_{j}_{i}") for i in range(j))
            for j in range(1, NODES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for edges in self.edges:
            nodes.append(se.sum_terms(list(zip(edges, nodes))))
        return nodes[-1]


class ResBlock(nn.Module):
    """NAS-Bench-201's reduction: two ReLU-conv-BN (the first strided) plus pooled 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NasBench201Space(nn.Module):
    """The NAS-Bench-201 network with ``cells`` cells per stage."""

    def __init__(self, channels: int = 16, cells: int = 5, num_classes: int = 10) -> None:
        super().__init__()
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)]
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [NB201Cell(c) for _ in range(cells)]
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@register_space("nasbench201", input_shape=INPUT_SHAPE,
                description="NAS-Bench-201 cell: 6 edges x {none, skip, conv1x1, conv3x3, avgpool}")
def build(strategy: str = "sampling", seed: int = 0, *, channels: int = 8, cells: int = 2,
          num_classes: int = 10, resolution: int = 32, calib_steps: int = 6) -> nn.Module:
    """The seeded supernet (registered default: C=8, 2 cells per stage, 32x32)."""
    return seeded_supernet(lambda: NasBench201Space(channels, cells, num_classes), strategy, seed,
                           (1, 3, resolution, resolution), calib_steps=calib_steps)


def supernet(strategy: str = "sampling") -> nn.Module:
    """CLI factory: the registered configuration with its shipped trained weights."""
    return get_space("nasbench201").build(strategy)
