"""Checks made before any work: the inputs fit in memory and the model runs on them.

A run that cannot succeed should say so in a second, not after minutes of export and
validation: a shape of the wrong rank, a batch that cannot fit, a dtype the model refuses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .arch import fixed_arch
from .errors import InputError
from .signature import InputSpec

__all__ = ["available_memory", "check_batch_memory", "check_input_memory", "probe"]

#: Live copies of one input set's activations during validation: the float32 supernet path,
#: its float64 oracle (two float32 copies' worth) and onnxruntime's arena.
_COPIES = 4
_GIB = 2**30


def available_memory() -> int:
    """Bytes of memory this process can still take (``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 2**62  # unknown: do not refuse


def _gib(n: float) -> str:
    return f"{n / _GIB:.1f} GiB" if n >= _GIB / 10 else f"{n / 2**20:.1f} MiB"


def check_input_memory(specs: Sequence[InputSpec], batch: int,
                       available: int | None = None) -> None:
    """Refuse inputs whose tensors alone cannot fit in memory at ``batch``.

    Raises:
        InputError: naming the input, its size and the memory there is.
    """
    available = available_memory() if available is None else available
    for spec in specs:
        for b, what in ((1, f"input {spec.label!r}"), (batch, f"--batch {batch}")):
            need = spec.nbytes(b)
            if need * _COPIES > available:
                raise InputError(
                    f"{what} needs {_gib(need)} per tensor ({spec.shape_text} at batch {b}, "
                    f"{spec.dtype}) and validation keeps several copies; this machine has "
                    f"{_gib(available)} available. Use a smaller shape or --batch")


def probe(supernet: nn.Module, arch: Mapping[str, Any], examples: Sequence[torch.Tensor],
          specs: Sequence[InputSpec]) -> int:
    """Run the supernet path once on the batch-1 examples; return its activation bytes.

    The bytes are the sum over modules of their output tensors: an upper bound on what one
    sample keeps alive in a forward pass.

    Raises:
        InputError: the model fails on these inputs (wrong rank, size or dtype): the message
            names the inputs given and the model's own error.
    """
    total = [0]

    def count(_m: nn.Module, _i: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    hooks = [m.register_forward_hook(count) for m in supernet.modules()
             if not list(m.children())]
    try:
        with torch.no_grad(), fixed_arch(supernet, arch):
            supernet(*examples)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        given = ", ".join(f"{s.label} {s.shape_text} {s.dtype}" for s in specs)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"the model does not run on the inputs given ({given}): {type(err).__name__}: "
            f"{first}. Check --input-shape/--input: one per model input, batch first, the "
            "rank, sizes and dtype the model's forward takes") from err
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def check_batch_memory(per_sample: int, specs: Sequence[InputSpec], batch: int,
                       available: int | None = None) -> None:
    """Refuse a ``batch`` whose validation cannot fit in memory, estimated from a probe.

    Args:
        per_sample: activation bytes of one sample (:func:`probe`).
        specs: the inputs.
        batch: the larger batch size to be checked.
        available: bytes available (default :func:`available_memory`).

    Raises:
        InputError: the estimate exceeds the memory available.
    """
    available = available_memory() if available is None else available
    need = (per_sample + sum(s.nbytes(1) for s in specs)) * batch * _COPIES
    if need > available:
        fits = max(1, available // max(1, (per_sample + sum(s.nbytes(1) for s in specs))
                                        * _COPIES))
        raise InputError(
            f"--batch {batch} needs about {_gib(need)} to validate ({_gib(per_sample)} of "
            f"activations per sample, float32 and float64 runs); this machine has "
            f"{_gib(available)} available. Use --batch {min(fits, batch - 1)} or less")
