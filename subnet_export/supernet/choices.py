"""Supernet containers: layer choice, input choice, edge choice (the repeat: ``repeat.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..plain.modules import ChosenEdges, SelectInputs, reduce_inputs, sum_terms
from ..space import containers as ph
from ..space.spec import ParameterSpec
from .base import BaseSuperNetModule, DifferentiableMixin
from .repeat import MixedRepeat as MixedRepeat  # its home before repeat.py (convert imports it)
from .walk import collect_sub_state, freeze_child
from .weighted import weighted_sum

__all__ = ["MixedEdgeChoice", "MixedInputChoice", "MixedLayerChoice"]


class _OneLabel(DifferentiableMixin, BaseSuperNetModule):
    """A container one label chooses for.

    Forward, freeze and the sub state dict all read the choice through :meth:`choice`, so they
    cannot select differently.
    """

    label: str

    def choice(self, arch: Mapping[str, Any] | None = None) -> Any:
        """This label's value under ``arch`` (default: what the forward uses now)."""
        return (self.current_arch() if arch is None else arch)[self.label]


class MixedLayerChoice(_OneLabel):
    """One candidate at a time (sampling), or softmax(alpha)-weighted sum of all (DARTS).

    The plain module is the chosen candidate, placed where the choice was; its keys have no
    candidate name in them. Candidates may return tuples or dicts: the mixture is taken element
    by element.
    """

    def __init__(self, candidates: dict[str, nn.Module], label: str, strategy: str = "sampling",
                 memo: dict | None = None, *, prior: Sequence[float] | None = None,
                 convention: str = "native") -> None:
        super().__init__(strategy)
        for key, module in candidates.items():
            self.add_module(key, module)
        self.names = list(candidates)
        self.label, self.convention = label, convention
        self.prior = None if prior is None else tuple(prior)
        self._arch = {label: self.names[0]}
        if strategy == "differentiable":
            self.init_alphas({label: len(self.names)}, memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if ph.builtin_kind(module) is ph.LayerChoice:
            return cls(dict(module.named_children()), module.label or name,
                       mutate_kwargs["strategy"], memo, prior=getattr(module, "spec_prior", None),
                       convention=module.convention)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "layer", tuple(self.names),
                                          prior=self.prior)}

    def _argmax(self, label):
        return self.names[int(self.alpha(label).argmax())]

    def chosen(self, arch: Mapping[str, Any] | None = None) -> nn.Module:
        """The candidate of ``arch`` (default: the one the forward uses now)."""
        return self._modules[self.choice(arch)]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.mixing():
            weights = torch.softmax(self.alpha(self.label), -1)
            return weighted_sum([self._modules[n](*args, **kwargs) for n in self.names],
                                list(weights))
        return self.chosen()(*args, **kwargs)

    def freeze(self, memo):
        return freeze_child(self.chosen(memo), memo, None)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        collect_sub_state(self.chosen(), dest, prefix, keep_vars)


