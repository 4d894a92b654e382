"""NNI's ``fixed_arch``: inside it, building the model space builds the fixed model of one arch.

Each choice then returns what the arch chose instead of a placeholder (``ValueChoice`` its
value, ``LayerChoice`` the chosen module, ``InputChoice`` a :class:`ChosenInputs`, ``Repeat``
an ``nn.Sequential`` of the chosen depth), taking its automatic label at the very moment NNI's
does, so labels line up with the arch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ArchError
from ._labels import auto_label

__all__ = ["FixedArch", "fixed_arch", "fixed_item", "fixed_value", "in_fixed_arch"]

_stack: list[dict[str, Any]] = []


class FixedArch:
    """The context manager :func:`fixed_arch` returns (NNI's ``ContextStack('fixed', arch)``)."""

    def __init__(self, arch: Mapping[str, Any]) -> None:
        self.arch = dict(arch)

    def __enter__(self) -> FixedArch:
        _stack.append(self.arch)
        return self

    def __exit__(self, *exc: object) -> None:
        _stack.pop()


def fixed_arch(arch: str | Path | Mapping[str, Any], verbose: bool = True) -> FixedArch:
    """A context inside which building the model space builds the fixed model of ``arch``.

    ``with fixed_arch(arch): model = Space()``, as in NNI.

    Args:
        arch: an arch dict ``{label: value}`` as NNI exports it, or the path of its JSON file.
        verbose: accepted for NNI's signature (NNI logs the arch).

    Raises:
        ArchError: the file does not hold a JSON object.
    """
    if isinstance(arch, (str, Path)):
        with open(arch, encoding="utf-8") as f:
            arch = json.load(f)
    if not isinstance(arch, Mapping):
        raise ArchError(f"a fixed arch must be a {{label: value}} object, got "
                        f"{type(arch).__name__}")
    return FixedArch(arch)


def in_fixed_arch() -> bool:
    """Whether a :func:`fixed_arch` context is open."""
    return bool(_stack)


def fixed_value(label: str | None) -> Any:
    """The value of ``label`` (the next automatic label when None) in the open fixed arch."""
    return fixed_item(label)[1]


def fixed_item(label: str | None) -> tuple[str, Any]:
    """``(label, value)`` in the open fixed arch; ``label`` None takes the next automatic one.

    Raises:
        ArchError: the label is not in the arch.
    """
    arch = _stack[-1]
    label = auto_label(label)
    if label not in arch:
        raise ArchError(f"the fixed arch has no label {label!r}; its labels are {list(arch)}",
                        label)
    return label, arch[label]
