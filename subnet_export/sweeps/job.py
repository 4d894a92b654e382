"""One arch of a sweep: export and validate it, time it on onnxruntime, and say it as a row.

The same function runs in the sweep's own process and in a pool worker; what it returns is a
plain dict (picklable, JSON-ready), the part of the index row the export decides.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.layout import PARITY_NAME
from ..errors import SubnetExportError
from ..export.reuse import TemplateStore

__all__ = ["REUSE", "SweepOptions", "bundle_facts", "export_one", "measure_latency"]

#: ``reuse`` settings: ``template`` fits an earlier trace of the same topology to each new arch
#: (``export/template.py``); ``off`` traces every arch
REUSE = ("template", "off")
#: this process's traces, kept across the archs it exports (key None: not shared; else the
#: folder the sweep's workers share them through)
_STORES: dict[str | None, TemplateStore] = {}


@dataclass(frozen=True)
class SweepOptions:
    """The options of ``export_subnet`` every arch of a sweep shares, and the latency runs.

    Attributes:
        inputs: the model inputs (``InputSpec``), batch first.
        output_names: graph output names, or None.
        dynamic_axes: ``{input name: {axis: dim name}}`` besides the batch.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset, or None for torch's default.
        providers: onnxruntime providers to validate on (None: CPU, and CUDA when there).
        tolerance: a ``Tolerance`` for every backend, or None for the noise rule.
        samples: an ``.npz`` of user inputs, validated for every arch.
        calib_data: an ``.npz`` each arch's BatchNorm statistics are re-estimated on, from the
            checkpoint's statistics every time (``export_subnet``'s ``calib_data``).
        calib_samples: use this many calibration samples (seeded subsample); None: all.
        calib_batch: batch size of the calibration passes.
        batch: the larger batch validated besides 1 (None: the default).
        seed: seed of the random inputs.
        latency_runs: timed onnxruntime CPU runs at batch 1 per bundle (0: no latency).
        reuse: one of :data:`REUSE`; it never changes a bundle's name or verdict.
        variants: a ``VariantOptions``: the edge variants every bundle gets (docs/edge.md),
            or None.
        template_dir: with ``reuse="template"``, a folder the workers of a sweep share their
            traces through (``export/shared_templates.py``); None: this process's own.
    """

    inputs: tuple[Any, ...]
    output_names: tuple[str, ...] | None = None
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    exporter: str = "dynamo"
    opset: int | None = None
    providers: tuple[str, ...] | None = None
    tolerance: Any = None
    samples: str | None = None
    batch: int | None = None
    seed: int = 0
    latency_runs: int = 10
    reuse: str = "template"
    calib_data: str | None = None
    calib_samples: int | None = None
    calib_batch: int = 32
    template_dir: str | None = None
    variants: Any = None

    def export_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``export_subnet`` these options stand for."""
        return {"inputs": list(self.inputs), "output_names": _list(self.output_names),
                "dynamic_axes": {k: dict(v) for k, v in self.dynamic_axes.items()} or None,
                "exporter": self.exporter, "opset": self.opset,
                "providers": _list(self.providers), "tolerance": self.tolerance,
                "samples": self.samples, "batch": self.batch, "seed": self.seed,
                "calib_data": self.calib_data, "calib_samples": self.calib_samples,
                "calib_batch": self.calib_batch, "variants": self.variants}

    def key_fields(self, samples_sha256: str | None,
                   calib_sha256: str | None = None) -> dict[str, Any]:
        """What of these options changes a bundle, as JSON (the latency runs do not).

        The calibration and variant fields are there only when asked for, so the bundles of a
        sweep without them keep the names they had before these were options.
        """
        tol = self.tolerance
        optional = {} if self.calib_data is None else {
            "calib_data_sha256": calib_sha256, "calib_samples": self.calib_samples,
            "calib_batch": self.calib_batch}
        if self.variants is not None:
            optional["variants"] = _variant_fields(self.variants)
        return {**optional, "inputs": [s.to_json() for s in self.inputs],
                "output_names": _list(self.output_names),
                "dynamic_axes": {k: {str(a): d for a, d in v.items()}
                                 for k, v in self.dynamic_axes.items()},
                "exporter": self.exporter, "opset": self.opset,
                "providers": _list(self.providers),
                "tolerance": None if tol is None else [tol.atol, tol.rtol, tol.noise_factor],
                "samples_sha256": samples_sha256, "batch": self.batch, "seed": self.seed}


def _variant_fields(options: Any) -> dict[str, Any]:
    # every field of VariantOptions, the limits resolved to what the verdict uses
    from dataclasses import asdict

    return {**asdict(options),
            "limits": {k: options.limits_for(k).to_json() for k in options.kinds}}


def _list(values: Sequence[Any] | None) -> list[Any] | None:
    return None if values is None else list(values)


