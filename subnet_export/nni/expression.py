"""NNI 2.x's value-choice expressions (``ValueChoiceX``), as ``ChoiceExpr`` of our choices.

Every operator of NNI 2.10's ``ValueChoiceX`` (comparisons, bitwise, ``**``, ``divmod``,
``abs``, ``round``, ``math.floor``, ``vc[0]``), its helpers (``max``, ``min``, ``condition``,
``to_int``, ``to_float``) and its API (``inner_choices``, ``all_options``, ``dry_run``,
``evaluate`` with a dict or, as NNI, a list of values in ``inner_choices`` order). An expression
is dry-run when built, as NNI's, so an expression its candidates cannot compute fails there.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ArchError, SearchSpaceError
from ..space.choice import Choice, ChoiceExpr, is_choice, leaves

__all__ = ["ValueChoiceX", "positional"]


def _op(fn: Callable[..., Any], template: str) -> Callable[..., ValueChoiceX]:
    def method(self: Any, other: Any) -> ValueChoiceX:
        return ValueChoiceX(fn, template, [self, other])
    return method


def _rop(fn: Callable[..., Any], template: str) -> Callable[..., ValueChoiceX]:
    def method(self: Any, other: Any) -> ValueChoiceX:
        return ValueChoiceX(fn, template, [other, self])
    return method


def _unary(fn: Callable[..., Any], template: str) -> Callable[..., ValueChoiceX]:
    def method(self: Any) -> ValueChoiceX:
        return ValueChoiceX(fn, template, [self])
    return method


class ValueChoiceX(ChoiceExpr):
    """An expression over value choices (NNI's ``ValueChoiceX``), built by operators on them.

    Args:
        function: computes the value from the evaluated ``arguments``.
        repr_template: ``str.format`` template of the repr, one ``{}`` per argument.
        arguments: the operands; at least one is a choice.
        dry_run: evaluate once under every label's first candidate, as NNI does.

    Raises:
        SearchSpaceError: no argument is a choice, or the dry run fails (the expression cannot
            be computed from its candidates).
    """

    def __init__(self, function: Callable[..., Any], repr_template: str,
                 arguments: Sequence[Any], dry_run: bool = True) -> None:
        if not any(is_choice(a) for a in arguments):
            raise SearchSpaceError(f"{repr_template.format(*arguments)} has no choice in it")
        super().__init__(function, arguments)
        self.function, self.repr_template, self.arguments = function, repr_template, list(arguments)
        if dry_run:
            try:
                self.dry_run()
            except SearchSpaceError:
                raise
            except Exception as err:
                raise SearchSpaceError(
                    f"the expression {self!r} fails under its first candidates "
                    f"({type(err).__name__}: {err}); it must hold for every candidate") from err

    def inner_choices(self) -> Iterator[Choice]:
        """Every leaf choice, in order, repeated where it appears more than once (NNI's)."""
        yield from _inner(self)

    def dry_run(self) -> Any:
        """The value under every label's first candidate."""
        return self.evaluate({lb: c.candidates[0] for lb, c in leaves(self).items()})

    def all_options(self) -> Iterator[Any]:
        """The value under every combination of the leaf labels' candidates (NNI's order)."""
        found = leaves(self)
        for combo in itertools.product(*(c.candidates for c in found.values())):
            yield self.evaluate(dict(zip(found, combo)))

    def evaluate(self, values: Mapping[str, Any] | Iterable[Any]) -> Any:
        """The value under ``{label: value}``, or (NNI's form) the values of ``inner_choices``."""
        if isinstance(values, Mapping):
            return super().evaluate(values)
        it = iter(values)
        return positional(self, it)

    def __repr__(self) -> str:
        reprs = [f"({a!r})" if isinstance(a, ChoiceExpr) and not isinstance(a, Choice)
                 else repr(a) for a in self.arguments]
        if self.repr_template.count("{}") == 1 and len(reprs) > 1:
            return self.repr_template.format(", ".join(reprs))
        return self.repr_template.format(*reprs)

    # -- helpers NNI offers as static methods --------------------------------------------------
    @staticmethod
    def to_int(obj: Any) -> Any:
        """``int(obj)``, lazily when ``obj`` is a choice."""
        return ValueChoiceX(int, "int({})", [obj]) if is_choice(obj) else int(obj)

    @staticmethod
    def to_float(obj: Any) -> Any:
        """``float(obj)``, lazily when ``obj`` is a choice."""
        return ValueChoiceX(float, "float({})", [obj]) if is_choice(obj) else float(obj)

    @staticmethod
    def condition(pred: Any, true: Any, false: Any) -> Any:
        """``true if pred else false``, lazily when any of them is a choice."""
        if any(is_choice(x) for x in (pred, true, false)):
            return ValueChoiceX(lambda t, c, f: t if c else f, "{} if {} else {}",
                                [true, pred, false])
        return true if pred else false

    @staticmethod
    def max(arg0: Any, *args: Any) -> Any:
        """The largest of an iterable or of two or more values, lazily over choices."""
        return _extreme(max, "max", arg0, args)

    @staticmethod
    def min(arg0: Any, *args: Any) -> Any:
        """The smallest of an iterable or of two or more values, lazily over choices."""
        return _extreme(min, "min", arg0, args)

    # -- operators (NNI's list) ----------------------------------------------------------------
    __neg__ = _unary(operator.neg, "-{}")
    __pos__ = _unary(operator.pos, "+{}")
    __invert__ = _unary(operator.invert, "~{}")
    __abs__ = _unary(abs, "abs({})")
    __floor__ = _unary(math.floor, "math.floor({})")
    __ceil__ = _unary(math.ceil, "math.ceil({})")
    __getitem__ = _op(lambda x, y: x[y], "{}[{}]")
    __divmod__, __rdivmod__ = _op(divmod, "divmod({}, {})"), _rop(divmod, "divmod({}, {})")
    def __pow__(self, other: Any, modulo: Any = None) -> ValueChoiceX:
        if modulo is not None:
            return ValueChoiceX(pow, "pow({}, {}, {})", [self, other, modulo])
        return ValueChoiceX(lambda a, b: a ** b, "{} ** {}", [self, other])

    def __rpow__(self, other: Any, modulo: Any = None) -> ValueChoiceX:
        if modulo is not None:
            return ValueChoiceX(pow, "pow({}, {}, {})", [other, self, modulo])
        return ValueChoiceX(lambda a, b: a ** b, "{} ** {}", [other, self])

    def __round__(self, ndigits: Any = None) -> ValueChoiceX:
        if ndigits is not None:
            return ValueChoiceX(round, "round({}, {})", [self, ndigits])
        return ValueChoiceX(round, "round({})", [self])

    def __trunc__(self) -> Any:
        raise TypeError("math.trunc() of a ValueChoice: use ValueChoice.to_int() instead")

    def __index__(self) -> Any:
        raise TypeError("a ValueChoice is no int until an arch is chosen (no range(), int() "
                        "or indexing with it); use ValueChoice.to_int() or nn.Repeat")

    def __iter__(self) -> Any:
        raise TypeError("a ValueChoice cannot be iterated; index it (vc[0]) instead")

    __hash__ = ChoiceExpr.__hash__


for _name, _fn, _sym in [
    ("add", operator.add, "+"), ("sub", operator.sub, "-"), ("mul", operator.mul, "*"),
    ("matmul", operator.matmul, "@"), ("truediv", operator.truediv, "/"),
    ("floordiv", operator.floordiv, "//"), ("mod", operator.mod, "%"),
    ("lshift", operator.lshift, "<<"), ("rshift", operator.rshift, ">>"),
    ("and", operator.and_, "&"), ("xor", operator.xor, "^"), ("or", operator.or_, "|"),
]:
    setattr(ValueChoiceX, f"__{_name}__", _op(_fn, f"{{}} {_sym} {{}}"))
    setattr(ValueChoiceX, f"__r{_name}__", _rop(_fn, f"{{}} {_sym} {{}}"))
for _name, _fn, _sym in [("lt", operator.lt, "<"), ("le", operator.le, "<="),
                         ("eq", operator.eq, "=="), ("ne", operator.ne, "!="),
                         ("ge", operator.ge, ">="), ("gt", operator.gt, ">")]:
    setattr(ValueChoiceX, f"__{_name}__", _op(_fn, f"{{}} {_sym} {{}}"))
del _name, _fn, _sym


def _inner(value: Any) -> Iterator[Choice]:
    if isinstance(value, Choice):
        yield value
    elif isinstance(value, ChoiceExpr):
        for a in value.args:
            yield from _inner(a)
    elif isinstance(value, (list, tuple)):
        for a in value:
            yield from _inner(a)


def positional(value: Any, it: Iterator[Any]) -> Any:
    """``value`` evaluated from ``it``, one value per leaf occurrence (NNI's ``evaluate``)."""
    if isinstance(value, Choice):
        chosen = next(it, positional)
        if chosen is positional:
            raise ArchError(f"too few values to evaluate {value!r}", value.label)
        if chosen not in value.candidates:
            raise ArchError(f"value {chosen!r} does not belong to the candidates of {value!r}",
                            value.label)
        return chosen
    if isinstance(value, ChoiceExpr):
        return value.fn(*(positional(a, it) for a in value.args))
    if isinstance(value, (list, tuple)):
        return type(value)(positional(v, it) for v in value)
    return value


def _extreme(fn: Callable[..., Any], name: str, arg0: Any, args: tuple[Any, ...]) -> Any:
    if args:
        items = [arg0, *args]
    elif is_choice(arg0) or not isinstance(arg0, Iterable):
        raise TypeError(f"Expect more than one items to compare {name}")
    else:
        items = list(arg0)
        return _extreme(fn, name, items[0], tuple(items[1:])) if items else fn(items)
    if any(is_choice(x) for x in items):
        return ValueChoiceX(fn, f"{name}({{}})", items)
    return fn(items)

