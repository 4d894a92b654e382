"""Per-layer sensitivity: which modules lose the most when they alone run in FP16 or INT8.

Each module holding a weighted op (Conv, Gemm, MatMul) is converted on its own, every other
node kept float32, and the model's outputs are compared with the float32 reference on the
judged input set. The lower the SNR of that one-module model, the more that module costs the
variant. This measures what the runtime's own kernels do (a fused INT8 convolution included),
which comparing intermediate tensors of a fake-quantized graph would not. Module paths are
``locate``'s (``export/naming.py``), so the worst ones can be handed back as ``--int8-exclude``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .run import run_set, set_stats

__all__ = ["SensitivityRow", "format_sensitivity", "layer_sensitivity"]


@dataclass(frozen=True)
class SensitivityRow:
    """One module converted alone: the worst output's SNR and top-1 agreement."""

    module: str
    snr_db: float
    top1_agreement: float | None
    output: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if not math.isfinite(self.snr_db):
            out["snr_db"] = str(self.snr_db)
        return out


def layer_sensitivity(
    modules: Sequence[str],
    build: Callable[[Path, Sequence[str]], None],
    scratch: Path,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    batch: int = 32,
) -> list[SensitivityRow]:
    """Convert each module alone with ``build(target, [module])``; rows worst first.

    Args:
        modules: the module paths to try, in graph order (ties keep that order).
        build: writes the variant model with only the given modules converted.
        scratch: a directory for the one-module models (each removed after its run).
        inputs: the judged set's inputs, batch first.
        reference: the float32 reference outputs on ``inputs``.
        batch: samples per onnxruntime run.
    """
    rows = []
    target = scratch / "sensitivity.onnx"
    for module in modules:
        build(target, [module])
        got = run_set(target, inputs, list(reference), batch=batch)
        worst = min(set_stats(reference, got), key=lambda s: s.snr_db)
        rows.append(SensitivityRow(module, worst.snr_db, worst.top1_agreement, worst.output))
        target.unlink()
    order = sorted(range(len(rows)), key=lambda i: (rows[i].snr_db, i))
    return [rows[i] for i in order]


def format_sensitivity(kind: str, rows: Sequence[SensitivityRow], top: int = 8) -> list[str]:
    """Table lines of the ``top`` most sensitive modules."""
    if not rows:
        return []
    lines = [f"{kind} per-layer sensitivity (each module alone in {kind}, worst first):",
             f"  {'module':<40} {'SNR dB':>7} {'top1':>6}  output"]
    for r in rows[:top]:
        snr = f"{r.snr_db:.1f}" if math.isfinite(r.snr_db) else str(r.snr_db)
        top1 = "-" if r.top1_agreement is None else f"{r.top1_agreement:.3f}"
        lines.append(f"  {r.module:<40} {snr:>7} {top1:>6}  {r.output}")
    return lines
