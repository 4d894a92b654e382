"""The space behind ``make demo``: the registered MobileNetV3 supernet (width 0.25, 32x32).

``archs/demo.json`` is MobileNetV3-Large's arch; at this width multiplier it materializes a
0.25x MobileNetV3-Large for 10 classes. Fast to export and validate on a laptop CPU.
"""

from __future__ import annotations

from torch import nn

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from .mobilenetv3 import build
except ImportError:  # pragma: no cover - exercised through the CLI
    from mobilenetv3 import build

__all__ = ["supernet"]


def supernet(strategy: str = "sampling") -> nn.Module:
    """The seeded MobileNetV3 supernet at width 0.25, 10 classes, input 1x3x32x32."""
    return build(strategy, seed=0)
