"""The supernet-module contract, after NNI 2.x's one-shot supermodules.

A supernet module owns one or more labels. It can be re-sampled, exported, and frozen into the
plain module of its active path, whose ``state_dict()`` equals what ``_save_to_sub_state_dict``
writes. ``walk.py`` applies the contract to a whole module tree; ``state.py`` holds a tree's arch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..space.spec import ParameterSpec

__all__ = ["STRATEGIES", "BaseSuperNetModule", "DifferentiableMixin"]

#: sampling: SPOS / OFA style, one path at a time. differentiable: DARTS style, softmax over paths.
STRATEGIES = ("sampling", "differentiable")


class BaseSuperNetModule(nn.Module):
    """Base class of every supernet module.

    Subclasses implement :meth:`search_space_spec`, :meth:`freeze` and
    :meth:`_save_to_sub_state_dict`; sampling and export come for free from the spec. The current
    architecture of the module lives in ``self._arch`` (``{label: value}`` for its own labels).
    """

    def __init__(self, strategy: str = "sampling") -> None:
        super().__init__()
        self.strategy = strategy
        self._arch: dict[str, Any] = {}
        # Differentiable modules run the mixed (weighted) forward unless an arch is fixed.
        self._fixed = False

    # -- the one-shot contract -----------------------------------------------------------------
    def search_space_spec(self) -> dict[str, ParameterSpec]:
        """``{label: ParameterSpec}`` of the labels this module owns (same keys as export)."""
        raise NotImplementedError

    def resample(self, memo: Mapping[str, Any], rng: random.Random | None = None) -> dict:
        """Pick a new path. Labels already in ``memo`` are honoured; returns what was sampled."""
        rng = rng or random.Random()
        new = {}
        for label, spec in self.search_space_spec().items():
            if label in memo:
                self._arch[label] = memo[label]
            else:
                value = rng.choice(spec.values())
                self._arch[label] = new[label] = value
        return new

    def export(self, memo: Mapping[str, Any]) -> dict:
        """The module's final choice for labels not in ``memo``.

        Sampling: the current sample. Differentiable: the argmax of the architecture weights.
        """
        current = self.current_arch()
        return {lb: current[lb] for lb in self.search_space_spec() if lb not in memo}

    def export_probs(self, memo: Mapping[str, Any]) -> dict:
        """``{label: {candidate: probability}}`` for labels not in ``memo``.

        Sampling modules sample uniformly; differentiable modules report softmax(alpha).
        """
        out = {}
        for label, spec in self.search_space_spec().items():
            if label in memo:
                continue
            probs = self._label_probs(label)
            if probs is None:
                probs = [1.0 / len(spec.candidates)] * len(spec.candidates)
            out[label] = {str(c): float(p) for c, p in zip(spec.candidates, probs)}
        return out

    @classmethod
    def mutate(
        cls, module: nn.Module, name: str, memo: dict, mutate_kwargs: dict
    ) -> nn.Module | None:
        """Return the supernet module replacing ``module`` (a placeholder), or None to pass."""
        return None

    def freeze(self, memo: Mapping[str, Any]) -> nn.Module:
        """The plain module of the active path, on the meta device (no memory allocated)."""
        raise NotImplementedError

    def _save_to_sub_state_dict(self, dest: dict, prefix: str, keep_vars: bool) -> None:
        """Write the active path's tensors, sliced and copied, under the plain module's keys."""
        raise NotImplementedError

    # -- state --------------------------------------------------------------------------------
    def set_arch(self, arch: Mapping[str, Any], fixed: bool | None = None) -> None:
        """Make ``arch`` (a complete, validated arch) this module's current path.

        ``fixed`` True makes a differentiable module follow it instead of mixing; None keeps
        the module's current setting.
        """
        self._arch = {lb: arch[lb] for lb in self.search_space_spec()}
        if fixed is not None:
            self._fixed = fixed

    def arch_state(self) -> tuple[dict[str, Any], bool]:
        """The module's arch and fixed flag, for :meth:`restore_arch_state`."""
        return dict(self._arch), self._fixed

    def restore_arch_state(self, state: tuple[dict[str, Any], bool]) -> None:
        """Put back what :meth:`arch_state` returned."""
        self._arch, self._fixed = dict(state[0]), state[1]

    def mixing(self) -> bool:
        """Whether the forward mixes every path (differentiable, no arch fixed)."""
        return self.strategy == "differentiable" and not self._fixed

    def current_arch(self) -> dict[str, Any]:
        """The values the forward uses now: the sample, the fixed arch, or the argmax."""
        if self.mixing():
            return {lb: self._argmax(lb) for lb in self.search_space_spec()}
        return dict(self._arch)

    # Differentiable modules override these two; sampling modules have no weights.
    def _label_probs(self, label: str) -> list[float] | None:
        return None

    def _argmax(self, label: str) -> Any:
        return self._arch[label]


class DifferentiableMixin:
    """Architecture weights (alpha) for differentiable modules, shared by label through ``memo``.

    Alphas live in a ``ParameterList`` (labels may hold dots, which ``ParameterDict`` refuses);
    modules that share a label share the very same ``nn.Parameter``.
    """

    def init_alphas(self, sizes: Mapping[str, int], memo: dict) -> None:
        """Create (or reuse from ``memo``) one alpha vector per label."""
        shared = memo.setdefault("_alphas", {})
        params = []
        for label, n in sizes.items():
            if label not in shared:
                shared[label] = nn.Parameter(torch.randn(n) * 1e-3)
            params.append(shared[label])
        self._alpha_labels = list(sizes)
        self._arch_alpha = nn.ParameterList(params)

    def alpha(self, label: str) -> nn.Parameter:
        """The alpha vector of ``label``."""
        return self._arch_alpha[self._alpha_labels.index(label)]

    def _label_probs(self, label: str) -> list[float] | None:
        if self.strategy != "differentiable":
            return None
        return torch.softmax(self.alpha(label).detach(), -1).tolist()
