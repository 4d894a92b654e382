"""Tracing a plain model with torch.onnx, quietly: the dynamo exporter or the TorchScript one."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["trace"]


def trace(plain: nn.Module, inputs: tuple[torch.Tensor, ...], raw: Path, exporter: str,
          opset: int | None, dynamic_batch: bool, in_names: tuple[str, ...],
          out_names: tuple[str, ...]) -> None:
    """Write the raw export of ``plain`` on ``inputs`` to ``raw`` (weights in a data file)."""
    kwargs: dict[str, Any] = {"input_names": list(in_names), "output_names": list(out_names)}
    if opset is not None:
        kwargs["opset_version"] = opset
    # no torch.no_grad() here: under it nn.MultiheadAttention takes a fused fast path that the
    # TorchScript exporter cannot translate
    with warnings.catch_warnings(), contextlib.redirect_stdout(None), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            if dynamic_batch:
                kwargs["dynamic_axes"] = {n: {0: "batch"} for n in (*in_names, *out_names)}
            torch.onnx.export(plain, inputs, str(raw), dynamo=False, do_constant_folding=False,
                              **kwargs)
            return
        if dynamic_batch:
            # torch.export specialises a size-1 dimension; trace at batch 2 so it stays symbolic
            inputs = tuple(t.expand(2, *t.shape[1:]).contiguous() if t.ndim and t.shape[0] == 1
                           else t for t in inputs)
            batch = torch.export.Dim("batch")
            kwargs["dynamic_shapes"] = tuple({0: batch} if t.ndim else None for t in inputs)
        program = torch.onnx.export(plain, inputs, dynamo=True, optimize=False, verbose=False,
                                    **kwargs)
        program.save(str(raw), external_data=True)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    # torch.onnx logs a warning per missing optional package (torchvision ops) on every export
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
