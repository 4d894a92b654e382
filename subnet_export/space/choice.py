"""Value choices: a labelled set of candidates, and arithmetic expressions over them.

``Choice([16, 24, 32], label="w")`` is a leaf; ``w * 4``, ``k // 2`` or ``w * e`` are expressions
evaluated from the values of their leaf labels, so that channel counts and paddings follow each
other through a block. One label means one value everywhere it is used.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ArchError, SearchSpaceError

__all__ = ["Choice", "ChoiceExpr", "compose", "evaluate", "is_choice", "leaves", "possible_values"]


class ChoiceExpr:
    """A value computed from one or more :class:`Choice` leaves.

    Built by arithmetic on choices (``w * 4``, ``k // 2``, ``w * e``) or by :func:`compose`.
    """

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any], repr_: str = "") -> None:
        self.fn = fn
        self.args = tuple(args)
        self._repr = repr_ or f"{getattr(fn, '__name__', 'fn')}({', '.join(map(repr, args))})"

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Return the expression's value given ``{label: value}`` for all its leaves."""
        return self.fn(*(evaluate(a, values) for a in self.args))

    def __repr__(self) -> str:
        return self._repr

    # Arithmetic builds expressions; the operator table keeps the dunders one line each.
    def _bin(self, other: Any, op: Callable[[Any, Any], Any], sym: str, rev: bool = False):
        args = (other, self) if rev else (self, other)
        return ChoiceExpr(op, args, f"({args[0]!r} {sym} {args[1]!r})")

    def __add__(self, o): return self._bin(o, operator.add, "+")  # noqa: E704
    def __radd__(self, o): return self._bin(o, operator.add, "+", True)  # noqa: E704
    def __sub__(self, o): return self._bin(o, operator.sub, "-")  # noqa: E704
    def __rsub__(self, o): return self._bin(o, operator.sub, "-", True)  # noqa: E704
    def __mul__(self, o): return self._bin(o, operator.mul, "*")  # noqa: E704
    def __rmul__(self, o): return self._bin(o, operator.mul, "*", True)  # noqa: E704
    def __floordiv__(self, o): return self._bin(o, operator.floordiv, "//")  # noqa: E704
    def __rfloordiv__(self, o): return self._bin(o, operator.floordiv, "//", True)  # noqa: E704
    def __truediv__(self, o): return self._bin(o, operator.truediv, "/")  # noqa: E704
    def __rtruediv__(self, o): return self._bin(o, operator.truediv, "/", True)  # noqa: E704
    def __mod__(self, o): return self._bin(o, operator.mod, "%")  # noqa: E704
    def __rmod__(self, o): return self._bin(o, operator.mod, "%", True)  # noqa: E704
    def __neg__(self): return ChoiceExpr(operator.neg, (self,), f"-{self!r}")  # noqa: E704

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self!r} has no truth value until an architecture is chosen; "
            "use se.compose(fn, ...) for a value that depends on a choice"
        )


class Choice(ChoiceExpr):
    """A labelled choice among candidate values (the leaf of every expression).

    Args:
        candidates: the values this choice may take, at least one, no duplicates; JSON scalars
            or tuples of them (an arch file writes a tuple as a JSON list).
        label: the name of the choice in arch dicts. Every use of a label must have the same
            candidates.
    """

    def __init__(self, candidates: Sequence[Any], label: str) -> None:
        if not isinstance(label, str) or not label:
            raise SearchSpaceError(f"Choice needs a non-empty string label, got {label!r}")
        cands = list(candidates)
        if not cands:
            raise SearchSpaceError(f"Choice {label!r} has no candidates")
        for c in cands:
            if not _is_json_value(c):
                raise SearchSpaceError(
                    f"Choice {label!r}: candidate {c!r} is not a JSON scalar "
                    "(int, float, str, bool) or a tuple of them"
                )
        if len(set(map(_key, cands))) != len(cands):
            raise SearchSpaceError(f"Choice {label!r} has duplicate candidates: {cands}")
        self.candidates = tuple(cands)
        self.label = label
        super().__init__(lambda v: v, (), f"Choice({cands}, label={label!r})")

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Return this choice's value in ``values``; ArchError when it is not there."""
        if self.label not in values:
            raise ArchError(
                f"no value for label {self.label!r}; candidates are {list(self.candidates)}",
                self.label,
            )
        return values[self.label]


def _is_json_value(v: Any) -> bool:
    if isinstance(v, tuple):
        return all(_is_json_value(x) for x in v)
    return isinstance(v, (int, float, str, bool))


def _key(v: Any) -> Any:
    # 1 == True == 1.0 in Python; keep them apart when checking candidates.
    if isinstance(v, tuple):
        return (tuple, tuple(_key(x) for x in v))
    return (type(v), v)


def is_choice(value: Any) -> bool:
    """Whether ``value`` is a choice or an expression over choices."""
    return isinstance(value, ChoiceExpr)


def evaluate(value: Any, values: Mapping[str, Any]) -> Any:
    """Evaluate ``value`` under ``{label: value}``; plain values are returned unchanged.

    Tuples and lists are evaluated element-wise.
    """
    if isinstance(value, ChoiceExpr):
        return value.evaluate(values)
    if isinstance(value, (tuple, list)):
        return type(value)(evaluate(v, values) for v in value)
    return value


def leaves(value: Any) -> dict[str, Choice]:
    """Return ``{label: Choice}`` of every leaf in ``value`` (choices, expressions, sequences).

    Raises:
        SearchSpaceError: one label appears with two different candidate lists.
    """
    found: dict[str, Choice] = {}

    def walk(v: Any) -> None:
        if isinstance(v, Choice):
            prev = found.get(v.label)
            if prev is not None and prev is not v and prev.candidates != v.candidates:
                raise SearchSpaceError(
                    f"label {v.label!r} is used with two candidate lists: "
                    f"{list(prev.candidates)} and {list(v.candidates)}"
                )
            found.setdefault(v.label, v)
        elif isinstance(v, ChoiceExpr):
            for a in v.args:
                walk(a)
        elif isinstance(v, (tuple, list)):
            for a in v:
                walk(a)

    walk(value)
    return found


def assignments(choices: Mapping[str, Choice]) -> Iterator[dict[str, Any]]:
    """Every ``{label: value}`` combination of the given leaves (cartesian product)."""
    labels = sorted(choices)
    for combo in itertools.product(*(choices[lb].candidates for lb in labels)):
        yield dict(zip(labels, combo))


def possible_values(value: Any) -> list[Any]:
    """All values ``value`` can take, sorted where the values allow it (deduplicated)."""
    out = {evaluate(value, a) for a in assignments(leaves(value))}
    try:
        return sorted(out)
    except TypeError:
        return list(out)


def compose(fn: Callable[..., Any], *args: Any) -> ChoiceExpr:
    """An expression whose value is ``fn(*evaluated_args)``: a user function of choices.

    Example: ``se.compose(lambda w, e: make_divisible(w * e, 8), w, e)``.
    """
    return ChoiceExpr(fn, args)
