"""Input sets for parity checks: seeded random tensors at several batch sizes, user samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..npz import load_npz, pick_inputs
from ..signature import InputSpec

__all__ = ["InputSet", "example_inputs_for", "make_inputs", "other_size", "random_tensor"]


@dataclass(frozen=True)
class InputSet:
    """One set of model inputs: a label (``random-b8``), the tensors, and how they were made."""

    label: str
    tensors: tuple[torch.Tensor, ...]
    source: str
    seed: int | None = None

    def describe(self) -> dict[str, Any]:
        """The JSON record of this set in a :class:`ParityReport`."""
        return {"label": self.label, "source": self.source, "seed": self.seed,
                "shapes": [list(t.shape) for t in self.tensors],
                "dtypes": [str(t.dtype).removeprefix("torch.") for t in self.tensors]}


def make_inputs(
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    seed: int = 0,
    samples: str | Path | Mapping[str, np.ndarray] | None = None,
    input_names: Sequence[str] | None = None,
    specs: Sequence[InputSpec] | None = None,
) -> list[InputSet]:
    """Seeded random inputs shaped like the examples at each batch size, plus user samples.

    Float inputs are standard normal; integer inputs are uniform in ``[0, max(example)]`` (token
    ids stay in range); bool inputs are fair coins. Dimension 0 is the batch. With ``specs``,
    each input's values come from its range (``InputSpec.low..high``), and every dynamic axis
    besides the batch is checked at a second size too (:func:`other_size`): one more set,
    ``random-b1-<dim><size>``.

    Args:
        example_inputs: one tensor or a sequence, batch first.
        batch_sizes: the batch sizes to generate.
        seed: seed of a private generator, so the global RNG is untouched.
        samples: an ``.npz`` file or a mapping of arrays; keys are the graph input names, else
            taken in file order.
        input_names: graph input names, to match sample keys.
        specs: one :class:`InputSpec` per input: value ranges and dynamic axes.

    Returns:
        One :class:`InputSet` per batch size, one per other size of the dynamic axes, then
        ``samples`` when given.

    Raises:
        InputError: the samples cannot be read or do not fit the example inputs.
    """
    examples = ((example_inputs,) if isinstance(example_inputs, torch.Tensor)
                else tuple(example_inputs))
    gen = torch.Generator().manual_seed(seed)
    ranges = [(s.low, s.high) for s in specs] if specs else [None] * len(examples)
    sets = []
    for b in batch_sizes:
        tensors = tuple(_random_like(t, b, gen, r) for t, r in zip(examples, ranges))
        sets.append(InputSet(f"random-b{b}", tensors, "random", seed))
    for label, shapes in _other_sizes(specs or ()):
        tensors = tuple(random_tensor(shape, t.dtype, gen, r)
                        for shape, t, r in zip(shapes, examples, ranges))
        sets.append(InputSet(label, tensors, "random", seed))
    if samples is not None:
        sets.append(InputSet("samples", _load_samples(samples, examples, input_names),
                             str(samples) if isinstance(samples, (str, Path)) else "samples"))
    return sets


def example_inputs_for(specs: Sequence[InputSpec], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Batch-1 example tensors of ``specs`` (seeded, values in each input's range)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(random_tensor((1, *s.shape[1:]), getattr(torch, s.dtype), gen,
                               (s.low, s.high)) for s in specs)


def other_size(size: int) -> int:
    """The second size a dynamic axis is validated at: half of it, or double when below 4.

    Smaller first: a model often bounds an axis by its example size (positional embeddings).
    """
    return size // 2 if size >= 4 else size * 2


def _other_sizes(specs: Sequence[InputSpec]) -> list[tuple[str, list[tuple[int, ...]]]]:
    # one set per symbolic dim name, every input axis of that name at the other size
    dims: dict[str, int] = {}
    for spec in specs:
        for axis, dim in sorted(spec.dynamic.items()):
            dims.setdefault(dim, other_size(spec.shape[axis]))
    out = []
    for dim, size in dims.items():
        shapes = [tuple(size if spec.dynamic.get(a) == dim else (1 if a == 0 else d)
                        for a, d in enumerate(spec.shape)) for spec in specs]
        out.append((f"random-b1-{dim}{size}", shapes))
    return out


def random_tensor(shape: Sequence[int], dtype: torch.dtype, gen: torch.Generator,
                  value_range: tuple[float | None, float | None] | None = None) -> torch.Tensor:
    """Seeded random values of one input.

    Floats are standard normal, or uniform in the range; integers uniform in ``[low, high)``
    (default ``0..1``); bools fair coins.
    """
    low, high = value_range or (None, None)
    shape = tuple(shape)
    if dtype.is_floating_point:
        if low is None:
            return torch.randn(shape, generator=gen).to(dtype)
        return (low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)
                ).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    lo, hi = (0, 2) if low is None else (int(low), int(high))
    return torch.randint(lo, hi, shape, generator=gen).to(dtype)


def _random_like(example: torch.Tensor, batch: int, gen: torch.Generator,
                 value_range: tuple[float | None, float | None] | None = None) -> torch.Tensor:
    shape = (batch, *example.shape[1:]) if example.ndim else ()
    if value_range is not None and value_range[0] is not None:
        return random_tensor(shape, example.dtype, gen, value_range)
    if example.dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(example.dtype)
    if example.dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    high = int(example.max()) + 1 if example.numel() else 2
    return torch.randint(0, max(high, 1), shape, generator=gen).to(example.dtype)


def _load_samples(samples: str | Path | Mapping[str, np.ndarray],
                  examples: tuple[torch.Tensor, ...],
                  input_names: Sequence[str] | None) -> tuple[torch.Tensor, ...]:
    data = load_npz(samples, "samples") if isinstance(samples, (str, Path)) else dict(samples)
    arrays = pick_inputs(data, "samples", names=input_names, count=len(examples))
    out = []
    for k, (arr, ex) in enumerate(zip(arrays, examples)):
        arr = np.asarray(arr)
        if arr.ndim != ex.ndim or tuple(arr.shape[1:]) != tuple(ex.shape[1:]):
            raise InputError(f"samples: input {k} has shape {list(arr.shape)}, the model takes "
                             f"[batch, {', '.join(map(str, ex.shape[1:]))}]")
        out.append(torch.from_numpy(arr).to(ex.dtype))
    return tuple(out)