def export_one(supernet: Any, arch: Any, out_dir: Path, options: SweepOptions, *,
               checkpoint_sha256: str | None, weights_layout: str | None) -> dict[str, Any]:
    """Export, validate and bundle one arch at ``out_dir``; time it; return its row facts.

    Never raises for a failure of this arch (an invalid arch, a failed export, a bug in a
    module): the row says it, with ``verdict`` ``"error"``, the ``reason`` and the
    ``exit_code`` the ``onnx`` command would have had. An interruption propagates.
    """
    from ..pipeline import export_subnet

    warnings: list[str] = []
    start = time.perf_counter()
    try:
        with _checkpoint_statistics(supernet, options.calib_data is not None):
            result = export_subnet(supernet, out_dir, arch=arch, **options.export_kwargs(),
                                   checkpoint_sha256=checkpoint_sha256,
                                   weights_layout=weights_layout, warn=warnings.append,
                                   templates=_templates(options))
    except SubnetExportError as err:
        return _error(err, str(err), err.exit_code, warnings, start)
    except Exception as err:  # a bug in a module or in this tool: this arch only
        reason = f"internal error: {type(err).__name__}: {err}"
        return {**_error(err, reason, 3, warnings, start),
                "traceback": traceback.format_exc(limit=8)}
    row = {**bundle_facts(out_dir, result.manifest), "status": "exported",
           "template_notes": list(result.template_notes),
           "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
           "warnings": warnings}
    latency_start = time.perf_counter()
    row["latency_ms"] = measure_latency(out_dir, result.manifest, options.latency_runs,
                                        warnings)
    row["timings_s"]["latency"] = round(time.perf_counter() - latency_start, 4)
    return row


def _templates(options: SweepOptions) -> TemplateStore | None:
    if options.reuse != "template":
        return None
    store = _STORES.get(options.template_dir)
    if store is None:
        if options.template_dir is None:
            store = TemplateStore()
        else:
            from ..export.shared_templates import SharedTemplates

            store = SharedTemplates(options.template_dir)
        _STORES[options.template_dir] = store
    return store


@contextmanager
def _checkpoint_statistics(supernet: Any, active: bool) -> Iterator[None]:
    """Restore every BatchNorm's running statistics after one arch's recalibration.

    Each arch is recalibrated from the checkpoint's statistics, whatever was swept before it,
    and a built supernet given to ``se.sweep`` is left as it was.
    """
    if not active:
        yield
        return
    import torch

    saved = [(m, m.running_mean.clone(), m.running_var.clone()) for m in supernet.modules()
             if isinstance(getattr(m, "running_mean", None), torch.Tensor)
             and isinstance(getattr(m, "running_var", None), torch.Tensor)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)


def _error(err: Exception, reason: str, code: int, warnings: list[str],
           start: float) -> dict[str, Any]:
    return {"verdict": "error", "status": "error", "reason": reason,
            "error_type": type(err).__name__, "exit_code": code, "warnings": warnings,
            "timings_s": {"total": round(time.perf_counter() - start, 4)}}


def bundle_facts(bundle_dir: Path, manifest: Any) -> dict[str, Any]:
    """Verdict, reason, parameters, model bytes, export route and variants, from the manifest.

    A bundle whose edge variant failed its verdict is ``failed``, as ``onnx`` exits 1 for it.
    """
    passed = manifest.parity == "passed"
    files = manifest.files
    size = sum(files[f]["size"] for f in (manifest.model_file, *manifest.external_data)
               if f in files)
    variants = {kind: bool(e.get("passed")) for kind, e in sorted(manifest.variants.items())}
    failed = [f"{kind}: {'; '.join(e.get('failures', [])) or 'failed'}"
              for kind, e in sorted(manifest.variants.items()) if not e.get("passed")]
    reason = None if passed else _parity_reason(bundle_dir)
    if passed and failed:
        reason = "variant failed: " + " | ".join(failed)
    passed = passed and not failed
    return {"verdict": "passed" if passed else "failed", "exit_code": 0 if passed else 1,
            "reason": reason, "variants": variants or None,
            "parameters": manifest.extra.get("parameter_count", manifest.parameter_count),
            "model_bytes": size, "export_route": manifest.extra.get("export_route")}


def _parity_reason(bundle_dir: Path) -> str:
    try:
        report = json.loads((bundle_dir / PARITY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "parity failed"
    failed = [f"{b.get('name')}: {b.get('reason') or 'failed'}"
              for b in report.get("backends", []) if b.get("status") == "failed"]
    return "parity failed: " + ("; ".join(failed) if failed else "no onnxruntime backend ran")


def measure_latency(bundle_dir: Path, manifest: Any, runs: int,
                    warnings: list[str] | None = None) -> float | None:
    """Median milliseconds of ``runs`` onnxruntime CPU runs at batch 1 (one thread, 2 warm-up).

    The feed is the bundle's first sample case. None when ``runs`` is 0 or the model does not
    run (the reason is added to ``warnings``).
    """
    if runs <= 0:
        return None
    from ..bundle.latency import bundle_feed
    from ..runtime import make_session

    try:
        feed = bundle_feed(bundle_dir, manifest, 1)
        session = make_session(bundle_dir / manifest.model_file, threads=1)
        for _ in range(2):
            session.run(None, feed)
        times = []
        for _ in range(runs):
            begin = time.perf_counter_ns()
            session.run(None, feed)
            times.append(time.perf_counter_ns() - begin)
    except Exception as err:  # onnxruntime's own error types, or a malformed sample
        if warnings is not None:
            warnings.append(f"latency not measured: {err}")
        return None
    return round(statistics.median(times) / 1e6, 4)
