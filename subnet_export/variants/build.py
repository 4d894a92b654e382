"""``make_variants``: FP16 and INT8 models of an exported model, judged by statistical parity.

For each kind asked for: convert (``convert.py``), run the variant on the judged input set,
compare with the float32 reference (``stats.py``), judge by the kind's limits. When a variant
fails, or its SNR is within ``margin_db`` of the bound, per-layer sensitivity names the modules
that lose the most (``sensitivity.py``); with ``auto_exclude`` the worst are kept float32 one at
a time until the verdict passes. Works on any ONNX model and numpy arrays, without torch.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError, InputError, SubnetExportError
from .convert import (
    Fp16Settings,
    Int8Settings,
    check_modules,
    make_fp16,
    make_int8,
    prepare_int8,
    weighted_modules,
)
from .run import judge, pad, run_set, set_stats
from .sensitivity import SensitivityRow, format_sensitivity, layer_sensitivity
from .stats import DEFAULT_LIMITS, OutputStats, VariantLimits, format_stats

__all__ = ["KINDS", "JudgedSet", "VariantOptions", "VariantResult", "make_variants",
           "variant_file"]

KINDS = ("fp16", "int8")
SENSITIVITY_MODES = ("auto", "always", "never")


def variant_file(kind: str) -> str:
    """The bundle name of a variant: ``model.int8.onnx``."""
    return f"model.{kind}.onnx"


@dataclass(frozen=True)
class JudgedSet:
    """Inputs (batch first, by graph input name) and the float32 reference outputs on them."""

    label: str
    inputs: Mapping[str, np.ndarray]
    reference: Mapping[str, np.ndarray]

    @property
    def size(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass(frozen=True)
class VariantOptions:
    """What :func:`make_variants` builds and how it judges (defaults in docs/edge.md).

    Attributes:
        kinds: ``fp16`` and/or ``int8`` (none: only the ORT-format files).
        limits: per kind, the verdict's bounds (missing kinds: :data:`DEFAULT_LIMITS`).
        fp16: see :class:`Fp16Settings`.
        int8: see :class:`Int8Settings`.
        auto_exclude: keep up to this many of the most sensitive modules float32, one at a
            time, until the verdict passes (0: off).
        sensitivity: ``auto`` (a failing variant, or SNR within ``margin_db`` of its bound),
            ``always`` or ``never``.
        margin_db: how close to the SNR bound counts as close to failing.
        ort_format: also write ``.ort`` files for onnxruntime's minimal build.
        batch: samples per onnxruntime run (calibration and judging).
    """

    kinds: tuple[str, ...] = KINDS
    limits: Mapping[str, VariantLimits] | None = None
    fp16: Fp16Settings = field(default_factory=Fp16Settings)
    int8: Int8Settings = field(default_factory=Int8Settings)
    auto_exclude: int = 0
    sensitivity: str = "auto"
    margin_db: float = 6.0
    ort_format: bool = False
    batch: int = 32

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or len(set(self.kinds)) != len(self.kinds) or not (
                self.kinds or self.ort_format):
            raise InputError(f"variants must be distinct kinds among {', '.join(KINDS)}, "
                             f"not {', '.join(self.kinds) or 'none'}")
        if self.sensitivity not in SENSITIVITY_MODES:
            raise InputError(f"sensitivity must be one of {', '.join(SENSITIVITY_MODES)}")
        if self.sensitivity == "never" and self.auto_exclude:
            raise InputError("auto exclusion picks modules by their sensitivity: drop "
                             "--sensitivity never or --auto-exclude")
        if self.int8.calibration not in ("minmax", "entropy", "percentile"):
            raise InputError("int8 calibration must be minmax, entropy or percentile, not "
                             f"{self.int8.calibration!r}")

    def limits_for(self, kind: str) -> VariantLimits:
        return (self.limits or {}).get(kind, DEFAULT_LIMITS[kind])


@dataclass
class VariantResult:
    """One variant: its file, statistics on the judged set, verdict, sensitivity."""

    kind: str
    path: Path
    limits: VariantLimits
    judged_set: str
    stats: list[OutputStats]
    failures: list[str]
    settings: dict[str, Any]
    other_sets: dict[str, list[OutputStats]] = field(default_factory=dict)
    sensitivity: list[SensitivityRow] = field(default_factory=list)
    auto_excluded: list[str] = field(default_factory=list)
    ort_file: str | None = None

    @property
    def file(self) -> str:
        return self.path.name

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_manifest(self) -> dict[str, Any]:
        """The variant's entry in ``manifest.json``'s ``variants`` (docs/bundle.md)."""
        return {
            "file": self.file,
            "ort_file": self.ort_file,
            "passed": self.passed,
            "limits": self.limits.to_json(),
            "judged_set": self.judged_set,
            "stats": [s.to_json() for s in self.stats],
            "other_sets": {k: [s.to_json() for s in v] for k, v in self.other_sets.items()},
            "failures": list(self.failures),
            "settings": self.settings,
            "auto_excluded": list(self.auto_excluded),
            "sensitivity": [r.to_json() for r in self.sensitivity[:20]],
        }

    def format_lines(self) -> list[str]:
        """The variant's statistics rows (judged set first), failures and sensitivity."""
        rows = [(self.kind, self.judged_set + "*", s, self.limits.failures(s))
                for s in self.stats]
        rows += [(self.kind, label, s, None) for label, ss in self.other_sets.items() for s in ss]
        lines = format_stats(rows)[1:]
        lines += [f"  {self.kind} FAILED: {f}" for f in self.failures]
        if self.auto_excluded:
            lines.append(f"  {self.kind}: kept float32 (auto): {', '.join(self.auto_excluded)}")
        return lines + format_sensitivity(self.kind, self.sensitivity)


