"""``verify`` for a bundle's edge variants and ORT-format models, on the edge machine.

Each variant (and its ``.ort`` file, when the bundle has them) is run on ``variants.npz`` (the
judged set and its float32 supernet-path outputs) and its statistics judged by the limits the
manifest recorded: the same verdict the writer took, taken again on this machine's kernels.
numpy and onnxruntime only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..npz import load_npz
from ..variants.run import judge, run_set, set_stats
from ..variants.stats import OutputStats, VariantLimits, format_stats
from .layout import VARIANTS_SAMPLES
from .manifest import BundleManifest

__all__ = ["VariantCheck", "check_variants", "format_variant_checks"]


@dataclass
class VariantCheck:
    """One variant file rerun here: its statistics and what they break."""

    kind: str
    file: str
    stats: list[OutputStats] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "passed": self.passed,
                "stats": [s.to_json() for s in self.stats], "failures": list(self.failures)}


def _judged(root: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    try:
        arrays = load_npz(root / VARIANTS_SAMPLES, VARIANTS_SAMPLES)
    except Exception as e:  # InputError for a missing or unreadable file
        raise BundleError(f"bundle {root}: {e}") from e
    inputs = {k.partition(":")[2]: v for k, v in arrays.items() if k.startswith("input:")}
    outputs = {k.partition(":")[2]: v for k, v in arrays.items() if k.startswith("output:")}
    if not inputs or not outputs:
        raise BundleError(f"bundle {root}: {VARIANTS_SAMPLES} lacks input: or output: arrays")
    return inputs, outputs


def _limits(kind: str, entry: dict[str, Any], root: Path) -> VariantLimits:
    try:
        return VariantLimits(**entry.get("limits", {}))
    except TypeError as e:
        raise BundleError(f"bundle {root}: variant {kind!r} has malformed limits: {e}") from e


def check_variants(root: Path, manifest: BundleManifest,
                   providers: list[str]) -> list[VariantCheck]:
    """Rerun every variant file (``.onnx`` and ``.ort``) of the bundle and judge it."""
    if not manifest.variants:
        return []
    inputs, reference = _judged(root)
    checks = []
    for kind, entry in sorted(manifest.variants.items()):
        limits = _limits(kind, entry, root)
        for name in (entry["file"], entry.get("ort_file")):
            if not name:
                continue
            try:
                got = run_set(root / name, inputs, list(reference), providers=providers)
            except Exception as e:  # onnxruntime's own error types
                raise BundleError(f"bundle {root}: onnxruntime cannot run {name}: {e}") from e
            stats = set_stats(reference, got)
            checks.append(VariantCheck(kind, name, stats, judge(stats, limits)))
    return checks


def format_variant_checks(checks: list[VariantCheck]) -> list[str]:
    """Table lines of the variant checks (empty without variants)."""
    if not checks:
        return []
    rows = [(c.file.removeprefix("model.").rsplit(".", 1)[0] + (" ort" if c.file.endswith(
        ".ort") else ""), VARIANTS_SAMPLES, s,
             [f for f in c.failures if f.startswith(f"{s.output}:")])
            for c in checks for s in c.stats]
    lines = ["", *format_stats(rows)]
    return lines + [f"  {c.file}: {f}" for c in checks for f in c.failures]
