"""Supernet modules the spaces need beyond the core's, each with its placeholder and plain module.

- :class:`Parameter` / :class:`ElasticParameter` / :class:`LearnedTensor`: a learnt tensor whose
  trailing sizes are choices (a ViT's cls token and position embedding, sliced by embed dim).
- :class:`ValueRepeat` / :class:`MixedValueRepeat`: a repeat whose depth label may also appear in
  value expressions (a stage that can vanish changes the next stage's input width).
- :class:`EdgeChoice` / :class:`MixedEdgeChoice` / :class:`ChosenEdges`: ``n_chosen`` of a node's
  incoming edges, each with its own op; the plain model keeps only the chosen edges (DARTS).

They follow the core's contract (``search_space_spec``, ``freeze`` on the meta device,
``_save_to_sub_state_dict`` under the plain keys, ``mutate``) and are passed to
``se.to_supernet(space, strategy, hooks=HOOKS)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from subnet_export.choice import Choice
from subnet_export.spec import ParameterSpec
from subnet_export.supernet import placeholders as ph
from subnet_export.supernet.base import (BaseSuperNetModule, DifferentiableMixin,
                                         collect_sub_state, freeze_child)
from subnet_export.supernet.choices import MixedRepeat
from subnet_export.supernet.elastic import ElasticModule

try:  # part of the `models` package, or loaded by path with the siblings on sys.path
    from ._layers import sum_terms
except ImportError:  # pragma: no cover - exercised through the CLI
    from _layers import sum_terms

__all__ = ["ChosenEdges", "EdgeChoice", "ElasticParameter", "HOOKS", "LearnedTensor",
           "MixedEdgeChoice", "MixedValueRepeat", "Parameter", "ValueRepeat"]


# -- elastic learnt tensor ----------------------------------------------------------------------
class LearnedTensor(nn.Module):
    """A learnt tensor as a module: ``forward()`` returns ``weight`` (truncated-normal init)."""

    def __init__(self, shape: Sequence[int], std: float = 0.02, device: Any = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(tuple(shape), device=device))
        if self.weight.device.type != "meta":
            nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self) -> torch.Tensor:
        return self.weight


class Parameter(ph.Placeholder):
    """Placeholder of a learnt tensor; any size may be a choice (the first k are kept)."""

    plain_class = LearnedTensor

    def __init__(self, *shape: Any, std: float = 0.02) -> None:
        super().__init__(shape=tuple(shape), std=std)


class ElasticParameter(ElasticModule):
    """Supernet learnt tensor: the largest shape, sliced to the first k along every dim."""

    placeholder = Parameter

    def __init__(self, args, strategy="sampling", memo=None):
        super().__init__(args, strategy, memo)
        shapes = [v["shape"] for v in self.all_values()]
        full = tuple(max(dims) for dims in zip(*shapes))
        self.weight = LearnedTensor(full, self.args["std"]).weight

    def active_params(self, v):
        return {"weight": self.weight[tuple(slice(0, s) for s in v["shape"])]}

    def forward(self) -> torch.Tensor:
        _, p = self.forward_params()
        return p["weight"]

    def freeze(self, memo):
        v = self.values(memo)
        return LearnedTensor(v["shape"], v["std"], device="meta")


# -- repeat whose depth is also a value -----------------------------------------------------------
class ValueRepeat(ph.Repeat):
    """``se.Repeat`` whose depth label other layers may read (e.g. ``d and w or w_prev``)."""


class MixedValueRepeat(MixedRepeat):
    """A :class:`MixedRepeat` that reports its depth label as a value choice.

    The core checks that one label means one spec everywhere; an expression over the depth
    makes the layers using it report a value spec, so the repeat reports the same.
    """

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ValueRepeat and isinstance(module.depth, Choice):
            return cls(list(module.children()), module.depth, mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "value", self.depth_choice.candidates)}


# -- chosen incoming edges ----------------------------------------------------------------------
class ChosenEdges(nn.Module):
    """Plain node of a cell: ``sum(op_k(inputs[indices[k]]))`` over the chosen edges only."""

    def __init__(self, indices: Sequence[int], ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.indices = [int(i) for i in indices]
        self.ops = nn.ModuleList(ops)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum_terms([(op, inputs[i]) for i, op in zip(self.indices, self.ops)])

    def extra_repr(self) -> str:
        return f"indices={self.indices}"


class EdgeChoice(ph.Placeholder):
    """Choose ``n_chosen`` of a node's incoming edges; edge ``j`` applies ``ops[j]`` to input ``j``.

    Unlike ``se.InputChoice`` after per-edge ops, the plain model holds only the chosen
    edges' ops, so no dead branch (or its weights) reaches the export. The arch value is the
    sorted list of chosen edge indices, as for an input choice.
    """

    def __init__(self, ops: Sequence[nn.Module], n_chosen: int, label: str) -> None:
        super().__init__()
        for j, op in enumerate(ops):
            self.add_module(str(j), op)
        self.n_chosen, self.label = n_chosen, label

    def is_elastic(self) -> bool:
        return True


class MixedEdgeChoice(DifferentiableMixin, BaseSuperNetModule):
    """Sampling: the chosen edges' sum. Differentiable: softmax(alpha)-weighted sum of all edges;
    export keeps the ``n_chosen`` edges of largest weight."""

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
        if type(module) is EdgeChoice:
            return cls(list(module.children()), module.n_chosen, module.label,
                       mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "input", tuple(range(self.n_edges)),
                                          self.n_chosen)}

    def _argmax(self, label):
        return sorted(self.alpha(label).topk(self.n_chosen).indices.tolist())

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.strategy == "differentiable" and not self._fixed:
            weights = torch.softmax(self.alpha(self.label), -1)
            return sum(w * self._modules[str(j)](x)
                       for j, (w, x) in enumerate(zip(weights, inputs)))
        chosen = self.current_arch()[self.label]
        return sum_terms([(self._modules[str(j)], inputs[j]) for j in chosen])

    def freeze(self, memo):
        chosen = memo[self.label]
        ops = [freeze_child(self._modules[str(j)], memo, f"ops.{k}", (self.label,))
               for k, j in enumerate(chosen)]
        return ChosenEdges(chosen, ops)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        for k, j in enumerate(self.current_arch()[self.label]):
            collect_sub_state(self._modules[str(j)], dest, f"{prefix}ops.{k}.", keep_vars)


#: Pass to ``se.to_supernet(space, strategy, hooks=HOOKS)``.
HOOKS: tuple[type[BaseSuperNetModule], ...] = (ElasticParameter, MixedValueRepeat, MixedEdgeChoice)
