"""``gate``'s checks of a bundle's edge variants: the ``[variants.KIND]`` tables of a budget.

Per variant kind the budget names: the bundle must hold the variant, its recorded verdict must
be passed (unless ``require_passed = false``), and its file size, size ratio to float32, recorded
statistics (worst output of the judged set) and latency ratio to the bundle's own float32 model
must meet their limits. numpy and onnxruntime only, like the rest of ``gate``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..variants.stats import OutputStats, stats_from_json
from .budget import VariantBudget
from .gate_check import GateCheck
from .latency import LatencyResult, bundle_feed, compare_latency
from .manifest import BundleManifest

__all__ = ["variant_checks"]

# budget key -> (statistic, whether the bound is a minimum)
_STAT_BOUNDS = {
    "cosine_min": ("cosine", True),
    "snr_db_min": ("snr_db", True),
    "top1_agreement_min": ("top1_agreement", True),
    "top5_agreement_min": ("top5_agreement", True),
    "max_abs_error_max": ("max_abs_error", False),
}


def _worst(stats: list[OutputStats], stat: str, low: bool) -> float | None:
    values = [math.nan if not s.finite else getattr(s, stat) for s in stats]
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    if any(math.isnan(v) for v in values):
        return math.nan
    return min(values) if low else max(values)


def _stat_check(name: str, stats: list[OutputStats], key: str, bound: float) -> GateCheck:
    stat, low = _STAT_BOUNDS[key]
    worst = _worst(stats, stat, low)
    if worst is None:
        what = "a logits output" if stat.startswith("top") else "statistics"
        return GateCheck(name, False, None, bound,
                         f"the manifest records no {stat} for this variant (it needs {what})")
    ok = not math.isnan(worst) and (worst >= bound if low else worst <= bound)
    message = "" if ok else (f"worst output {stat} {worst:.4g} "
                             f"{'<' if low else '>'} {bound:g} on the judged set")
    return GateCheck(name, ok, worst, bound, message)


def _one(root: Path, manifest: BundleManifest, kind: str, budget: VariantBudget
         ) -> tuple[list[GateCheck], LatencyResult | None]:
    head = f"variants.{kind}"
    entry: dict[str, Any] | None = manifest.variants.get(kind)
    if entry is None:
        return [GateCheck(head, False, None, "present", f"the bundle has no {kind} variant: "
                          f"export it with --variants {kind}")], None
    checks = []
    if budget.require_passed:
        passed = bool(entry.get("passed"))
        checks.append(GateCheck(f"{head}.passed", passed, "passed" if passed else "failed",
                                "passed", "; ".join(entry.get("failures", [])) or
                                ("" if passed else "the variant failed its verdict")))
    size = sum(manifest.files[f]["size"] for f in (entry["file"], *entry.get("external_data", ())))
    if budget.max_file_bytes is not None:
        checks.append(GateCheck(f"{head}.max_file_bytes", size <= budget.max_file_bytes, size,
                                budget.max_file_bytes, entry["file"]))
    if budget.max_size_ratio is not None:
        float32 = sum(manifest.files[f]["size"]
                      for f in (manifest.model_file, *manifest.external_data))
        ratio = size / float32
        checks.append(GateCheck(f"{head}.max_size_ratio", ratio <= budget.max_size_ratio, ratio,
                                budget.max_size_ratio,
                                f"{entry['file']} {size} bytes over float32's {float32}"))
    stats = [stats_from_json(s) for s in entry.get("stats", [])]
    for key in _STAT_BOUNDS:
        bound = getattr(budget, key)
        if bound is not None:
            checks.append(_stat_check(f"{head}.{key}", stats, key, bound))
    lat = budget.latency
    if lat is None:
        return checks, None
    feed = bundle_feed(root, manifest, lat.batch_size)
    result = compare_latency(root / entry["file"], feed, root / manifest.model_file, feed,
                             runs=lat.runs, warmup=lat.warmup, threads=lat.threads,
                             batch_size=lat.batch_size)
    checks.append(GateCheck(
        f"{head}.latency_ratio", result.ratio <= lat.max_ratio, result.ratio, lat.max_ratio,
        f"median {result.median_ms:.3g} ms vs float32 {result.baseline_median_ms:.3g} ms "
        f"at batch {lat.batch_size}, {lat.runs} runs each",
    ))
    return checks, result


def variant_checks(root: Path, manifest: BundleManifest,
                   budgets: dict[str, VariantBudget]
                   ) -> tuple[list[GateCheck], dict[str, LatencyResult]]:
    """Every check of ``budgets`` (kind -> budget) on the bundle, and the latencies measured.

    Raises:
        BundleError: a variant's model does not load or run for the latency check.
    """
    checks: list[GateCheck] = []
    latencies: dict[str, LatencyResult] = {}
    for kind, budget in sorted(budgets.items()):
        found, latency = _one(root, manifest, kind, budget)
        checks.extend(found)
        if latency is not None:
            latencies[kind] = latency
    return checks, latencies
