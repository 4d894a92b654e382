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

__all__ = ["InputSet", "make_inputs"]


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
) -> list[InputSet]:
    """Seeded random inputs shaped like the examples at each batch size, plus user samples.

    Float inputs are standard normal; integer inputs are uniform in ``[0, max(example)]`` (token
    ids stay in range); bool inputs are fair coins. Dimension 0 is the batch.

    Args:
        example_inputs: one tensor or a sequence, batch first.
        batch_sizes: the batch sizes to generate.
        seed: seed of a private generator, so the global RNG is untouched.
        samples: an ``.npz`` file or a mapping of arrays; keys are the graph input names, else
            taken in file order.
        input_names: graph input names, to match sample keys.

    Returns:
        One :class:`InputSet` per batch size, then ``samples`` when given.

    Raises:
        InputError: the samples cannot be read or do not fit the example inputs.
    """
    examples = ((example_inputs,) if isinstance(example_inputs, torch.Tensor)
                else tuple(example_inputs))
    gen = torch.Generator().manual_seed(seed)
    sets = []
    for b in batch_sizes:
        tensors = tuple(_random_like(t, b, gen) for t in examples)
        sets.append(InputSet(f"random-b{b}", tensors, "random", seed))
    if samples is not None:
        sets.append(InputSet("samples", _load_samples(samples, examples, input_names),
                             str(samples) if isinstance(samples, (str, Path)) else "samples"))
    return sets


def _random_like(example: torch.Tensor, batch: int, gen: torch.Generator) -> torch.Tensor:
    shape = (batch, *example.shape[1:]) if example.ndim else ()
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
