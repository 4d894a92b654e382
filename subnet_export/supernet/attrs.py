"""Choices a user module keeps as plain attributes (``self.heads``, read in ``forward``).

The protocol, in one place. ``to_supernet`` moves such a ``Choice`` into the module's
``_se_choice_attrs`` and leaves its current value in the attribute; applying an arch sets the
value and records, in ``_se_choice_leaves``, the leaf labels it came from (a value alone cannot
be inverted for ``a * b`` or ``k // 2``); freezing writes the value into the plain copy and drops
both records.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from ..space.choice import ChoiceExpr, evaluate, leaves

__all__ = [
    "AttributeState",
    "apply_attributes",
    "applied_leaves",
    "choice_attributes",
    "freeze_attributes",
    "record_choice_attributes",
    "restore_attributes",
]

_ATTRS = "_se_choice_attrs"
_LEAVES = "_se_choice_leaves"

#: ``[(module, attribute, value, applied leaves or None)]``, what :func:`apply_attributes` changes.
AttributeState = list[tuple[nn.Module, str, Any, dict[str, Any] | None]]


def record_choice_attributes(root: nn.Module, skip: type) -> None:
    """Move every ``ChoiceExpr`` attribute of the modules of ``root`` into the protocol.

    The attribute then holds the value under every label's first candidate. Modules of type
    ``skip`` (the supernet modules, whose choices are their own business) are left alone.
    """
    for _, module in root.named_modules():
        if isinstance(module, skip):
            continue
        found = {k: v for k, v in vars(module).items() if isinstance(v, ChoiceExpr)}
        if not found:
            continue
        module.__dict__.setdefault(_ATTRS, {}).update(found)
        for attr, expr in found.items():
            first = {lb: c.candidates[0] for lb, c in leaves(expr).items()}
            setattr(module, attr, evaluate(expr, first))


def choice_attributes(root: nn.Module) -> Iterator[tuple[str, nn.Module, str, ChoiceExpr]]:
    """``(module path, module, attribute, choice)`` for Choices kept as plain attributes."""
    for path, module in root.named_modules(remove_duplicate=True):
        for attr, expr in module.__dict__.get(_ATTRS, {}).items():
            yield path, module, attr, expr


def applied_leaves(module: nn.Module, attr: str) -> dict[str, Any]:
    """The leaf values the arch last applied to ``module.attr`` was made of (empty if none)."""
    return dict(module.__dict__.get(_LEAVES, {}).get(attr, {}))


def apply_attributes(root: nn.Module, arch: Mapping[str, Any]) -> AttributeState:
    """Set every choice attribute of ``root`` to its value under ``arch``; return the old state."""
    before: AttributeState = []
    for _, module, attr, expr in choice_attributes(root):
        recorded = module.__dict__.setdefault(_LEAVES, {})
        before.append((module, attr, getattr(module, attr), recorded.get(attr)))
        setattr(module, attr, evaluate(expr, arch))
        recorded[attr] = {lb: arch[lb] for lb in leaves(expr)}
    return before


def restore_attributes(state: AttributeState) -> None:
    """Put back what :func:`apply_attributes` returned."""
    for module, attr, value, applied in state:
        setattr(module, attr, value)
        recorded = module.__dict__.setdefault(_LEAVES, {})
        if applied is None:
            recorded.pop(attr, None)
        else:
            recorded[attr] = applied


def freeze_attributes(plain: nn.Module, memo: Mapping[str, Any]) -> set[str]:
    """In a plain (shallow) copy, replace the protocol by the values under ``memo``.

    Returns:
        The labels those values were made of (they shaped this module).
    """
    attrs = plain.__dict__.pop(_ATTRS, {})
    plain.__dict__.pop(_LEAVES, None)
    for attr, expr in attrs.items():
        setattr(plain, attr, evaluate(expr, memo))
    return {lb for expr in attrs.values() for lb in leaves(expr)}
