"""``gate``: fail CI when a bundle breaks its budget, listing every violation.

Checks, in order: file integrity (a tampered bundle raises, it is never gated), parity verdict
and worst max abs error, parameter count, model size, opset, operator set, onnxruntime CPU
latency relative to a baseline bundle, and the edge variants' budgets (``gate_variants.py``).
Imports onnx, onnxruntime and numpy, never torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..parity.record import RecordedParity
from .budget import Budget
from .gate_check import GateCheck
from .gate_variants import variant_checks
from .integrity import require_intact
from .latency import LatencyResult, bundle_feed, compare_latency
from .layout import PARITY_NAME
from .manifest import BundleManifest

__all__ = ["GateReport", "gate"]


@dataclass
class GateReport:
    """The result of :func:`gate`: every check the budget asked for, failed ones first in tables."""

    bundle: str
    baseline: str | None
    checks: list[GateCheck] = field(default_factory=list)
    latency: LatencyResult | None = None
    variant_latency: dict[str, LatencyResult] = field(default_factory=dict)

    @property
    def violations(self) -> list[GateCheck]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        """Whether no check failed."""
        return not self.violations

    @property
    def exit_code(self) -> int:
        """0 when :attr:`passed`, 1 when there is any violation."""
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``passed``, ``exit_code``, ``violations`` included)."""
        return {
            "bundle": self.bundle,
            "baseline": self.baseline,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
            "violations": [c.name for c in self.violations],
            "latency": None if self.latency is None else asdict(self.latency),
            "variant_latency": {k: asdict(v) for k, v in self.variant_latency.items()},
        }

    def format_table(self) -> str:
        """Return a table of every check (violations first) and the verdict."""
        rows = [("check", "measured", "limit", "verdict")]
        for c in sorted(self.checks, key=lambda c: c.passed):
            rows.append((c.name, _short(c.measured), _short(c.limit), "ok" if c.passed else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}"
                 for r in rows]
        lines += [f"  {c.name}: {c.message}" for c in self.violations if c.message]
        if self.latency is not None:
            lat = self.latency
            lines.append(f"latency: {lat.median_ms:.3g} ms vs baseline {lat.baseline_median_ms:.3g}"
                         f" ms (ratio {lat.ratio:.3f}, batch {lat.batch_size}, {lat.runs} runs)")
        for kind, lat in sorted(self.variant_latency.items()):
            lines.append(f"latency {kind}: {lat.median_ms:.3g} ms vs float32 "
                         f"{lat.baseline_median_ms:.3g} ms (ratio {lat.ratio:.3f}, batch "
                         f"{lat.batch_size}, {lat.runs} runs)")
        lines.append(f"gate: {'PASSED' if self.passed else 'FAILED'} "
                     f"({len(self.violations)} violation(s), exit {self.exit_code})")
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} item(s)"
    return "-" if value is None else str(value)


def _static_checks(root: Path, manifest: BundleManifest, budget: Budget) -> list[GateCheck]:
    checks: list[GateCheck] = []
    if budget.require_parity:
        checks.append(GateCheck("parity", manifest.passed, manifest.parity, "passed",
                                "" if manifest.passed else "the bundle failed its parity check"))
    if budget.max_abs_error is not None:
        try:
            parity = json.loads((root / PARITY_NAME).read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"bundle {root}: parity.json is unreadable: {e}") from e
        try:
            worst = RecordedParity.from_json(parity).max_abs_error
        except ValueError as e:
            raise BundleError(f"bundle {root}: {PARITY_NAME} is not a parity report: {e}") from e
        ok = worst is not None and worst <= budget.max_abs_error
        checks.append(GateCheck("max_abs_error", ok, worst, budget.max_abs_error,
                                "parity.json records no max_abs_error" if worst is None else ""))
    if budget.max_params is not None:
        n = manifest.parameter_count
        checks.append(GateCheck("max_params", n <= budget.max_params, n, budget.max_params))
    if budget.max_file_bytes is not None:
        model_files = (manifest.model_file, *manifest.external_data)
        size = sum(manifest.files[f]["size"] for f in model_files)
        checks.append(GateCheck("max_file_bytes", size <= budget.max_file_bytes, size,
                                budget.max_file_bytes, "model.onnx plus external data"))
    if budget.max_opset is not None:
        checks.append(GateCheck("max_opset", manifest.opset <= budget.max_opset, manifest.opset,
                                budget.max_opset))
    if budget.allowed_ops is not None:
        from ..export.graph import load_model, op_types

        try:
            ops = op_types(load_model(root / manifest.model_file))
        except Exception as e:  # protobuf's DecodeError and friends
            raise BundleError(f"bundle {root}: cannot read {manifest.model_file}: {e}") from e
        extra_ops = sorted(set(ops) - set(budget.allowed_ops))
        checks.append(GateCheck("allowed_ops", not extra_ops, extra_ops, list(budget.allowed_ops),
                                f"operators outside the allowed set: {', '.join(extra_ops)}"
                                if extra_ops else ""))
    return checks


def gate(bundle_dir: str | Path, budget: Budget, baseline: str | Path | None = None) -> GateReport:
    """Check a bundle against a budget.

    The bundle's (and the baseline's) hashes are checked first; the remaining checks all run
    and every failure is reported, not only the first.

    Args:
        bundle_dir: the bundle to gate.
        budget: the limits; see :class:`Budget`.
        baseline: a bundle to measure latency against, when the budget has ``[latency]``.

    Returns:
        The report; ``exit_code`` is 1 when any check failed. A ``[latency]`` budget without a
        ``baseline`` is a violation, so a CI job cannot skip it by leaving the flag out.

    Raises:
        TamperError: the bundle or the baseline does not match its manifest (exit code 1).
        BundleError: a bundle is missing or malformed, or its model does not load or run.
    """
    root = Path(bundle_dir)
    manifest = require_intact(root)
    report = GateReport(str(root), None if baseline is None else str(baseline))
    report.checks.extend(_static_checks(root, manifest, budget))
    lat = budget.latency
    if lat is not None and baseline is None:
        report.checks.append(GateCheck("latency_ratio", False, None, lat.max_ratio,
                                       "the budget sets [latency]: pass a baseline bundle"))
    elif lat is not None and baseline is not None:
        base_root = Path(baseline)
        try:
            base_manifest = require_intact(base_root)
        except BundleError as err:
            raise BundleError(f"baseline bundle (--baseline): {err}") from err
        result = compare_latency(
            root / manifest.model_file, bundle_feed(root, manifest, lat.batch_size),
            base_root / base_manifest.model_file,
            bundle_feed(base_root, base_manifest, lat.batch_size),
            runs=lat.runs, warmup=lat.warmup, threads=lat.threads, batch_size=lat.batch_size,
        )
        report.latency = result
        report.checks.append(GateCheck(
            "latency_ratio", result.ratio <= lat.max_ratio, result.ratio, lat.max_ratio,
            f"median {result.median_ms:.3g} ms vs baseline {result.baseline_median_ms:.3g} ms "
            f"at batch {lat.batch_size}, {lat.runs} runs each",
        ))
    if budget.variants:
        checks, report.variant_latency = variant_checks(root, manifest, dict(budget.variants))
        report.checks.extend(checks)
    return report
