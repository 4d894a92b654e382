"""A model's input signature as the user states it: names, shapes, dtypes, value ranges, axes.

The CLI's ``--input NAME:SHAPE[:DTYPE][:LOW..HIGH]``, ``--input-shape`` and ``--dynamic-axes
NAME:AXIS=DIM`` all parse into :class:`InputSpec`; a factory can declare the same with an
``input_specs`` attribute (specs or strings of that syntax). Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .errors import InputError

__all__ = ["DTYPES", "InputSpec", "apply_dynamic_axes", "as_specs", "choose_batch",
           "parse_dynamic_axes", "parse_input", "parse_shape", "resolve_names"]

#: dtype name -> bytes per element, the dtypes an input may take.
DTYPES: dict[str, int] = {"float32": 4, "float64": 8, "float16": 2, "int64": 8, "int32": 4,
                          "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
_INTEGER = {"int64", "int32", "int16", "int8", "uint8"}
_SHAPE = re.compile(r"^\d+(x\d+)*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_RANGE = re.compile(r"^(-?[0-9.eE+\-]+)\.\.(-?[0-9.eE+\-]+)$")
_AXIS = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\-]*):(\d+)=([A-Za-z_][A-Za-z0-9_]*)$")
SYNTAX = "NAME:SHAPE[:DTYPE][:LOW..HIGH], e.g. ids:1x128:int64:0..30522 or image:1x3x224x224"


@dataclass(frozen=True)
class InputSpec:
    """One model input.

    Attributes:
        shape: batch first; the batch size is the one validated besides batch 1.
        name: the graph input name (None: the exporter's default, ``input`` / ``input_k``).
        dtype: one of :data:`DTYPES`.
        low, high: the values random inputs are drawn from: uniform in ``[low, high)``
            (integers ``low..high-1``). None: standard normal for floats, ``0..1`` for integers.
        dynamic: ``{axis: dim name}`` of axes besides the batch that stay symbolic in the graph.
    """

    shape: tuple[int, ...]
    name: str | None = None
    dtype: str = "float32"
    low: float | None = None
    high: float | None = None
    dynamic: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InputError(f"input {self.label!r}: dtype {self.dtype!r} is not one of "
                             f"{', '.join(DTYPES)}")
        if (self.low is None) != (self.high is None):
            raise InputError(f"input {self.label!r}: give both ends of the range, LOW..HIGH")
        if self.low is not None and self.dtype == "bool":
            raise InputError(f"input {self.label!r}: a bool input takes no value range")
        if self.low is not None and not self.low < self.high:
            raise InputError(f"input {self.label!r}: range {self.low:g}..{self.high:g} is "
                             "empty; LOW must be below HIGH (HIGH is excluded)")
        if self.is_integer and self.low is not None and not (
                float(self.low).is_integer() and float(self.high).is_integer()):
            raise InputError(f"input {self.label!r}: an integer input takes an integer range")
        for axis in self.dynamic:
            if not 1 <= axis < len(self.shape):
                raise InputError(
                    f"--dynamic-axes {self.label}:{axis}: input {self.label!r} has axes "
                    f"0..{len(self.shape) - 1} (shape {self.shape_text}) and axis 0 is the "
                    "batch, dynamic already")

    @property
    def label(self) -> str:
        """The name, or the shape when the input has none."""
        return self.name or self.shape_text

    @property
    def shape_text(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def is_integer(self) -> bool:
        return self.dtype in _INTEGER

    @property
    def batch(self) -> int:
        return self.shape[0] if self.shape else 1

    def nbytes(self, batch: int | None = None) -> int:
        """Bytes of one tensor of this input at ``batch`` (default: its own batch)."""
        rest = math.prod(self.shape[1:]) if self.shape else 1
        return rest * (self.batch if batch is None else batch) * DTYPES[self.dtype]

    def to_json(self) -> dict:
        """The JSON record of this input (manifest, ``--json``)."""
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.low is not None:
            out["range"] = [self.low, self.high]
        if self.dynamic:
            out["dynamic_axes"] = {str(k): v for k, v in sorted(self.dynamic.items())}
        return out


def parse_shape(text: str, what: str = "input shape") -> tuple[int, ...]:
    """Parse ``1x3x224x224`` into a shape tuple.

    Raises:
        InputError: not positive integers joined by ``x``.
    """
    text = text.strip()
    if not _SHAPE.match(text) or any(int(d) <= 0 for d in text.split("x")):
        raise InputError(f"{what} {text!r} is not valid; write positive sizes joined by 'x', "
                         "e.g. 1x3x224x224")
    return tuple(int(d) for d in text.split("x"))


def parse_input(text: str) -> InputSpec:
    """Parse one ``--input``: ``NAME:SHAPE[:DTYPE][:LOW..HIGH]`` (NAME may be left out).

    Raises:
        InputError: the text does not follow the syntax; the message shows it.
    """
    fields = text.strip().split(":")
    name = None
    if fields and not _SHAPE.match(fields[0]):
        name = fields.pop(0)
        if not _NAME.match(name):
            raise InputError(f"--input {text!r}: {name!r} is not an input name; write {SYNTAX}")
    if not fields or not fields[0]:
        raise InputError(f"--input {text!r} has no shape; write {SYNTAX}")
    shape = parse_shape(fields.pop(0), f"--input {text!r}: shape")
    dtype, low, high = "float32", None, None
    for part in fields:
        m = _RANGE.match(part)
        if m and low is None:
            try:
                low, high = float(m.group(1)), float(m.group(2))
            except ValueError:
                m = None
        if m:
            continue
        if part in DTYPES and dtype == "float32" and low is None:
            dtype = part
            continue
        raise InputError(f"--input {text!r}: cannot read {part!r} (a dtype among "
                         f"{', '.join(DTYPES)}, or a range LOW..HIGH); write {SYNTAX}")
    return InputSpec(shape, name, dtype, low, high)


def parse_dynamic_axes(texts: Iterable[str]) -> dict[str, dict[int, str]]:
    """Parse ``--dynamic-axes`` values ``NAME:AXIS=DIM`` (comma-separated or repeated).

    Raises:
        InputError: malformed, or one axis given two names.
    """
    out: dict[str, dict[int, str]] = {}
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = _AXIS.match(part)
            if not m:
                raise InputError(f"--dynamic-axes {part!r} is not valid; write NAME:AXIS=DIM, "
                                 "e.g. ids:1=seq (axis 0, the batch, is dynamic already)")
            name, axis, dim = m.group(1), int(m.group(2)), m.group(3)
            if out.setdefault(name, {}).get(axis, dim) != dim:
                raise InputError(f"--dynamic-axes: axis {axis} of {name!r} is named twice")
            out[name][axis] = dim
    return out


def resolve_names(specs: Sequence[InputSpec]) -> tuple[str, ...]:
    """The graph input names: each spec's own, else ``input`` / ``input_k`` by position.

    Raises:
        InputError: two inputs with one name.
    """
    defaults = ("input",) if len(specs) == 1 else tuple(f"input_{k}" for k in range(len(specs)))
    names = tuple(s.name or d for s, d in zip(specs, defaults))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"two inputs are named {dup[0]!r}; give each --input its own name")
    return names


def apply_dynamic_axes(specs: Sequence[InputSpec],
                       axes: Mapping[str, Mapping[int, int | str]]) -> list[InputSpec]:
    """``specs`` with the dynamic axes of ``axes`` (keyed by graph input name) set.

    Raises:
        InputError: a name that is no input, or an axis out of range.
    """
    names = resolve_names(specs)
    unknown = sorted(set(axes) - set(names))
    if unknown:
        raise InputError(f"--dynamic-axes names {unknown[0]!r}, which is not an input; the "
                         f"inputs are {', '.join(names)}")
    return [replace(s, dynamic={**s.dynamic, **{int(k): str(v) for k, v in
                                                 axes.get(n, {}).items()}})
            for s, n in zip(specs, names)]


def as_specs(inputs: Sequence[InputSpec | str | Sequence[int]]) -> list[InputSpec]:
    """Specs from specs, ``--input`` strings or bare shapes (float32)."""
    out = []
    for item in inputs:
        if isinstance(item, InputSpec):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse_input(item))
        else:
            out.append(InputSpec(tuple(int(d) for d in item)))
    return out


def choose_batch(specs: Sequence[InputSpec], batch: int | None, default: int = 8) -> int:
    """The larger batch size validated besides 1: ``batch``, else the inputs' own, else 8.

    Raises:
        InputError: the inputs disagree on their batch, or ``batch`` contradicts them.
    """
    own = sorted({s.batch for s in specs if s.batch != 1})
    if len(own) > 1:
        raise InputError(f"the inputs have different batch sizes {own}; give them one batch "
                         "size (the first dimension)")
    if batch is not None and batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if own and batch is not None and batch != own[0]:
        raise InputError(f"--batch {batch} contradicts the input shapes' batch {own[0]}; give "
                         "one of them (the shapes' first dimension is a batch size)")
    return batch if batch is not None else own[0] if own else default
