"""NNI 2.x's ``LayerChoice`` and ``InputChoice`` on our containers, and ``ChosenInputs``.

They are :mod:`subnet_export.space.containers` subclasses converted by the built-in supernet
modules (``converts_as``), with NNI 2.10's API (``lc['conv']``, ``lc[0]``, ``len``, ``names``,
``candidates``, ``prior``, ``label``), automatic labels taken when NNI takes them, and its arch
values: a layer choice's candidate key, an input choice of one as a bare index, of more (or of
``n_chosen=None``, any number) as a sorted list. Inside ``fixed_arch`` they build the chosen
module and a :class:`ChosenInputs`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import ArchError, SearchSpaceError
from ..plain.modules import reduce_inputs
from ..space import containers
from ._labels import auto_label
from .fixed import fixed_item, fixed_value, in_fixed_arch
from .valuechoice import check_prior

__all__ = ["ChosenInputs", "InputChoice", "LayerChoice", "Placeholder"]

#: names NNI refuses for layer choice candidates
RESERVED = ("length", "reduction", "return_mask", "_key", "key", "names")


def _legacy_label(what: str, label: str | None, kwargs: dict[str, Any],
                  ignored: tuple[str, ...]) -> str | None:
    # NNI 2.x's deprecated keyword arguments: ``key`` is the label, the others are ignored.
    if "key" in kwargs:
        warnings.warn(f'{what}: "key" is deprecated. Assuming label.', stacklevel=3)
        label = kwargs.pop("key")
    for name in ignored:
        if kwargs.pop(name, None) is not None:
            warnings.warn(f'{what}: "{name}" is deprecated. Ignoring...', stacklevel=3)
    if kwargs:
        raise SearchSpaceError(f"{what}: unexpected argument(s) {sorted(kwargs)}")
    return label


def _direct_forward(what: str) -> None:
    warnings.warn(f"You should not run forward of this {what} directly: it runs its first "
                  "candidate, as NNI's; se.to_supernet(space) makes the supernet",
                  UserWarning, stacklevel=3)


class LayerChoice(containers.LayerChoice):
    """NNI's ``LayerChoice``: one of ``candidates``; the arch value is the candidate's key.

    Args:
        candidates: a list (keys ``"0"``, ``"1"``, ...) or a dict / OrderedDict of modules.
        prior: probabilities of the candidates (kept; sampling is uniform, as NNI's one-shot).
        label: the arch label; default: NNI's next automatic label.

    Raises:
        SearchSpaceError: candidates neither a list nor a dict, a reserved or invalid key, a
            prior that does not sum to 1.
    """

    converts_as = containers.LayerChoice

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and in_fixed_arch():
            return cls.create_fixed_module(*args, **kwargs)
        return super().__new__(cls)

    @classmethod
    def create_fixed_module(cls, candidates: Any, *, prior: Any = None,
                            label: str | None = None, **kwargs: Any) -> nn.Module:
        """The candidate the open fixed arch chose (NNI's fixed mode)."""
        label = _legacy_label("LayerChoice", label, dict(kwargs), ("return_mask", "reduction"))
        label, chosen = fixed_item(label)
        as_list = isinstance(candidates, list)
        keys = [str(i) for i in range(len(candidates))] if as_list else list(candidates)
        if as_list and not isinstance(chosen, bool) and str(chosen) in keys:
            return candidates[int(chosen)]  # NNI takes the index as an int or its string
        if not as_list and chosen in keys:
            return candidates[chosen]
        raise ArchError(f"the fixed arch chooses {chosen!r} for layer choice {label!r}, which "
                        f"is not one of {keys}", label)

    def __init__(self, candidates: dict[str, nn.Module] | list[nn.Module], *,
                 prior: list[float] | None = None, label: str | None = None,
                 **kwargs: Any) -> None:
        label = _legacy_label("LayerChoice", label, kwargs, ("return_mask", "reduction"))
        if not isinstance(candidates, (dict, list)):
            raise SearchSpaceError(
                f"LayerChoice: unsupported candidates type {type(candidates).__name__}; give a "
                "list or a dict of modules")
        if isinstance(candidates, dict):
            bad = [k for k in candidates if k in RESERVED]
            if bad:
                raise SearchSpaceError(f"LayerChoice: please don't use a reserved name {bad[0]!r} "
                                       "for your module")
        self_prior = check_prior(prior, len(candidates), f"LayerChoice {label!r}")
        super().__init__(candidates, auto_label(label))
        self.candidates = candidates
        self.prior, self.spec_prior = self_prior, None if not prior else tuple(self_prior)
        self.names = list(self._modules)
        self.convention = "nni"

    def __getitem__(self, idx: int | str) -> nn.Module:
        if isinstance(idx, str):
            return self._modules[idx]
        return list(self)[idx]

    def __setitem__(self, idx: int | str, module: nn.Module) -> None:
        setattr(self, idx if isinstance(idx, str) else self.names[idx], module)

    def __delitem__(self, idx: int | str | slice) -> None:
        keys = (self.names[idx] if isinstance(idx, slice)
                else [idx if isinstance(idx, str) else self.names[idx]])
        for key in keys:
            delattr(self, key)
            self.names.remove(key)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[nn.Module]:
        return (self._modules[name] for name in self.names)

    @property
    def length(self) -> int:
        """Deprecated (NNI): ``len(layer_choice)``."""
        return len(self)

    @property
    def choices(self) -> list[nn.Module]:
        """Deprecated (NNI): ``list(layer_choice)``."""
        return list(self)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        _direct_forward("LayerChoice")
        return self._modules[self.names[0]](*args, **kwargs)

    def extra_repr(self) -> str:
        return f"label={self.label!r}"


class InputChoice(containers.InputChoice):
    """NNI's ``InputChoice``: ``n_chosen`` of ``n_candidates`` inputs, reduced.

    Args:
        n_candidates: how many inputs the call gets.
        n_chosen: how many an arch picks; None: any number (at least one).
        reduction: ``"sum"``, ``"mean"``, ``"concat"`` (dim 1) or ``"none"`` (the list).
        prior: probabilities of the candidates (kept).
        label: the arch label; default: NNI's next automatic label.

    The arch value is the chosen index for ``n_chosen=1`` (NNI's export; a list of one is
    accepted), else the sorted list of indices.
    """

    converts_as = containers.InputChoice
    REDUCTIONS = ("mean", "concat", "sum", "none")
    ANY_NUMBER = True
    BARE_SINGLE = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and in_fixed_arch():
            return cls.create_fixed_module(*args, **kwargs)
        return super().__new__(cls)

    @classmethod
    def create_fixed_module(cls, n_candidates: int, n_chosen: int | None = 1,
                            reduction: str = "sum", *, prior: Any = None,
                            label: str | None = None, **kwargs: Any) -> ChosenInputs:
        """The inputs the open fixed arch chose (NNI's fixed mode)."""
        label = _legacy_label("InputChoice", label, dict(kwargs), ("return_mask", "choose_from"))
        return ChosenInputs(fixed_value(label), reduction)

    def __init__(self, n_candidates: int, n_chosen: int | None = 1, reduction: str = "sum", *,
                 prior: list[float] | None = None, label: str | None = None,
                 **kwargs: Any) -> None:
        label = _legacy_label("InputChoice", label, kwargs, ("return_mask", "choose_from"))
        self_prior = check_prior(prior, n_candidates, f"InputChoice {label!r}")
        if reduction not in self.REDUCTIONS:
            raise SearchSpaceError(f"InputChoice {label!r}: reduction {reduction!r} is not one "
                                   f"of {list(self.REDUCTIONS)}")
        super().__init__(n_candidates, n_chosen, reduction, auto_label(label))
        self.prior, self.spec_prior = self_prior, None if not prior else tuple(self_prior)
        self.convention = "nni"

    def forward(self, candidate_inputs: list[torch.Tensor]) -> Any:
        _direct_forward("InputChoice")
        return candidate_inputs[0]

    def extra_repr(self) -> str:
        return (f"n_candidates={self.n_candidates}, n_chosen={self.n_chosen}, "
                f"reduction={self.reduction!r}, label={self.label!r}")


class ChosenInputs(nn.Module):
    """NNI's ``ChosenInputs``: an input choice once chosen (what ``fixed_arch`` builds).

    Args:
        chosen: the chosen index, or a list of them.
        reduction: ``"sum"``, ``"mean"``, ``"concat"`` or ``"none"``.
    """

    def __init__(self, chosen: list[int] | int, reduction: str) -> None:
        super().__init__()
        self.chosen = chosen if isinstance(chosen, list) else [chosen]
        self.reduction = reduction

    def forward(self, candidate_inputs: list[torch.Tensor]) -> Any:
        chosen = [candidate_inputs[i] for i in self.chosen]
        if not chosen and self.reduction != "none":
            return None  # NNI returns None for an empty choice
        return reduce_inputs(chosen, self.reduction)


class Placeholder(nn.Module):
    """NNI's ``Placeholder``: an empty module for later mutation; its forward is the identity."""

    def __init__(self, label: str, **related_info: Any) -> None:
        super().__init__()
        self.label, self.related_info = label, related_info

    def forward(self, x: Any) -> Any:
        return x
