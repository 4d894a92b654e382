"""The arch a supernet tree is on: applied, sampled, exported, saved and put back, in one place.

Every supernet module keeps its own labels' values (``BaseSuperNetModule.set_arch``); choice
attributes of user modules keep theirs through ``attrs.py``. The functions here move a whole tree
at once, so no other module writes that state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..space.choice import leaves
from .attrs import (
    AttributeState,
    applied_leaves,
    apply_attributes,
    choice_attributes,
    restore_attributes,
)
from .base import BaseSuperNetModule
from .walk import iter_supernet_modules

__all__ = ["ArchState", "apply_arch", "exported_arch", "resample_arch"]


@dataclass
class ArchState:
    """What :func:`apply_arch` changed, to put it back with :meth:`restore`."""

    modules: list[tuple[BaseSuperNetModule, tuple[dict[str, Any], bool]]]
    attributes: AttributeState

    def restore(self) -> None:
        """Put every module and attribute back as it was."""
        for module, state in self.modules:
            module.restore_arch_state(state)
        restore_attributes(self.attributes)


def apply_arch(root: nn.Module, arch: Mapping[str, Any], fixed: bool | None = None) -> ArchState:
    """Make the complete, validated ``arch`` the tree's current path; return the old state.

    ``fixed`` True makes differentiable modules follow the arch instead of mixing (see
    ``BaseSuperNetModule.set_arch``); None keeps each module's setting.
    """
    modules = []
    for _, module in iter_supernet_modules(root):
        modules.append((module, module.arch_state()))
        module.set_arch(arch, fixed)
    return ArchState(modules, apply_attributes(root, arch))


def exported_arch(root: nn.Module) -> dict[str, Any]:
    """The tree's own choice: every module's ``export`` (argmax or current sample), in order.

    Labels only choice attributes read come from the arch last applied to them, else their first
    candidate. The result is complete but not validated.
    """
    memo: dict[str, Any] = {}
    for _, module in iter_supernet_modules(root):
        memo.update(module.export(memo))
    for _, module, attr, expr in choice_attributes(root):
        applied = applied_leaves(module, attr)
        for label, choice in leaves(expr).items():
            memo.setdefault(label, applied.get(label, choice.candidates[0]))
    return memo


def resample_arch(root: nn.Module, rng: random.Random) -> dict[str, Any]:
    """Resample every module, labels shared through one memo; return the complete arch.

    Labels that only choice attributes read are drawn too. The arch is not yet validated.
    """
    memo: dict[str, Any] = {}
    for _, module in iter_supernet_modules(root):
        memo.update(module.resample(memo, rng))
    for _, _, _, expr in choice_attributes(root):
        for label, choice in leaves(expr).items():
            if label not in memo:
                memo[label] = rng.choice(choice.candidates)
    return memo
