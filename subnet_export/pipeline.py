"""The whole job in one place: freeze -> materialize -> export -> validate -> bundle.

The stage order lives here and nowhere else; the CLI calls :func:`export_subnet` and prints.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .arch import fixed_arch, freeze
from .bundle.layout import MODEL_NAME
from .bundle.manifest import BundleManifest
from .bundle.samples import sample_key
from .bundle.write import write_bundle
from .errors import InputError
from .export.exporter import export_onnx
from .parity.report import ParityReport
from .parity.rule import Tolerance
from .parity.validate import validate
from .plain.materialize import materialize_with_labels
from .recalibrate.bn import CalibrationInfo, recalibrate_bn

__all__ = ["STAGES", "RunResult", "export_subnet", "nonfinite_tensors"]

STAGES = ("freeze", "recalibrate", "materialize", "export", "validate", "bundle")


@dataclass
class RunResult:
    """What one run produced: the bundle, its arch, parity verdict and stage timings."""

    out_dir: Path
    arch: dict[str, Any]
    report: ParityReport
    manifest: BundleManifest
    parameter_count: int
    timings: dict[str, float] = field(default_factory=dict)
    nonfinite: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every parity check passed, 1 otherwise."""
        return 0 if self.report.passed else 1

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary ``--json`` prints."""
        return {
            "bundle": str(self.out_dir),
            "passed": self.report.passed,
            "exit_code": self.exit_code,
            "arch": self.arch,
            "parameter_count": self.parameter_count,
            "nonfinite_tensors": self.nonfinite,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "parity": self.report.to_dict(),
        }


def export_subnet(
    supernet: nn.Module,
    out_dir: str | Path,
    *,
    input_shapes: Sequence[Sequence[int]],
    arch: Mapping[str, Any] | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    providers: Sequence[str] | None = None,
    tolerance: Tolerance | None = None,
    samples: str | Path | None = None,
    batch: int = 8,
    seed: int = 0,
    force: bool = False,
    checkpoint_sha256: str | None = None,
    calib_data: str | Path | None = None,
    calib_samples: int | None = None,
    calib_batch: int = 32,
    progress: Callable[[str, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> RunResult:
    """Run every stage and write the bundle to ``out_dir``.

    Args:
        supernet: a supernet (``se.to_supernet``), weights loaded.
        out_dir: the bundle directory (written atomically).
        input_shapes: one shape per model input, batch first (the batch size is replaced).
        arch: ``{label: value}``; None uses the supernet's own export.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset (None: torch's default).
        providers: onnxruntime providers to validate on (default: CPU, and CUDA when there).
        tolerance: one tolerance for every backend (None: the noise rule, ``parity/rule.py``).
        samples: an ``.npz`` of user inputs, validated as one more input set.
        batch: the larger batch size checked besides batch 1.
        seed: seed of the random inputs.
        force: replace an existing bundle.
        checkpoint_sha256: sha256 of the weights file, recorded in the model and manifest.
        calib_data: inputs (``.npz`` path or array) to re-estimate the subnet's BatchNorm
            statistics on before materializing. This replaces the supernet's statistics of
            the active channels in place; parity is then checked between the recalibrated
            supernet path and the plain model. The method is recorded in the manifest.
        calib_samples: use this many calibration samples (seeded subsample); None: all.
        calib_batch: batch size of the calibration passes.
        progress: called as ``progress(stage, "start" | "done")``.
        warn: called with a message for problems that do not stop the run (NaN or Inf in
            the subnet's weights: named before export; parity then fails).

    Returns:
        A :class:`RunResult`; its ``exit_code`` is 1 when parity failed (the bundle is still
        written, marked failed).

    Raises:
        SubnetExportError: any stage's user-facing failure (arch, export, input, bundle).
    """
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise InputError(f"{str(out_dir)!r} already exists; pass --force to replace it")
    timings: dict[str, float] = {}
    note = progress or (lambda stage, state: None)

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        note(name, "start")
        start = time.perf_counter()
        value = fn()
        timings[name] = time.perf_counter() - start
        note(name, "done")
        return value

    supernet.eval()
    examples = tuple(torch.randn(1, *tuple(s)[1:]) for s in input_shapes)
    frozen = stage("freeze", lambda: freeze(supernet, arch))
    calibration: CalibrationInfo | None = None
    if calib_data is not None:
        def recalibrate() -> CalibrationInfo:
            with fixed_arch(supernet, frozen):
                return recalibrate_bn(supernet, calib_data, batch_size=calib_batch,
                                      num_samples=calib_samples, seed=seed)

        calibration = stage("recalibrate", recalibrate)
    built = stage("materialize", lambda: materialize_with_labels(supernet, frozen))
    plain = built.model.eval()
    n_params = sum(p.numel() for p in plain.parameters())
    nonfinite = nonfinite_tensors(plain)
    if nonfinite and warn is not None:
        warn(f"the subnet's weights hold NaN or Inf in {len(nonfinite)} tensor(s): "
             f"{', '.join(nonfinite[:5])}; parity will fail")
    with tempfile.TemporaryDirectory(prefix=".subnet-export-") as tmp:
        onnx_path = Path(tmp) / MODEL_NAME
        exported = stage("export", lambda: export_onnx(
            plain, examples, onnx_path, exporter=exporter, opset=opset, arch=frozen,
            checkpoint_sha256=checkpoint_sha256))
        if exported.unused and warn is not None:
            warn(f"{len(exported.unused)} tensor(s) of the subnet are never read by the exported "
                 f"graph (a dead branch of this arch): {', '.join(exported.unused[:5])}")
        report = stage("validate", lambda: validate(
            supernet, frozen, plain, exported, example_inputs=examples,
            batch_sizes=(1, batch) if batch != 1 else (1,), seed=seed, samples=samples,
            tolerances=tolerance, providers=providers,
            module_labels=built.labels))
        arrays = _bundle_samples(report, exported)
        samples_tolerance = {}
        if not report.oracle_ran:
            # no float64 oracle to judge the samples by: only an elementwise rule can apply
            atol, rtol = (tolerance or Tolerance()).bound
            samples_tolerance = {"tolerance": {"atol": atol, "rtol": rtol, "noise_factor": None}}
        manifest = stage("bundle", lambda: write_bundle(
            out_dir, model_path=onnx_path, arch=frozen, parity=report.to_dict(),
            samples=arrays, force=force, graph=exported.graph,
            extra={"parameter_count": n_params, "source_checkpoint_sha256": checkpoint_sha256,
                   "exporter": exporter,
                   "unused_parameters": list(exported.unused),
                   "bn_recalibration": calibration.to_json() if calibration else None,
                   **samples_tolerance}))
    return RunResult(out_dir, frozen, report, manifest, n_params, timings, nonfinite)


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers holding NaN or Inf."""
    return [name for name, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _bundle_samples(report: ParityReport, exported: Any) -> dict[str, np.ndarray]:
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
