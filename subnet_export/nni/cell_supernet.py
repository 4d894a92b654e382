"""Supernet modules of NNI's cells, and the hooks ``se.to_supernet`` needs for them.

A cell of module candidates keeps its layout (``CellBody``); its ops and inputs become
:class:`NNIMixedLayer` and :class:`NNIMixedInput`, whose state dict keys are those of NNI 2.10's
``PathSamplingLayer`` / ``DifferentiableMixedLayer`` (one ``_arch_alpha`` tensor per choice, not
a list) and whose input arch value is a bare index, as NNI exports it. Other cells become one
:class:`~subnet_export.nni.cell_mixed.MixedCell`. Pass :data:`CELL_HOOKS` as
``se.to_supernet(space, strategy, hooks=CELL_HOOKS)`` (``supernet.convert.DEFAULT_HOOKS`` may
list them too).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..plain.modules import SelectInputs
from ..space.spec import ParameterSpec
from ..supernet.choices import MixedInputChoice, MixedLayerChoice
from .cell_mixed import MixedCell
from .cell_ops import CellInputChoice, CellOpChoice

__all__ = ["CELL_HOOKS", "NNIMixedInput", "NNIMixedLayer"]


class _OwnAlpha:
    """One label's alpha as the module's own ``_arch_alpha`` parameter (NNI's key).

    Shared with every module of the same label through ``memo["_alphas"]``, as the built-in
    supernet modules share theirs.
    """

    def init_alphas(self, sizes: Mapping[str, int], memo: dict) -> None:
        (label, n), = sizes.items()
        shared = memo.setdefault("_alphas", {})
        if label not in shared:
            shared[label] = nn.Parameter(torch.randn(n) * 1e-3)
        elif len(shared[label]) != n:
            raise SearchSpaceError(
                f"label {label!r} has {len(shared[label])} architecture weights elsewhere but "
                f"{n} candidates here; one label must mean one choice everywhere")
        self._alpha_labels = [label]
        self._arch_alpha = shared[label]

    def alpha(self, label: str) -> nn.Parameter:
        """The alpha vector of ``label`` (this module's only one)."""
        return self._arch_alpha


class NNIMixedLayer(_OwnAlpha, MixedLayerChoice):
    """A cell's op choice: :class:`MixedLayerChoice` with NNI's ``_arch_alpha`` key."""

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is CellOpChoice:
            return cls(dict(module.named_children()), module.label or name,
                       mutate_kwargs["strategy"], memo)
        return None


class NNIMixedInput(_OwnAlpha, MixedInputChoice):
    """A cell's input choice: one of ``n_candidates`` states, the arch value its bare index.

    Sampling reads the chosen state; differentiable mixes all states by softmax(alpha) and
    exports the argmax, as NNI's ``PathSamplingInput`` / ``DifferentiableMixedInput``.
    """

    def __init__(self, n_candidates: int, label: str, strategy: str = "sampling",
                 memo: dict | None = None) -> None:
        super().__init__(n_candidates, 1, "sum", label, strategy, memo)
        self._arch = {label: 0}

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is CellInputChoice:
            return cls(module.n_candidates, module.label or name, mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "value", tuple(range(self.n_candidates)))}

    def _argmax(self, label):
        return int(self.alpha(label).argmax())

    def forward(self, inputs):
        if len(inputs) != self.n_candidates:
            raise SearchSpaceError(
                f"input choice {self.label!r} has {self.n_candidates} candidates but got "
                f"{len(inputs)} inputs")
        if self.mixing():
            weights = torch.softmax(self.alpha(self.label), -1)
            return sum(w * x for w, x in zip(weights, inputs))
        return inputs[self.choice()]

    def freeze(self, memo):
        return SelectInputs([self.choice(memo)], "sum")


#: The supernet modules of NNI's cells, for ``se.to_supernet(..., hooks=CELL_HOOKS)``.
CELL_HOOKS = (MixedCell, NNIMixedLayer, NNIMixedInput)
