"""The base class of the elastic layers: arguments that may be choices, sliced in one place.

Each layer computes its active (sliced) tensors in one place, ``active_params``, which serves
the supernet forward, ``_save_to_sub_state_dict`` and the differentiable mixture alike, so the
supernet path and the materialized module cannot drift apart. ``convention`` names whose
slicing rules a layer follows (``"native"`` or ``"nni"``, see ``space/placeholders.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import SearchSpaceError
from ..space import placeholders as ph
from ..space.choice import assignments, evaluate, leaves
from ..space.spec import ParameterSpec
from .base import BaseSuperNetModule, DifferentiableMixin
from .mixing import distribution
from .walk import copy_slice

__all__ = ["ElasticModule", "centre", "check_positive", "mutable"]


class ElasticModule(DifferentiableMixin, BaseSuperNetModule):
    """A torch layer whose constructor arguments may be choices.

    Attributes:
        convention: ``"native"`` or ``"nni"``: whose slicing and mixing rules it follows (a
            bundle's manifest records it).
    """

    placeholder: type[ph.Placeholder]

    def __init__(self, args: Mapping[str, Any], strategy: str = "sampling",
                 memo: dict | None = None, convention: str = "native") -> None:
        super().__init__(strategy)
        if convention not in ph.CONVENTIONS:
            raise SearchSpaceError(f"convention must be one of {list(ph.CONVENTIONS)}, "
                                   f"not {convention!r}")
        self.convention = convention
        self.args = dict(args)
        choices = leaves(list(self.args.values()))
        self._spec = {lb: ParameterSpec(lb, "value", c.candidates) for lb, c in choices.items()}
        self._choices = choices
        self._arch = {lb: c.candidates[0] for lb, c in choices.items()}
        if strategy == "differentiable":
            self.init_alphas({lb: len(c.candidates) for lb, c in choices.items()},
                             memo if memo is not None else {})
        self._max_assignment = {lb: _largest(c.candidates) for lb, c in choices.items()}

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        if type(module) is cls.placeholder and module.is_elastic():
            convention = getattr(module, "convention", "native")
            if convention == "native":
                return cls(module.init_args, mutate_kwargs["strategy"], memo)
            return cls(module.init_args, mutate_kwargs["strategy"], memo, convention=convention)
        return None

    def search_space_spec(self) -> dict[str, ParameterSpec]:
        return dict(self._spec)

    def _argmax(self, label: str) -> Any:
        return self._spec[label].candidates[int(self.alpha(label).argmax())]

    def values(self, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The constructor arguments evaluated under ``arch`` (default: the current arch)."""
        arch = self.current_arch() if arch is None else arch
        return {k: evaluate(v, arch) for k, v in self.args.items()}

    def all_values(self) -> list[dict[str, Any]]:
        """The evaluated arguments under every combination of this module's labels."""
        return [self.values(a) for a in assignments(self._choices)]

    def mixed_params(self) -> dict[str, torch.Tensor | None]:
        """Differentiable forward: sum over label combinations of p(combo) * padded params."""
        total: dict[str, Any] = {}
        for arch in assignments(self._choices):
            p = 1.0
            for label, value in arch.items():
                probs = torch.softmax(self.alpha(label), -1)
                p = p * probs[self._spec[label].candidates.index(value)]
            for key, t in self.active_params(self.values(arch)).items():
                if t is None:
                    total[key] = None
                    continue
                padded = self.embed(key, t)
                total[key] = p * padded if key not in total else total[key] + p * padded
        return total

    def mixed_args(self) -> dict[str, Any]:
        """NNI's forward arguments under the mixture: a distribution for each choice argument.

        An argument that is a choice becomes a :class:`~.mixing.Distribution` (softmax of the arch
        weights through its expression); a constant stays itself.
        """
        probs = {lb: torch.softmax(self.alpha(lb), -1) for lb in self._spec}
        return {k: distribution(v, probs) if mutable(v) else v for k, v in self.args.items()}

    def forward_values(self) -> dict[str, Any]:
        """The evaluated arguments a forward uses: the active arch's, or the largest.

        The largest under the differentiable mixture, which runs at full width.
        """
        return self.values(self._max_assignment) if self.mixing() else self.values()

    def forward_params(self) -> tuple[dict[str, Any], dict[str, torch.Tensor | None]]:
        """(evaluated arguments, tensors) for this forward: the active path or the mixture.

        Layers whose mixture is not a weighted sum of tensors (the norms, attention) run the
        active tensors of :meth:`forward_values` instead: see their ``forward``.
        """
        v = self.forward_values()
        return v, self.mixed_params() if self.mixing() else self.active_params(v)

    def _save_to_sub_state_dict(self, dest, prefix, keep_vars):
        for key, t in self.active_params(self.values()).items():
            if t is not None:
                dest[prefix + key] = copy_slice(t)

    def _embed_front(self, key: str, t: torch.Tensor) -> torch.Tensor:
        # Zero-pad a first-k slice back to the full tensor's shape.
        full = getattr(self, key)
        out = full.new_zeros(full.shape)
        out[tuple(slice(0, s) for s in t.shape)] = t
        return out

    embed = _embed_front

    # Subclasses
    def active_params(self, v: Mapping[str, Any]) -> dict[str, torch.Tensor | None]:
        raise NotImplementedError


def mutable(value: Any) -> bool:
    """Whether ``value`` depends on a choice (a choice, an expression, a tuple holding one)."""
    return bool(leaves(value))


def _largest(candidates: tuple[Any, ...]) -> Any:
    # The full-width value; candidates that do not compare (a padding "same" or 1) keep the first.
    try:
        return max(candidates)
    except TypeError:
        return candidates[0]


def centre(full: int, k: int) -> slice:
    """The centred window of ``k`` in ``full``, an odd extra row at the end.

    The one rule for cropping a kernel and for putting a cropped one back.
    """
    start = (full - k) // 2
    return slice(start, start + k)


def check_positive(module: str, v: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Raise :class:`SearchSpaceError` unless ``v[key]`` is a positive int for every key."""
    for key in keys:
        if type(v[key]) is not int or v[key] <= 0:
            raise SearchSpaceError(f"{module}: {key} evaluates to {v[key]!r}; need a positive int")
