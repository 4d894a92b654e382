"""The whole job in one place: freeze -> materialize -> export -> validate -> bundle.

The stage order lives here and nowhere else; the CLI calls :func:`export_subnet` and prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .bundle.atomic import work_directory
from .bundle.layout import MANIFEST_NAME, MODEL_NAME
from .bundle.manifest import BundleManifest
from .bundle.write import write_bundle
from .export.exporter import export_onnx
from .export.reuse import TemplateStore
from .parity.external import external_parity, read_reference_outputs
from .parity.inputs import example_inputs_for
from .parity.report import ParityReport
from .parity.rule import Tolerance
from .parity.validate import validate
from .pipeline_steps import (
    RunLog,
    bundle_samples,
    freeze_and_probe,
    input_specs,
    parameter_counts,
    recalibrate,
    samples_tolerance,
)
from .plain.materialize import materialize_with_labels
from .preflight import check_input_memory
from .signature import InputSpec, choose_batch, resolve_names
from .supernet.walk import slicing_conventions
from .variants.build import VariantOptions
from .variants.stage import VariantsOutcome, run_variants

__all__ = ["STAGES", "RunResult", "export_subnet"]

STAGES = ("freeze", "recalibrate", "materialize", "export", "validate", "variants", "bundle")


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
    unused_parameter_count: int = 0
    export_route: str = "traced"
    template_notes: tuple[str, ...] = ()
    variants: list[Any] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether float parity and every edge variant's statistical parity passed."""
        return self.report.passed and all(v.passed for v in self.variants)

    @property
    def exit_code(self) -> int:
        """0 when every parity check (variants included) passed, 1 otherwise."""
        return 0 if self.passed else 1

    @property
    def model_bytes(self) -> int:
        """Bytes of the bundle's model: the ONNX file and its external data."""
        files = self.manifest.files
        return sum(files[f]["size"] for f in (self.manifest.model_file,
                                              *self.manifest.external_data) if f in files)

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary ``--json`` prints."""
        return {
            "bundle": str(self.out_dir),
            "passed": self.passed,
            "exit_code": self.exit_code,
            "arch": self.arch,
            "parameter_count": self.parameter_count,
            "unused_parameter_count": self.unused_parameter_count,
            "model_bytes": self.model_bytes,
            "weights_layout": self.manifest.extra.get("weights_layout"),
            "export_route": self.export_route,
            "nonfinite_tensors": self.nonfinite,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "parity": self.report.to_dict(),
            "variants": {v.kind: v.to_manifest() for v in self.variants},
        }


def export_subnet(
    supernet: nn.Module,
    out_dir: str | Path,
    *,
    input_shapes: Sequence[Sequence[int]] | None = None,
    inputs: Sequence[InputSpec | str | Sequence[int]] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    arch: Mapping[str, Any] | None = None,
    exporter: str = "dynamo",
    opset: int | None = None,
    providers: Sequence[str] | None = None,
    tolerance: Tolerance | None = None,
    samples: str | Path | None = None,
    reference_outputs: str | Path | None = None,
    batch: int | None = None,
    seed: int = 0,
    force: bool = False,
    checkpoint_sha256: str | None = None,
    weights_layout: str | None = None,
    calib_data: str | Path | None = None,
    calib_samples: int | None = None,
    calib_batch: int = 32,
    progress: Callable[[str, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    templates: TemplateStore | None = None,
    variants: VariantOptions | None = None,
) -> RunResult:
    """Run every stage and write the bundle to ``out_dir``.

    Before any work the inputs are checked: ``out_dir`` can be written, the input tensors and
    the validation at ``batch`` fit in memory, and the supernet path runs on the inputs (a
    wrong rank or dtype is an :class:`InputError`, not a failure deep in the export).

    Args:
        supernet: a supernet (``se.to_supernet``), weights loaded.
        out_dir: the bundle directory (written atomically; scratch files live beside it).
        input_shapes: one shape per model input, batch first (float32 inputs).
        inputs: instead of ``input_shapes``: one :class:`InputSpec` (or ``--input`` string
            ``NAME:SHAPE[:DTYPE][:LOW..HIGH]``) per input, naming the graph inputs.
        output_names: graph output names, one per model output.
        dynamic_axes: ``{input name: {axis: dim name}}``, symbolic axes besides the batch;
            each is validated at a second size too.
        arch: ``{label: value}``; None uses the supernet's own export.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset (None: torch's default; one the exporter cannot write is refused).
        providers: onnxruntime providers to validate on (default: CPU, and CUDA when there).
        tolerance: one tolerance for every backend (None: the noise rule, ``parity/rule.py``).
        samples: an ``.npz`` of user inputs, validated as one more input set.
        reference_outputs: an ``.npz`` of inputs and the outputs the original framework's
            supernet computed for this arch, judged as the backend ``external`` (its keys are
            read before any work); the manifest's ``extra["external_parity"]`` records it.
        batch: the larger batch size checked besides batch 1 (None: the inputs' own batch
            when it is not 1, else 8).
        seed: seed of the random inputs.
        force: replace an existing bundle.
        checkpoint_sha256: sha256 of the weights file, recorded in the model and manifest.
        weights_layout: how the weights file's layout was mapped onto the supernet (the note
            of ``loading.load_checkpoint``); the manifest's ``extra["weights_layout"]``.
        calib_data: inputs (``.npz`` path or array) to re-estimate the subnet's BatchNorm
            statistics on before materializing. This replaces the supernet's statistics of
            the active channels in place; parity is then checked between the recalibrated
            supernet path and the plain model. The method is recorded in the manifest.
        calib_samples: use this many calibration samples (seeded subsample); None: all.
        calib_batch: batch size of the calibration passes.
        progress: called as ``progress(stage, "start" | "done")``.
        warn: called with a message for problems that do not stop the run (NaN or Inf in
            the subnet's weights: named before export; parity then fails).
        templates: traces to reuse for a subnet of the same topology (``export/reuse.py``;
            a sweep keeps one). A subnet made from a template that then fails parity is
            traced afresh and judged again (``export_route`` ``"retraced"``).
        variants: FP16/INT8 models to add, judged by statistical parity against the supernet
            path (docs/edge.md); INT8 calibrates on ``calib_data`` when given. A failed
            variant makes ``exit_code`` 1, as failed float parity does.

    Returns:
        A :class:`RunResult`; its ``exit_code`` is 1 when parity failed (the bundle is still
        written, marked failed).

    Raises:
        SubnetExportError: any stage's user-facing failure (arch, export, input, bundle).
    """
    specs = input_specs(input_shapes, inputs, dynamic_axes)
    batch = choose_batch(specs, batch)
    check_input_memory(specs, batch)
    recorded = None if reference_outputs is None else read_reference_outputs(
        reference_outputs, input_names=resolve_names(specs), n_inputs=len(specs))
    run = RunLog(progress, warn)
    with work_directory(out_dir, force=force, marker=MANIFEST_NAME) as work:
        supernet.eval()
        examples = example_inputs_for(specs, seed)
        frozen = run.stage("freeze", lambda: freeze_and_probe(supernet, arch, examples,
                                                              specs, batch))
        calibration = None
        if calib_data is not None:
            calibration = run.stage("recalibrate", lambda: recalibrate(
                supernet, frozen, calib_data, calib_batch, calib_samples, seed))
        built = run.stage("materialize", lambda: materialize_with_labels(supernet, frozen))
        plain = built.model.eval()
        run.check_finite(plain)
        def export_and_validate(store: TemplateStore | None) -> tuple[Any, ParityReport]:
            exported = run.stage("export", lambda: export_onnx(
                plain, examples, work / MODEL_NAME, exporter=exporter, opset=opset,
                arch=frozen, checkpoint_sha256=checkpoint_sha256,
                input_names=resolve_names(specs), output_names=output_names,
                dynamic_axes={n: s.dynamic for n, s in zip(resolve_names(specs), specs)},
                templates=store))
            return exported, run.stage("validate", lambda: validate(
                supernet, frozen, plain, exported, example_inputs=examples,
                batch_sizes=(1, batch) if batch != 1 else (1,), seed=seed, samples=samples,
                tolerances=tolerance, providers=providers, module_labels=built.labels,
                specs=specs, reference_outputs=recorded))

        exported, report = export_and_validate(templates)
        route = exported.route
        if route == "template" and not report.passed:  # not trusted: trace and judge that
            exported, report = export_and_validate(None)
            route = "retraced"
        run.warn_unused(exported.unused)
        counts, slicing = parameter_counts(plain, exported.unused), slicing_conventions(supernet)
        edge = run.stage("variants", lambda: run_variants(
            supernet, frozen, plain, exported, work, variants, report=report, examples=examples,
            specs=specs, calib_data=calib_data, calib_samples=calib_samples, samples=samples,
            seed=seed)) if variants else VariantsOutcome()
        manifest = run.stage("bundle", lambda: write_bundle(
            out_dir, model_path=exported.path, arch=frozen, parity=report.to_dict(),
            samples=bundle_samples(report, exported), force=force, graph=exported.graph,
            files=edge.files, variants=edge.manifest_entries(), ort=edge.ort,
            extra={"parameter_count": counts[0], "unused_parameter_count": counts[1],
                   "source_checkpoint_sha256": checkpoint_sha256, "exporter": exporter,
                   "weights_layout": weights_layout, "slicing_conventions": slicing,
                   "inputs": [s.to_json() for s in specs],
                   "arch_as_given": frozen.source,
                   "unused_parameters": list(exported.unused),
                   "bn_recalibration": calibration.to_json() if calibration else None,
                   "external_parity": external_parity(report, recorded),
                   "export_route": route,
                   **samples_tolerance(report, tolerance)}))
    return RunResult(Path(out_dir), frozen, report, manifest, counts[0], run.timings,
                     run.nonfinite, unused_parameter_count=counts[1], export_route=route,
                     template_notes=exported.template_notes, variants=edge.results)
