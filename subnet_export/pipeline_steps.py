"""The steps :func:`~subnet_export.pipeline.export_subnet` runs around its stages.

Stage timing and warnings, the input and memory checks, BatchNorm recalibration under the arch,
the parameter counts, and the samples a bundle keeps. The stage order itself stays in
``pipeline.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .arch import fixed_arch, freeze
from .bundle.samples import sample_key
from .errors import InputError
from .parity.report import ParityReport
from .parity.rule import Tolerance
from .preflight import check_batch_memory, probe
from .recalibrate.bn import CalibrationInfo, recalibrate_bn
from .signature import InputSpec, apply_dynamic_axes, as_specs

__all__ = ["RunLog", "bundle_samples", "freeze_and_probe", "input_specs", "nonfinite_tensors",
           "parameter_counts", "recalibrate", "samples_tolerance"]


class RunLog:
    """Stage timing, progress and warnings of one :func:`export_subnet` call."""

    def __init__(self, progress: Callable[[str, str], None] | None,
                 warn: Callable[[str], None] | None) -> None:
        self.note = progress or (lambda stage, state: None)
        self.warn = warn or (lambda message: None)
        self.timings: dict[str, float] = {}
        self.nonfinite: list[str] = []

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        self.note(name, "start")
        start = time.perf_counter()
        value = fn()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.note(name, "done")
        return value

    def warn_unused(self, unused: Sequence[str]) -> None:
        if unused:
            self.warn(f"{len(unused)} tensor(s) of the subnet are never read by the exported "
                      f"graph (a dead branch of this arch): {', '.join(unused[:5])}")

    def check_finite(self, plain: nn.Module) -> None:
        self.nonfinite = nonfinite_tensors(plain)
        if self.nonfinite:
            self.warn(f"the subnet's weights hold NaN or Inf in {len(self.nonfinite)} "
                      f"tensor(s): {', '.join(self.nonfinite[:5])}; parity will fail")


def input_specs(input_shapes: Sequence[Sequence[int]] | None,
                inputs: Sequence[InputSpec | str | Sequence[int]] | None,
                dynamic_axes: Mapping[str, Mapping[int, str]] | None) -> list[InputSpec]:
    """The run's input specs from ``input_shapes`` or ``inputs``, dynamic axes applied."""
    if (input_shapes is None) == (inputs is None):
        raise InputError("give the model's inputs once: input_shapes or inputs")
    specs = as_specs(inputs if inputs is not None else input_shapes or ())
    if not specs:
        raise InputError("the model needs at least one input; pass --input-shape or --input")
    return apply_dynamic_axes(specs, dynamic_axes or {})


def freeze_and_probe(supernet: nn.Module, arch: Mapping[str, Any] | None,
                     examples: tuple[torch.Tensor, ...], specs: Sequence[InputSpec],
                     batch: int) -> Any:
    """Freeze ``arch``, run the supernet path once on the examples, check the batch fits memory."""
    frozen = freeze(supernet, arch)
    per_sample = probe(supernet, frozen, examples, specs)
    check_batch_memory(per_sample, specs, batch)
    return frozen


def recalibrate(supernet: nn.Module, frozen: Any, calib_data: Any, calib_batch: int,
                calib_samples: int | None, seed: int) -> CalibrationInfo:
    """Re-estimate the BatchNorm statistics of the arch's path on ``calib_data``."""
    with fixed_arch(supernet, frozen):
        return recalibrate_bn(supernet, calib_data, batch_size=calib_batch,
                              num_samples=calib_samples, seed=seed)


def samples_tolerance(report: ParityReport, tolerance: Tolerance | None) -> dict[str, Any]:
    """The manifest's samples tolerance when no float64 oracle ran (else nothing to add)."""
    if report.oracle_ran:
        return {}
    # no float64 oracle to judge the samples by: only an elementwise rule can apply
    atol, rtol = (tolerance or Tolerance()).bound
    return {"tolerance": {"atol": atol, "rtol": rtol, "noise_factor": None}}


def parameter_counts(plain: nn.Module, unused: Sequence[str]) -> tuple[int, int]:
    """(parameters the exported graph reads, parameters it never reads) of ``plain``.

    Shared parameters count once; buffers (BatchNorm statistics) are not parameters.
    """
    skip = set(unused)
    read = dead = 0
    for name, p in plain.named_parameters():
        if name in skip:
            dead += p.numel()
        else:
            read += p.numel()
    return read, dead


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers holding NaN or Inf."""
    return [name for name, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def bundle_samples(report: ParityReport, exported: Any) -> dict[str, np.ndarray]:
    """The arrays of ``samples.npz``: inputs, supernet-path outputs and oracles per case."""
    # The bundle's samples: the seeded random input sets validation ran, what the supernet path
    # computed for them and its float64 oracle, so the edge side judges its runtime against the
    # supernet itself by the same noise rule.
    arrays: dict[str, np.ndarray] = {}
    randoms = [a for a in report.arrays if a.label.startswith("random-")]
    for case, sample in enumerate(randoms):
        for name, array in zip(exported.input_names, sample.inputs):
            arrays[sample_key("input", name, case)] = array
        for kind, outputs in (("output", sample.reference), ("oracle", sample.oracle or [])):
            for name, array in zip(exported.output_names, outputs):
                arrays[sample_key(kind, name, case)] = array
    return arrays
