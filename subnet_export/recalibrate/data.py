"""Calibration inputs for ``recalibrate_bn``: reading, checking, subsampling, batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..npz import load_npz, pick_inputs

__all__ = ["Batches", "select", "split", "to_tensors"]

Batches = list[tuple[torch.Tensor, ...]]


def to_tensors(data: Any) -> list[torch.Tensor]:
    """One CPU tensor per model input from an array, a sequence of arrays or an .npz path.

    Raises:
        InputError: no samples, NaN/Inf, inputs disagreeing on N, or an unreadable file.
    """
    if isinstance(data, (str, Path)):
        data = pick_inputs(load_npz(data, "calibration data"), "calibration data")
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    if not items:
        raise InputError("calibration data is an empty sequence; pass one array per model input")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (torch.Tensor, np.ndarray)):
            raise InputError(
                f"calibration input {i} is a {type(item).__name__}; pass a tensor, a numpy "
                "array, a list of them (one per model input) or an .npz path")
        try:
            t = torch.as_tensor(item).detach().cpu()
        except (TypeError, RuntimeError) as err:
            raise InputError(f"calibration input {i} cannot become a tensor: {err}") from err
        if t.dim() == 0 or t.shape[0] == 0:
            raise InputError(
                f"calibration input {i} has shape {tuple(t.shape)}: no samples; pass a batch-first "
                "array (N, ...) with N >= 1")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(f"calibration input {i} holds NaN or infinite values")
        out.append(t)
    sizes = {t.shape[0] for t in out}
    if len(sizes) > 1:
        raise InputError(
            f"calibration inputs disagree on the number of samples: "
            f"{[tuple(t.shape) for t in out]}; every input needs the same first dimension")
    return out


def select(inputs: list[torch.Tensor], num_samples: int | None,
           seed: int) -> list[torch.Tensor]:
    """The samples in a seeded random order, the first ``num_samples`` of them (None: all)."""
    n = inputs[0].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if num_samples is not None:
        order = order[:num_samples]
    return [t[order] for t in inputs]


def split(inputs: list[torch.Tensor], batch_size: int, merge_single: bool) -> Batches:
    """Consecutive batches of ``batch_size`` (a last batch of one merged when asked)."""
    n = inputs[0].shape[0]
    bounds = list(range(0, n, batch_size)) + [n]
    if merge_single and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        # Batch statistics of one sample are degenerate; fold it into the previous batch.
        del bounds[-2]
    return [tuple(t[a:b] for t in inputs) for a, b in zip(bounds, bounds[1:])]
