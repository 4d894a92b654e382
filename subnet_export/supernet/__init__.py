"""Supernet side: search-space placeholders, supernet modules and the one-shot contract."""

from __future__ import annotations

from .base import STRATEGIES, BaseSuperNetModule, freeze_module, sub_state_dict
from .convert import DEFAULT_HOOKS, to_supernet

__all__ = ["BaseSuperNetModule", "DEFAULT_HOOKS", "STRATEGIES", "freeze_module",
           "sub_state_dict", "to_supernet"]