def _batches(inputs: Mapping[str, np.ndarray], step: int, fixed: bool
             ) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(inputs.values())))
    return [{k: pad(v[i:i + step], step) if fixed else v[i:i + step] for k, v in inputs.items()}
            for i in range(0, n, step)]


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


def _builder(kind: str, source: Path, scratch: Path, options: VariantOptions,
             calibration: Mapping[str, np.ndarray] | None
             ) -> tuple[Callable[[Path, Sequence[str] | None, Sequence[str]], None], Path]:
    """``build(target, only, exclude)`` for ``kind``, and the model its module names come from."""
    model = onnx.load(str(source), load_external_data=False)
    if kind == "fp16":
        check_modules(model, options.fp16.exclude, "--fp16-exclude")

        def build_fp16(target: Path, only: Sequence[str] | None, exclude: Sequence[str]) -> None:
            settings = replace(options.fp16, exclude=(*options.fp16.exclude, *exclude))
            make_fp16(source, target, settings, only)
        return build_fp16, source
    check_modules(model, options.int8.exclude, "--int8-exclude")
    prepared = prepare_int8(source, scratch / "prepared.onnx")
    # a module whose nodes the preparation folded away (a BatchNorm into its Conv) has none left
    check_modules(onnx.load(str(prepared), load_external_data=False), options.int8.exclude,
                  "--int8-exclude (after BatchNorm folding)")
    fixed = _fixed_batch(model)
    batches = _batches(calibration, fixed or options.batch, bool(fixed)) if calibration else []
    if not options.int8.dynamic and not batches:
        raise InputError("the int8 variant needs calibration inputs")
    cache = scratch / "calibration.json"
    if not options.int8.dynamic:
        # calibrate every tensor once, nothing excluded, so any later subset finds its ranges
        make_int8(prepared, scratch / "calibrated.onnx", replace(options.int8, exclude=()),
                  batches, cache)

    def build_int8(target: Path, only: Sequence[str] | None, exclude: Sequence[str]) -> None:
        settings = replace(options.int8, exclude=(*options.int8.exclude, *exclude))
        make_int8(prepared, target, settings, batches, cache, only)
    return build_int8, prepared


