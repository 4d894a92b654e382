"""One output of one input set on one backend, against the reference: the per-set figures.

The verdict pools the sets (``rule.noise_check``); a comparison records the per-set diagnostics
and the checks that hold element by element: shape, dtype, NaN/Inf, an explicit ``atol``/``rtol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rule import UNIT_ROUNDOFF, Tolerance

__all__ = ["OutputComparison"]


@dataclass(frozen=True)
class OutputComparison:
    """One output of one input set on one backend, against the reference.

    Errors are over finite elements only; ``nan_count``/``inf_count`` count the candidate's
    non-finite elements (``ref_nonfinite`` the reference's), and any of them fails the check.
    ``noise`` is ``||reference - oracle||_2`` on this set, ``oracle_error`` is
    ``||candidate - oracle||_2`` and ``noise_ratio`` their quotient over the one-rounding floor
    (the verdict pools them over all sets: ``BackendResult.noise``). ``min_passing_atol`` is the
    smallest atol that would have passed elementwise with the tolerance's rtol (0 when unset).
    ``passed`` covers shape, dtype, NaN/Inf and, when the tolerance sets one, the elementwise rule.
    """

    output: str
    inputs: str
    shape: list[int]
    ref_shape: list[int]
    dtype: str
    ref_dtype: str
    max_abs_error: float
    max_rel_error: float
    rel_l2_error: float
    nan_count: int
    inf_count: int
    ref_nonfinite: int
    argmax_agreement: float | None
    min_passing_atol: float
    noise: float | None
    oracle_error: float | None
    noise_ratio: float | None
    passed: bool
    reason: str = ""

    @classmethod
    def from_arrays(
        cls,
        output: str,
        inputs: str,
        candidate: np.ndarray,
        reference: np.ndarray,
        tolerance: Tolerance,
        *,
        oracle: np.ndarray | None = None,
    ) -> OutputComparison:
        """Compare a candidate array to the reference (and optionally a float64 oracle).

        Args:
            output: output name.
            inputs: label of the input set (e.g. ``random-b8``).
            candidate: the backend's output.
            reference: the reference output.
            tolerance: the elementwise rule, when it sets ``atol``/``rtol``.
            oracle: the float64 oracle's output, when computed.

        Returns:
            The comparison, with ``passed`` and a short ``reason`` when it failed.
        """
        cand = np.asarray(candidate)
        ref = np.asarray(reference)
        base: dict[str, Any] = dict(
            output=output, inputs=inputs, shape=list(cand.shape), ref_shape=list(ref.shape),
            dtype=str(cand.dtype), ref_dtype=str(ref.dtype),
            nan_count=int(np.isnan(cand).sum()) if cand.dtype.kind in "fc" else 0,
            inf_count=int(np.isinf(cand).sum()) if cand.dtype.kind in "fc" else 0,
            ref_nonfinite=int((~np.isfinite(ref)).sum()) if ref.dtype.kind in "fc" else 0,
        )
        if cand.shape != ref.shape or cand.dtype != ref.dtype:
            return cls(**base, max_abs_error=math.inf, max_rel_error=math.inf,
                       rel_l2_error=math.inf, argmax_agreement=None,
                       min_passing_atol=math.inf, noise=None, oracle_error=None,
                       noise_ratio=None, passed=False,
                       reason=f"shape/dtype {list(cand.shape)} {cand.dtype} != reference "
                       f"{list(ref.shape)} {ref.dtype}")
        c64, r64 = cand.astype(np.float64), ref.astype(np.float64)
        finite = np.isfinite(c64) & np.isfinite(r64)
        diff = np.abs(np.where(finite, c64, 0.0) - np.where(finite, r64, 0.0))
        mag = np.where(finite, np.abs(r64), 0.0)
        # a relative error near a zero reference means nothing; floor the denominator at a
        # millionth of the tensor's own scale
        floor = max(float(mag.max(initial=0.0)) * 1e-6, 1e-30)
        max_rel = float((diff / np.maximum(mag, floor)).max(initial=0.0))
        rel_l2 = float(np.linalg.norm(diff) / max(float(np.linalg.norm(mag)), 1e-30))
        noise = oracle_error = ratio = None
        if oracle is not None and np.shape(oracle) == ref.shape:
            o64 = np.asarray(oracle, dtype=np.float64)
            ok = finite & np.isfinite(o64)
            noise = float(np.linalg.norm(np.where(ok, r64, 0.0) - np.where(ok, o64, 0.0)))
            oracle_error = float(np.linalg.norm(np.where(ok, c64, 0.0) - np.where(ok, o64, 0.0)))
            unit = max(noise, UNIT_ROUNDOFF * float(np.linalg.norm(np.where(ok, o64, 0.0))))
            ratio = oracle_error / unit if unit > 0 else (0.0 if oracle_error == 0 else math.inf)
        atol, rtol = tolerance.bound
        min_atol = float(np.maximum(diff - rtol * mag, 0.0).max(initial=0.0))
        nonfinite = base["nan_count"] + base["inf_count"] + base["ref_nonfinite"]
        reasons = []
        if nonfinite:
            reasons.append(f"{base['nan_count']} NaN and {base['inf_count']} Inf in the output, "
                           f"{base['ref_nonfinite']} NaN/Inf in the reference")
        if tolerance.elementwise and min_atol > atol:
            reasons.append(f"max abs error {float(diff.max()):.3g} over atol={atol:g} "
                           f"rtol={rtol:g}")
        return cls(**base, max_abs_error=float(diff.max(initial=0.0)), max_rel_error=max_rel,
                   rel_l2_error=rel_l2, argmax_agreement=_argmax_agreement(c64, r64),
                   min_passing_atol=min_atol, noise=noise, oracle_error=oracle_error,
                   noise_ratio=ratio, passed=not reasons, reason="; ".join(reasons))


def _argmax_agreement(cand: np.ndarray, ref: np.ndarray) -> float | None:
    """Fraction of rows whose argmax agrees, for 2-D (batch, classes) outputs; else None."""
    if cand.ndim != 2 or cand.shape[1] < 2 or cand.shape[0] == 0:
        return None
    return float((np.argmax(cand, axis=1) == np.argmax(ref, axis=1)).mean())
