"""Supernet containers: layer choice, input choice, edge choice, repeat with elastic depth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..plain.modules import ChosenEdges, SelectInputs, reduce_inputs, sum_terms
from ..space import containers as ph
from ..space.choice import Choice
from ..space.spec import ParameterSpec
from .base import BaseSuperNetModule, DifferentiableMixin
from .walk import collect_sub_state, freeze_child

__all__ = ["MixedEdgeChoice", "MixedInputChoice", "MixedLayerChoice", "MixedRepeat"]


def _weighted_sum(weights: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    return sum(w * o for w, o in zip(weights, outputs))


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
    candidate name in them.
    """

    def __init__(self, candidates: dict[str, nn.Module], label: str, strategy: str = "sampling",
                 memo: dict | None = None) -> None:
        super().__init__(strategy)
        for key, module in candidates.items():
            self.add_module(key, module)
        self.names = list(candidates)
        self.label = label
        self._arch = {label: self.names[0]}
        if strategy == "differentiable":
            self.init_alphas({label: len(self.names)}, memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.LayerChoice:
            return cls(dict(module.named_children()), module.label or name,
                       mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "layer", tuple(self.names))}

    def _argmax(self, label):
        return self.names[int(self.alpha(label).argmax())]

    def chosen(self, arch: Mapping[str, Any] | None = None) -> nn.Module:
        """The candidate of ``arch`` (default: the one the forward uses now)."""
        return self._modules[self.choice(arch)]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.mixing():
            weights = torch.softmax(self.alpha(self.label), -1)
            return _weighted_sum(weights, [self._modules[n](*args, **kwargs) for n in self.names])
        return self.chosen()(*args, **kwargs)

    def freeze(self, memo):
        return freeze_child(self.chosen(memo), memo, None)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        collect_sub_state(self.chosen(), dest, prefix, keep_vars)


class MixedInputChoice(_OneLabel):
    """``n_chosen`` of ``n_candidates`` inputs (sampling), or their softmax-weighted sum (DARTS).

    Differentiable export keeps the ``n_chosen`` inputs with the largest weights.
    """

    def __init__(self, n_candidates: int, n_chosen: int, reduction: str, label: str,
                 strategy: str = "sampling", memo: dict | None = None) -> None:
        super().__init__(strategy)
        self.n_candidates, self.n_chosen, self.reduction = n_candidates, n_chosen, reduction
        self.label = label
        self._arch = {label: list(range(n_chosen))}
        if strategy == "differentiable":
            self.init_alphas({label: n_candidates}, memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.InputChoice:
            return cls(module.n_candidates, module.n_chosen, module.reduction,
                       module.label or name, mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {self.label: ParameterSpec(self.label, "input", tuple(range(self.n_candidates)),
                                          self.n_chosen)}

    def _argmax(self, label):
        return sorted(self.alpha(label).topk(self.n_chosen).indices.tolist())

    def forward(self, inputs):
        if self.mixing():
            weights = torch.softmax(self.alpha(self.label), -1)
            return _weighted_sum(weights, list(inputs))
        return reduce_inputs([inputs[i] for i in self.choice()],
                             self.reduction)

    def freeze(self, memo):
        return SelectInputs(self.choice(memo), self.reduction)

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
            return _weighted_sum(weights, [self.edge(j)(inputs[j]) for j in range(self.n_edges)])
        return sum_terms([(self.edge(j), inputs[j]) for j in self.choice()])

    def freeze(self, memo):
        chosen = self.choice(memo)
        ops = [freeze_child(self.edge(j), memo, f"ops.{k}", (self.label,))
               for k, j in enumerate(chosen)]
        return ChosenEdges(chosen, ops)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        for k, j in enumerate(self.choice()):
            collect_sub_state(self.edge(j), dest, f"{prefix}ops.{k}.", keep_vars)


class MixedRepeat(DifferentiableMixin, BaseSuperNetModule):
    """Blocks repeated an elastic number of times, in one stage or several of one flat list.

    Sampling: the first ``d`` blocks of every stage. Differentiable: per stage, a
    softmax-weighted sum of the outputs at each candidate depth. The plain module is an
    ``nn.Sequential`` of the kept blocks numbered consecutively (one stage: the block indices
    are kept, so keys match; several: the layout of Once-for-All's ``get_active_subnet``).
    """

    def __init__(self, blocks: list[nn.Module], depth: Choice | Sequence[int | Choice],
                 strategy: str = "sampling", memo: dict | None = None) -> None:
        super().__init__(strategy)
        for i, block in enumerate(blocks):
            self.add_module(str(i), block)
        self.stages: list[tuple[int, int | Choice]] = []  # (first block, depth)
        start = 0
        for d in (list(depth) if isinstance(depth, (list, tuple)) else [depth]):
            self.stages.append((start, d))
            start += max(d.candidates) if isinstance(d, Choice) else d
        self.depth_choices = {d.label: d for _, d in self.stages if isinstance(d, Choice)}
        self._arch = {lb: c.candidates[0] for lb, c in self.depth_choices.items()}
        if strategy == "differentiable":
            self.init_alphas({lb: len(c.candidates) for lb, c in self.depth_choices.items()},
                             memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is ph.Repeat and module.is_elastic():
            return cls(list(module.children()), module.depth, mutate_kwargs["strategy"], memo)
        return None

    def search_space_spec(self):
        return {lb: ParameterSpec(lb, "depth", c.candidates)
                for lb, c in self.depth_choices.items()}

    def _argmax(self, label):
        return self.depth_choices[label].candidates[int(self.alpha(label).argmax())]

    def active(self, arch: Mapping[str, Any] | None = None) -> list[tuple[nn.Module, tuple]]:
        """(block, labels that chose it) for the first ``d`` blocks of every stage."""
        arch = self.current_arch() if arch is None else arch
        out = []
        for start, d in self.stages:
            n, labels = (arch[d.label], (d.label,)) if isinstance(d, Choice) else (d, ())
            out += [(self._modules[str(start + i)], labels) for i in range(n)]
        return out

    def forward(self, x):
        if not self.mixing():
            for block, _ in self.active():
                x = block(x)
            return x
        for start, d in self.stages:
            depths = d.candidates if isinstance(d, Choice) else (d,)
            outputs, out = {}, x
            for i in range(max(depths) + 1):
                if i in depths:
                    outputs[i] = out
                if i < max(depths):
                    out = self._modules[str(start + i)](out)
            if isinstance(d, Choice):
                weights = torch.softmax(self.alpha(d.label), -1)
                x = _weighted_sum(weights, [outputs[k] for k in depths])
            else:
                x = out
        return x

    def freeze(self, memo):
        return nn.Sequential(*(freeze_child(b, memo, str(i), labels)
                               for i, (b, labels) in enumerate(self.active(memo))))

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        for i, (block, _) in enumerate(self.active()):
            collect_sub_state(block, dest, f"{prefix}{i}.", keep_vars)
