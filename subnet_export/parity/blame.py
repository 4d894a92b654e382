"""Which failing module output to blame: the one where the error enters.

Every module output is judged, and the one blamed is where the error *enters*, not merely the
first over the rule: a reduction (a global pool, a mean) that onnxruntime sums in another order
than torch can sit a little over the noise rule on some CPUs, and a fault planted after it must
still be named. A failing output scores its noise ratio over the largest ratio of the outputs
finished before it (at least 1): a fault jumps by orders of magnitude, its echoes downstream do
not, and a blip is outscored by any real fault after it. NaN/Inf, an elementwise-rule failure or
a dtype-dependent reference score infinitely; ties go to the earliest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .comparison import OutputComparison
from .rule import Tolerance, describe_failure, noise_check

__all__ = ["Finding", "blame", "judge"]


class Finding(NamedTuple):
    """One module output's judgement, in the order modules finish."""

    path: str
    tensor: str
    ratio: float  # the noise ratio; 0 when no noise rule applies
    failure: tuple[str, float, int] | None  # (why, max abs error, NaN/Inf count) when it fails


def judge(cand: np.ndarray, ref: np.ndarray, orc: np.ndarray | None,
          tolerance: Tolerance) -> tuple[float, tuple[str, float, int] | None]:
    """One module output's noise ratio, and why it diverges (None when it agrees).

    The same rules as the verdict, on one tensor: NaN/Inf, the elementwise bound when the
    tolerance sets one, and the noise rule against this module's own float64 output. The
    failure is ``(why, max abs error, NaN/Inf count)``; the ratio is infinite for a failure
    the noise ratio does not measure.
    """
    cmp = OutputComparison.from_arrays("", "", cand, ref, tolerance)
    bad = cmp.nan_count + cmp.inf_count + cmp.ref_nonfinite
    if bad:
        return math.inf, (f"{bad} NaN/Inf in its output", cmp.max_abs_error, bad)
    if not cmp.passed:
        return math.inf, (cmp.reason, cmp.max_abs_error, 0)
    if tolerance.noise_factor is None:
        return 0.0, None
    check = noise_check("", [cand], [ref], None if orc is None else [orc], tolerance.noise_factor)
    if check.passed:
        return check.ratio, None
    ratio = check.ratio if check.ratio > check.factor else math.inf  # the reference's own fault
    return ratio, (f"{describe_failure(check)}, max abs {cmp.max_abs_error:.3g}",
                   cmp.max_abs_error, 0)


def blame(findings: Sequence[Finding]) -> Finding | None:
    """The failing output where the error enters; None if none fails.

    Each failing output scores ``ratio / max(1, largest ratio finished before it)``; the
    highest score is blamed, the earliest among equals.
    """
    best: Finding | None = None
    best_score = -1.0
    before = 1.0
    for found in findings:
        if found.failure is not None:
            score = math.inf if math.isinf(found.ratio) else found.ratio / before
            if score > best_score:
                best, best_score = found, score
        if not math.isnan(found.ratio):
            before = max(before, found.ratio)
    return best
