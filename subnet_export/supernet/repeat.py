"""The supernet repeat: blocks repeated an elastic number of times, in one stage or several."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..space import containers as ph
from ..space.choice import Choice, evaluate, is_choice, leaves, possible_values
from ..space.spec import ParameterSpec
from .base import BaseSuperNetModule, DifferentiableMixin
from .mixing import distribution
from .walk import collect_sub_state, freeze_child
from .weighted import weighted_sum

__all__ = ["MixedRepeat"]


def _depths(d: Any) -> list[int]:
    """The depths stage depth ``d`` can take (a leaf's in candidate order)."""
    if isinstance(d, Choice):
        return list(d.candidates)
    return possible_values(d) if is_choice(d) else [d]


class MixedRepeat(DifferentiableMixin, BaseSuperNetModule):
    """Blocks repeated an elastic number of times, in one stage or several of one flat list.

    Sampling: the first ``d`` blocks of every stage. Differentiable: per stage, a
    softmax-weighted sum of the outputs at each candidate depth. The plain module is an
    ``nn.Sequential`` of the kept blocks numbered consecutively (one stage: the block indices
    are kept, so keys match; several: the layout of Once-for-All's ``get_active_subnet``).

    Args:
        blocks: the blocks of the largest depth of every stage, in order.
        depth: per stage, an int, a ``Choice`` or (``convention="nni"``) an expression over
            choices such as ``2 * d + 1``, whose leaf labels are then the arch labels.
        holder: keep the blocks in a child ``ModuleList`` of this name (NNI's ``Repeat`` keeps
            ``<path>.blocks.N``); the plain module numbers them directly either way.
        convention: ``"nni"``: NNI 2.10's ``DifferentiableMixedRepeat`` mixture (depths as
            the expression's distribution, a depth of 0 left out, tuple and dict outputs mixed
            element-wise).
    """

    def __init__(self, blocks: list[nn.Module], depth: Any, strategy: str = "sampling",
                 memo: dict | None = None, *, holder: str | None = None,
                 convention: str = "native") -> None:
        super().__init__(strategy)
        self.holder, self.convention = holder, convention
        container = nn.ModuleList(blocks) if holder else self
        if holder:
            self.add_module(holder, container)
        else:
            for i, block in enumerate(blocks):
                self.add_module(str(i), block)
        self.stages: list[tuple[int, Any]] = []  # (first block, depth)
        start = 0
        for d in (list(depth) if isinstance(depth, (list, tuple)) else [depth]):
            self.stages.append((start, d))
            start += max(_depths(d))
        self.depth_choices: dict[str, Choice] = {}
        for _, d in self.stages:
            self.depth_choices.update(leaves(d))
        self._arch = {lb: c.candidates[0] for lb, c in self.depth_choices.items()}
        if strategy == "differentiable":
            self.init_alphas({lb: len(c.candidates) for lb, c in self.depth_choices.items()},
                             memo if memo is not None else {})

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if ph.builtin_kind(module) is ph.Repeat and (module.is_elastic() or module.holder):
            return cls(module.block_list(), module.depth, mutate_kwargs["strategy"], memo,
                       holder=module.holder, convention=module.convention)
        return None

    def search_space_spec(self):
        own = {d.label for _, d in self.stages if isinstance(d, Choice)}
        return {lb: ParameterSpec(lb, "depth" if lb in own else "value", c.candidates,
                                  prior=_prior(c))
                for lb, c in self.depth_choices.items()}

    def _argmax(self, label):
        return self.depth_choices[label].candidates[int(self.alpha(label).argmax())]

    def block(self, i: int) -> nn.Module:
        """Block ``i`` of the flat list."""
        return (self._modules[self.holder] if self.holder else self)._modules[str(i)]

    def active(self, arch: Mapping[str, Any] | None = None) -> list[tuple[nn.Module, tuple]]:
        """(block, labels that chose it) for the first ``d`` blocks of every stage."""
        arch = self.current_arch() if arch is None else arch
        out = []
        for start, d in self.stages:
            n, labels = evaluate(d, arch), tuple(leaves(d))
            if type(n) is not int or not 0 <= n <= max(_depths(d)):
                raise SearchSpaceError(f"repeat depth {d!r} is {n!r} under {dict(arch)}; "
                                       "a depth must be an int between 0 and its largest")
            out += [(self.block(start + i), labels) for i in range(n)]
        return out

    def forward(self, x):
        if not self.mixing():
            for block, _ in self.active():
                x = block(x)
            return x
        for start, d in self.stages:
            if not is_choice(d):
                for i in range(d):
                    x = self.block(start + i)(x)
            elif self.convention == "nni":
                x = self._nni_mixture(x, start, d)
            else:
                x = self._mixture(x, start, d)
        return x

    def _mixture(self, x: Any, start: int, d: Choice) -> Any:
        depths, outputs, out = d.candidates, {}, x
        for i in range(max(depths) + 1):
            if i in depths:
                outputs[i] = out
            if i < max(depths):
                out = self.block(start + i)(out)
        weights = torch.softmax(self.alpha(d.label), -1)
        return weighted_sum([outputs[k] for k in depths], list(weights))

    def _nni_mixture(self, x: Any, start: int, d: Any) -> Any:
        # NNI's DifferentiableMixedRepeat.forward: the outputs after 1..max blocks whose depth
        # has a probability; a depth of 0 has none there (NNI counts depths from 1).
        soft = {lb: torch.softmax(self.alpha(lb), -1) for lb in leaves(d)}
        probs = dict(distribution(d, soft))
        res, weights = [], []
        for i in range(1, max(_depths(d)) + 1):
            x = self.block(start + i - 1)(x)
            if i in probs:
                res.append(x)
                weights.append(probs[i])
        return weighted_sum(res, weights)

    def freeze(self, memo):
        return nn.Sequential(*(freeze_child(b, memo, str(i), labels)
                               for i, (b, labels) in enumerate(self.active(memo))))

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        for i, (block, _) in enumerate(self.active()):
            collect_sub_state(block, dest, f"{prefix}{i}.", keep_vars)


def _prior(choice: Choice) -> tuple[float, ...] | None:
    prior = getattr(choice, "prior", None)
    return None if prior is None else tuple(prior)

