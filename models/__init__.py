"""Search spaces shipped with subnet-export, their arch files and small seeded checkpoints.

Importing the package registers every space::

    from models import get_space, list_spaces
    net = get_space("mobilenetv3").build(seed=0)   # a supernet, seeded, eval mode

Each space file also exposes ``supernet(strategy="sampling")`` for the CLI
(``subnet-export onnx models/mobilenetv3.py:supernet --arch models/archs/...``).
"""

from __future__ import annotations

# Imported for their registration side effect.
from . import autoformer, darts, mobilenetv3, nasbench201, proxylessnas, shufflenet  # noqa: E402,F401
from ._extremes import extreme_arch
from ._registry import ARCH_DIR, CHECKPOINT_DIR, SpaceInfo, get_space, list_spaces, register_space

__all__ = ["ARCH_DIR", "CHECKPOINT_DIR", "SpaceInfo", "extreme_arch", "get_space", "list_spaces",
           "register_space"]
