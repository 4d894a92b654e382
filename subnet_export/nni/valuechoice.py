"""NNI 2.x's ``ValueChoice`` (a :class:`~subnet_export.space.choice.Choice`), ModelParameterChoice.

A ``ValueChoice`` *is* a ``Choice``: our layers, ``se.evaluate`` and the supernet take it as
such, and its expressions (:mod:`.expression`) are ``ChoiceExpr``. Its label is NNI's automatic
label, taken when NNI takes it; inside ``fixed_arch`` it is the chosen value itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ArchError, SearchSpaceError
from ..space.choice import Choice, ChoiceExpr
from ._labels import auto_label
from .expression import ValueChoiceX, positional
from .fixed import fixed_value, in_fixed_arch

__all__ = ["ModelParameterChoice", "ValueChoice", "check_prior"]


def check_prior(prior: Sequence[float] | None, n: int, what: str) -> list[float]:
    """NNI's prior: uniform when None, else ``n`` probabilities summing to 1 (within 1e-5).

    Raises:
        SearchSpaceError: the prior does not sum to 1, or has not one entry per candidate.
    """
    if n < 1:
        raise SearchSpaceError(f"{what} has no candidates")
    if not prior:
        return [1 / n] * n
    prior = [float(p) for p in prior]
    if len(prior) != n or abs(sum(prior) - 1) >= 1e-5 or min(prior) < 0:
        raise SearchSpaceError(f"{what}: the prior {prior} must be {n} probabilities summing to "
                               "1 (NNI: 'Sum of prior distribution is not 1.')")
    return prior


class ValueChoice(ValueChoiceX, Choice):
    """NNI's ``ValueChoice``: one of ``candidates``, the arch value under its label.

    Args:
        candidates: JSON scalars, or tuples / lists of them (kept as tuples; an arch file gives
            them as lists).
        prior: probabilities of the candidates (kept; sampling is uniform, as NNI's one-shot).
        label: the arch label; default: NNI's next automatic label (``model_N``).

    Inside :func:`~subnet_export.nni.fixed_arch`, ``ValueChoice(...)`` is the chosen value.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and in_fixed_arch():
            return cls.create_fixed_module(*args, **kwargs)
        return object.__new__(cls)

    @classmethod
    def create_fixed_module(cls, candidates: Sequence[Any], *, prior: Any = None,
                            label: str | None = None, **kwargs: Any) -> Any:
        """The value the open fixed arch gives this choice (NNI's fixed mode)."""
        return _fixed_candidate(fixed_value(label), _as_tuples(candidates), label)

    def __init__(self, candidates: Sequence[Any], *, prior: Sequence[float] | None = None,
                 label: str | None = None) -> None:
        cands = _as_tuples(candidates)
        self.prior = check_prior(prior, len(cands), f"ValueChoice {label!r}")
        self.spec_prior = None if not prior else tuple(self.prior)
        Choice.__init__(self, cands, auto_label(label))

    def inner_choices(self) -> Iterator[Choice]:
        yield self

    def dry_run(self) -> Any:
        return self.candidates[0]

    def all_options(self) -> Iterator[Any]:
        yield from self.candidates

    def evaluate(self, values: Mapping[str, Any] | Iterable[Any]) -> Any:
        if isinstance(values, Mapping):
            return Choice.evaluate(self, values)
        return positional(self, iter(values))

    def __repr__(self) -> str:
        return f"ValueChoice({list(self.candidates)}, label={self.label!r})"

    __hash__ = ChoiceExpr.__hash__


class ModelParameterChoice:
    """NNI's ``ModelParameterChoice``: a plain value now (``default``), one label in the arch.

    NNI's one-shot strategies cannot search it; it takes a label as NNI's does and, inside a
    fixed arch, is the arch's value.

    Raises:
        SearchSpaceError: ``default`` is neither a candidate nor a function of the candidates.
        ArchError: the fixed arch's value is not a candidate.
    """

    def __new__(cls, candidates: list[Any], *, prior: Any = None, default: Any = None,
                label: str | None = None) -> Any:
        if in_fixed_arch():
            return _fixed_candidate(fixed_value(label), list(candidates), label)
        if default is None:
            default = cls.FIRST
        if default not in candidates:
            if not callable(default):
                raise SearchSpaceError("ModelParameterChoice: `default` is not in `candidates`, "
                                       "and it is not callable either")
            default = default(candidates)
        auto_label(label)
        return default

    @staticmethod
    def FIRST(sequence: Sequence[Any]) -> Any:  # noqa: N802 (NNI's name)
        """The first candidate."""
        return sequence[0]

    @staticmethod
    def LAST(sequence: Sequence[Any]) -> Any:  # noqa: N802 (NNI's name)
        """The last candidate."""
        return sequence[-1]


def _as_tuples(candidates: Sequence[Any]) -> list[Any]:
    def conv(c: Any) -> Any:
        return tuple(conv(x) for x in c) if isinstance(c, (list, tuple)) else c
    return [conv(c) for c in candidates]


def _fixed_candidate(value: Any, candidates: Sequence[Any], label: str | None) -> Any:
    for c in candidates:
        if value == c or (isinstance(c, tuple) and isinstance(value, list)
                          and _as_tuples([value])[0] == c):
            return c
    raise ArchError(f"value {value!r} of {label or 'an unlabelled choice'} does not belong to "
                    f"the candidates {list(candidates)}", label)
