"""ParameterSpec: one label of a search space, its candidates and how to validate a value."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from ..errors import ArchError

__all__ = ["ParameterSpec", "SPEC_KINDS"]

#: value: a value choice (int/float/str); layer: a candidate key of a layer choice;
#: input: a sorted list of input indices; depth: the number of blocks of a repeat.
SPEC_KINDS = ("value", "layer", "input", "depth")


@dataclass(frozen=True)
class ParameterSpec:
    """One label of a search space.

    Attributes:
        label: the key in arch dicts.
        kind: one of :data:`SPEC_KINDS`.
        candidates: the valid values. For ``input``, the candidate inputs' indices
            (``range(n_candidates)``); a value is a list of ``n_chosen`` distinct indices.
        n_chosen: for ``input`` only, how many inputs an arch picks.
    """

    label: str
    kind: str
    candidates: tuple[Any, ...]
    n_chosen: int | None = None

    @property
    def size(self) -> int:
        """Number of distinct values this label can take."""
        if self.kind == "input":
            return len(list(itertools.combinations(self.candidates, self.n_chosen or 1)))
        return len(self.candidates)

    def values(self) -> list[Any]:
        """Every valid value, in a stable order."""
        if self.kind == "input":
            return [list(c) for c in itertools.combinations(self.candidates, self.n_chosen or 1)]
        return list(self.candidates)

    def describe(self) -> str:
        """Human text of the valid values, for error messages."""
        if self.kind == "input":
            return (
                f"a list of {self.n_chosen} distinct input indices from "
                f"{list(self.candidates)}"
            )
        return f"one of {list(self.candidates)}"

    def validate(self, value: Any) -> Any:
        """Return ``value`` normalised (input lists sorted) or raise :class:`ArchError`."""
        if self.kind == "input":
            return self._validate_input(value)
        for c in self.candidates:
            if type(value) is type(c) and value == c:
                return c
        same_type = any(type(value) is type(c) for c in self.candidates)
        what = "is not a candidate" if same_type else f"has the wrong type ({type(value).__name__})"
        raise ArchError(
            f"label {self.label!r}: value {value!r} {what}; valid values are {self.describe()}",
            self.label,
        )

    def _validate_input(self, value: Any) -> list[int]:
        bad = ArchError(
            f"label {self.label!r}: value {value!r} is not valid; expected {self.describe()}",
            self.label,
        )
        if not isinstance(value, (list, tuple)) or not all(type(v) is int for v in value):
            raise bad
        if len(value) != self.n_chosen or len(set(value)) != len(value):
            raise bad
        if any(v not in self.candidates for v in value):
            raise bad
        return sorted(value)

    def to_json(self) -> dict[str, Any]:
        """JSON form, as `subnet-export space --json` prints it."""
        out: dict[str, Any] = {"kind": self.kind, "candidates": list(self.candidates)}
        if self.n_chosen is not None:
            out["n_chosen"] = self.n_chosen
        out["size"] = self.size
        return out
