"""Small plain models for the export, validate and locate tests, and a per-session export cache.

Each model covers one layer family the supernet modules materialize into; weights are seeded and
BatchNorm statistics are non-trivial, so a fused or dropped BN would show up as an error.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

import subnet_export as se

__all__ = ["COMPOSITE_ARCH", "MODELS", "build", "composite", "exported"]


def _randomise_bn(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return model


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.bn(self.conv(x)))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        return self.head((x + y).mean(1))


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(6, 4)

    def forward(self, image: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.bn(self.conv(image)).mean((2, 3))
        return feat + self.fc(vec), feat * 2.0


# name -> (factory, example inputs): the parametrisation axis of the tests
MODELS = {
    "convnet": (ConvNet, lambda: (torch.randn(2, 3, 8, 8),)),
    "mlp": (MLP, lambda: (torch.randn(2, 16),)),
    "attention": (Attention, lambda: (torch.randn(2, 6, 16),)),
    "two_in_two_out": (TwoInTwoOut, lambda: (torch.randn(2, 3, 8, 8), torch.randn(2, 6))),
}

_CACHE: dict[tuple[str, str], tuple[nn.Module, tuple[torch.Tensor, ...], se.ExportResult]] = {}
_DIR = Path(tempfile.mkdtemp(prefix="subnet-export-tests-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A fresh seeded model in eval mode and its example inputs."""
    factory, inputs = MODELS[name]
    torch.manual_seed(seed)
    return _randomise_bn(factory()).eval(), inputs()


def exported(name: str, exporter: str = "dynamo"
             ) -> tuple[nn.Module, tuple[torch.Tensor, ...], se.ExportResult]:
    """The model, its inputs and its export, made once per test session (exports take seconds).

    Callers must not modify the model or the file; copy them first.
    """
    key = (name, exporter)
    if key not in _CACHE:
        model, inputs = build(name)
        result = se.export_onnx(model, inputs, _DIR / f"{name}-{exporter}.onnx", exporter=exporter,
                                arch={"model": name})
        _CACHE[key] = (model, inputs, result)
    return _CACHE[key]


# a fixed path through the composite space of tests/spaces.py: every module kind on it
COMPOSITE_ARCH = {
    "w": 16, "stem.k": 5, "depth": 2,
    "block0.op": "mb", "block0.e": 2, "block0.k": 5,
    "block1.op": "conv", "block1.e": 1, "block1.k": 3,
    "block2.op": "skip", "block2.e": 1, "block2.k": 3,
    "skip": [1], "heads": 2, "ratio": 2,
}
_SUPERNETS: dict[str, tuple] = {}


def composite(strategy: str = "sampling") -> tuple:
    """``(supernet, arch, plain, inputs, export result)`` of the composite space, made once."""
    from spaces import CompositeSpace, randomise

    if strategy not in _SUPERNETS:
        net = se.to_supernet(CompositeSpace(), strategy=strategy)
        randomise(net, seed=0)
        net.eval()
        arch = se.freeze(net, COMPOSITE_ARCH)
        plain = se.materialize(net, arch).eval()
        inputs = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)),)
        result = se.export_onnx(plain, inputs, _DIR / f"composite-{strategy}.onnx", arch=arch)
        _SUPERNETS[strategy] = (net, arch, plain, inputs, result)
    return _SUPERNETS[strategy]
