"""ParameterSpec: one label of a search space, its candidates and how to validate a value."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchError

__all__ = ["ParameterSpec", "SPEC_KINDS"]

#: value: a value choice (int/float/str/bool, or a tuple of them); layer: a candidate key of a
#: layer choice; input: a sorted list of input indices; depth: the number of blocks of a repeat.
SPEC_KINDS = ("value", "layer", "input", "depth")


@dataclass(frozen=True)
class ParameterSpec:
    """One label of a search space.

    Attributes:
        label: the key in arch dicts.
        kind: one of :data:`SPEC_KINDS`.
        candidates: the valid values. For ``input``, the candidate inputs' indices
            (``range(n_candidates)``); a value is a list of ``n_chosen`` distinct indices.
            A tuple candidate is written as a JSON list in arch files; both are accepted.
        n_chosen: for ``input`` only, how many inputs an arch picks; None: any number but none
            (NNI's ``n_chosen=None``).
        bare: for ``input`` with ``n_chosen == 1`` only: the value is the chosen index itself,
            as NNI exports it (a one-element list is accepted too).
        prior: the candidates' prior probabilities, when the space gave them (metadata only:
            sampling is uniform, as in NNI's one-shot strategies). Not part of equality.
    """

    label: str
    kind: str
    candidates: tuple[Any, ...]
    n_chosen: int | None = None
    bare: bool = False
    prior: tuple[float, ...] | None = field(default=None, compare=False)

    def _combinations(self) -> list[tuple[Any, ...]]:
        sizes = [self.n_chosen] if self.n_chosen is not None else range(
            1, len(self.candidates) + 1)
        return [c for k in sizes for c in itertools.combinations(self.candidates, k)]

    @property
    def size(self) -> int:
        """Number of distinct values this label can take."""
        if self.kind == "input":
            return len(self._combinations())
        return len(self.candidates)

    def values(self) -> list[Any]:
        """Every valid value, in a stable order."""
        if self.kind == "input":
            if self.bare:
                return list(self.candidates)
            return [list(c) for c in self._combinations()]
        return list(self.candidates)

    def describe(self) -> str:
        """Human text of the valid values, for error messages."""
        if self.kind == "input":
            if self.bare:
                return f"one input index from {list(self.candidates)} (or a list of one)"
            many = "any number (at least one) of" if self.n_chosen is None else (
                f"{self.n_chosen}")
            return f"a list of {many} distinct input indices from {list(self.candidates)}"
        return f"one of {list(self.candidates)}"

    def validate(self, value: Any) -> Any:
        """Return ``value`` normalised or raise :class:`ArchError`.

        Input lists come back sorted (a bare index for a ``bare`` spec), a JSON list for a
        tuple candidate comes back as the candidate itself.
        """
        if self.kind == "input":
            return self._validate_input(value)
        for c in self.candidates:
            if _same(value, c):
                return c
        same_type = any(_json_type(value) == _json_type(c) for c in self.candidates)
        what = "is not a candidate" if same_type else f"has the wrong type ({type(value).__name__})"
        raise ArchError(
            f"label {self.label!r}: value {value!r} {what}; valid values are {self.describe()}",
            self.label,
        )

    def _validate_input(self, value: Any) -> list[int] | int:
        bad = ArchError(
            f"label {self.label!r}: value {value!r} is not valid; expected {self.describe()}",
            self.label,
        )
        if type(value) is int and (self.bare or self.n_chosen is None):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(type(v) is int for v in value):
            raise bad
        if len(set(value)) != len(value) or any(v not in self.candidates for v in value):
            raise bad
        if len(value) != (self.n_chosen or len(value)) or not value:
            raise bad
        return value[0] if self.bare else sorted(value)

    def to_json(self) -> dict[str, Any]:
        """JSON form, as `subnet-export space --json` prints it."""
        out: dict[str, Any] = {"kind": self.kind, "candidates": list(self.candidates)}
        if self.kind == "input":
            out["n_chosen"] = self.n_chosen
            if self.bare:
                out["bare"] = True
        elif self.n_chosen is not None:
            out["n_chosen"] = self.n_chosen
        if self.prior is not None:
            out["prior"] = list(self.prior)
        out["size"] = self.size
        return out


def _same(value: Any, candidate: Any) -> bool:
    # JSON equality: 8 and 8.0, 1 and True differ; a list equals a tuple candidate.
    if isinstance(candidate, tuple):
        return (isinstance(value, (list, tuple)) and len(value) == len(candidate)
                and all(_same(v, c) for v, c in zip(value, candidate)))
    return type(value) is type(candidate) and value == candidate


def _json_type(value: Any) -> type:
    return tuple if isinstance(value, (list, tuple)) else type(value)