def _evaluate(path: Path, judged: JudgedSet, limits: VariantLimits, batch: int
              ) -> tuple[list[OutputStats], list[str]]:
    got = run_set(path, judged.inputs, list(judged.reference), batch=batch)
    stats = set_stats(judged.reference, got)
    return stats, judge(stats, limits)


def _one_variant(kind: str, source: Path, out_dir: Path, scratch: Path, judged: JudgedSet,
                 calibration: Mapping[str, np.ndarray] | None,
                 options: VariantOptions) -> VariantResult:
    build, names_from = _builder(kind, source, scratch, options, calibration)
    target, limits = out_dir / variant_file(kind), options.limits_for(kind)
    build(target, None, ())
    stats, failures = _evaluate(target, judged, limits, options.batch)
    settings = (options.fp16 if kind == "fp16" else options.int8).to_json()
    result = VariantResult(kind, target, limits, judged.label, stats, failures, settings)
    close = min((limits.margin_db(s) for s in stats), default=math.inf) < options.margin_db
    if options.sensitivity == "always" or (options.sensitivity == "auto"
                                           and (failures or close)):
        kept = set((options.fp16 if kind == "fp16" else options.int8).exclude)
        modules = [m for m in weighted_modules(onnx.load(str(names_from),
                                                         load_external_data=False))
                   if m not in kept and not any(m.startswith(k + ".") for k in kept)]
        result.sensitivity = layer_sensitivity(
            modules, lambda t, only: build(t, only, ()), scratch, judged.inputs,
            judged.reference, batch=options.batch)
    for row in result.sensitivity:
        if result.passed or len(result.auto_excluded) >= options.auto_exclude:
            break
        result.auto_excluded.append(row.module)
        build(target, None, result.auto_excluded)
        result.stats, result.failures = _evaluate(target, judged, limits, options.batch)
    if result.auto_excluded:
        result.settings["exclude"] = [*result.settings["exclude"], *result.auto_excluded]
    return result


def make_variants(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    judged: JudgedSet,
    calibration: Mapping[str, np.ndarray] | None = None,
    options: VariantOptions | None = None,
    other_sets: Sequence[JudgedSet] = (),
    scratch: str | Path | None = None,
) -> list[VariantResult]:
    """Write ``model.fp16.onnx`` / ``model.int8.onnx`` into ``out_dir`` and judge each.

    Args:
        model_path: the float32 ONNX model.
        out_dir: where the variant files go (``variant_file(kind)``).
        judged: the set the verdict is taken on, with its float32 reference outputs.
        calibration: INT8 calibration inputs by graph input name, batch first.
        options: see :class:`VariantOptions`.
        other_sets: more sets whose statistics are reported, not judged.
        scratch: a directory for intermediate models (default: a temporary one in
            ``out_dir``, removed after).

    Returns:
        One result per kind, in the order asked; a failed verdict is a result, not an error.

    Raises:
        InputError: an excluded module the model lacks, missing calibration inputs.
        ExportError: onnxruntime's converter or session fails on the model.
    """
    options = options or VariantOptions()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"variants: {out_dir} is not a directory; create it first")
    if judged.size == 0:
        raise InputError(f"variants: the judged set {judged.label!r} holds no samples")
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix=".variants-", dir=out_dir) as tmp:
            return make_variants(model_path, out_dir, judged=judged, calibration=calibration,
                                 options=options, other_sets=other_sets, scratch=tmp)
    scratch = Path(scratch)
    results = []
    for kind in options.kinds:
        work = scratch / kind
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = _one_variant(kind, Path(model_path), out_dir, work, judged, calibration,
                                  options)
            for other in other_sets:
                result.other_sets[other.label] = _evaluate(result.path, other, result.limits,
                                                           options.batch)[0]
        except SubnetExportError:
            raise
        except Exception as e:  # onnxruntime's converters and sessions raise their own types
            raise ExportError(f"the {kind} variant could not be made: {type(e).__name__}: "
                              f"{e}; keep the failing op float32 (--fp16-keep, "
                              "--int8-exclude) or drop the variant") from e
        results.append(result)
    return results