class MixedInputChoice(_OneLabel):
    """``n_chosen`` of ``n_candidates`` inputs (sampling), or their softmax-weighted sum (DARTS).

    Differentiable export keeps the ``n_chosen`` inputs with the largest weights (all of them
    for ``n_chosen=None``, as NNI's ``DifferentiableMixedInput``). ``bare``: a one-of-n choice's
    value is the index itself (NNI's export). ``reduction="none"`` returns the list of chosen
    inputs; its mixture (one input chosen) is the list of the one weighted sum.
    """

    def __init__(self, n_candidates: int, n_chosen: int | None, reduction: str, label: str,
                 strategy: str = "sampling", memo: dict | None = None, *, bare: bool = False,
                 prior: Sequence[float] | None = None, convention: str = "native") -> None:
        super().__init__(strategy)
        self.n_candidates, self.n_chosen, self.reduction = n_candidates, n_chosen, reduction
        self.label, self.bare, self.convention = label, bare and n_chosen == 1, convention
        self.prior = None if prior is None else tuple(prior)
        if strategy == "differentiable" and convention == "nni" and (
                reduction == "concat" or (reduction == "none" and n_chosen != 1)):
            raise SearchSpaceError(
                f"input choice {label!r}: a differentiable supernet mixes the inputs by their "
                f"weights, so it takes reduction 'sum' or 'mean' (or 'none' with n_chosen=1), "
                f"not {reduction!r} with n_chosen={n_chosen} (NNI's DARTS refuses it too)")
        self._arch = {label: self._argmax_of(list(range(n_candidates)))}
        if strategy == "differentiable":
            self.init_alphas({label: n_candidates}, memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if ph.builtin_kind(module) is ph.InputChoice:
            return cls(module.n_candidates, module.n_chosen, module.reduction,
                       module.label or name, mutate_kwargs["strategy"], memo,
                       bare=module.BARE_SINGLE, prior=getattr(module, "spec_prior", None),
                       convention=module.convention)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "input", tuple(range(self.n_candidates)),
                                          self.n_chosen, self.bare, prior=self.prior)}

    def _argmax_of(self, ranked: list[int]) -> list[int] | int:
        chosen = sorted(ranked[:self.n_chosen])
        return chosen[0] if self.bare else chosen

    def _argmax(self, label):
        return self._argmax_of(torch.argsort(-self.alpha(label).detach()).tolist())

    def indices(self, arch: Mapping[str, Any] | None = None) -> list[int]:
        """The chosen input indices under ``arch`` (default: what the forward uses now)."""
        value = self.choice(arch)
        return [value] if isinstance(value, int) else list(value)

    def forward(self, inputs):
        if self.mixing():
            weights = torch.softmax(self.alpha(self.label), -1)
            mixed = weighted_sum(list(inputs), list(weights))
            return [mixed] if self.reduction == "none" else mixed
        return reduce_inputs([inputs[i] for i in self.indices()], self.reduction)

    def freeze(self, memo):
        return SelectInputs(self.indices(memo), self.reduction)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        pass  # no tensors


class MixedEdgeChoice(_OneLabel):
    """The chosen edges' sum (sampling), or the softmax(alpha)-weighted sum of every edge (DARTS).

    Differentiable export keeps the ``n_chosen`` edges of largest weight. The plain module is a
    :class:`~subnet_export.plain.modules.ChosenEdges` holding the chosen edges' ops only, under
    ``ops.<k>`` (``k``-th chosen edge).
    """

    def __init__(self, ops: Sequence[nn.Module], n_chosen: int, label: str,
                 strategy: str = "sampling", memo: dict | None = None) -> None:
        super().__init__(strategy)
        for j, op in enumerate(ops):
            self.add_module(str(j), op)
        self.n_edges, self.n_chosen, self.label = len(ops), n_chosen, label
        self._arch = {label: list(range(n_chosen))}
        if strategy == "differentiable":
            self.init_alphas({label: self.n_edges}, memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.EdgeChoice:
            return cls(list(module.children()), module.n_chosen, module.label or name,
                       mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "input", tuple(range(self.n_edges)),
                                          self.n_chosen)}

    def _argmax(self, label):
        return sorted(self.alpha(label).topk(self.n_chosen).indices.tolist())

    def edge(self, j: int) -> nn.Module:
        """The op of edge ``j``."""
        return self._modules[str(j)]

    def forward(self, inputs):
        if self.mixing():
            weights = torch.softmax(self.alpha(self.label), -1)
            return weighted_sum([self.edge(j)(inputs[j]) for j in range(self.n_edges)],
                                list(weights))
        return sum_terms([(self.edge(j), inputs[j]) for j in self.choice()])

    def freeze(self, memo):
        chosen = self.choice(memo)
        ops = [freeze_child(self.edge(j), memo, f"ops.{k}", (self.label,))
               for k, j in enumerate(chosen)]
        return ChosenEdges(chosen, ops)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        for k, j in enumerate(self.choice()):
            collect_sub_state(self.edge(j), dest, f"{prefix}ops.{k}.", keep_vars)
