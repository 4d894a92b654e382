"""``GateCheck``: one line of a gate report, shared by ``gate.py`` and ``gate_variants.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["GateCheck"]


@dataclass
class GateCheck:
    """One budget line: what was measured, the limit, and whether it held."""

    name: str
    passed: bool
    measured: Any
    limit: Any
    message: str = ""
