"""The space behind ``make demo``: the registered MobileNetV3 supernet (width 0.25, 32x32).

``archs/demo.json`` is MobileNetV3-Large's arch; at this width multiplier it materializes a
0.25x MobileNetV3-Large for 10 classes. Fast to export and validate on a laptop CPU.
"""

from __future__ import annotations

from torch import nn

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from . import mobilenetv3  # noqa: F401 - registers the space
    from ._registry import get_space
except ImportError:  # pragma: no cover - exercised through the CLI
    import mobilenetv3  # noqa: F401
    from _registry import get_space

__all__ = ["supernet"]


def supernet(strategy: str = "sampling") -> nn.Module:
    """The MobileNetV3 supernet at width 0.25, 10 classes, input 1x3x32x32, shipped weights."""
    return get_space("mobilenetv3").build(strategy)
