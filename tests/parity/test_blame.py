"""blame: the failing module output where the error enters, not merely the first over the rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

import subnet_export as se
from subnet_export.parity.blame import Finding, blame, judge
from subnet_export.parity.rule import tolerance_for

RULE = tolerance_for("ort-cpu", se.Tolerance())  # the default rule as locate applies it

FAIL = ("over the rule", 1e-3, 0)


def _f(path: str, ratio: float, failed: bool | None = None) -> Finding:
    """A finding with the default rule (noise x4): it fails above 4 unless told otherwise."""
    failed = ratio > 4 if failed is None else failed
    return Finding(path, f"{path}_out", ratio, FAIL if failed else None)


def test_a_reduction_blip_before_a_fault_does_not_take_the_blame():
    # a global pool summed in another order sits at 4.2x; the planted fault after it is 1e7x
    findings = [_f("stem", 1.3), _f("pool", 4.2), _f("head", 1.2e7)]
    assert blame(findings).path == "head"


def test_echoes_of_a_fault_downstream_are_not_blamed():
    findings = [_f("blocks.0", 1.1), _f("blocks.1.conv", 3e5), _f("blocks.1", 3e5),
                _f("blocks.2", 9e5), _f("head", 2e6)]
    assert blame(findings).path == "blocks.1.conv"


def test_a_lone_failure_is_blamed_and_none_when_all_pass():
    assert blame([_f("a", 1.0), _f("b", 50.0), _f("c", 2.0, failed=False)]).path == "b"
    assert blame([_f("a", 1.0), _f("b", 3.9)]) is None
    assert blame([]) is None


def test_nan_and_elementwise_failures_win_and_ties_go_to_the_earliest():
    findings = [_f("a", 1.0), _f("b", math.inf, failed=True), _f("c", 1e9),
                _f("d", math.inf, failed=True)]
    assert blame(findings).path == "b"
    assert blame([_f("x", 8.0), _f("y", 8.0)]).path == "x"


@pytest.mark.parametrize("fault", [0.0, 1e-2])
def test_judge_measures_the_noise_ratio_of_one_output(fault):
    rng = np.random.default_rng(0)
    orc = rng.standard_normal((4, 16))
    ref = orc.astype(np.float32)
    cand = (ref + np.float32(fault)).astype(np.float32)
    ratio, failure = judge(cand, ref, orc, RULE)
    if fault:
        assert ratio > 1e3 and failure is not None and failure[1] == pytest.approx(fault, rel=1e-3)
    else:
        assert ratio <= 1.0 and failure is None


def test_judge_scores_nan_infinitely():
    ref = np.ones((2, 3), np.float32)
    cand = ref.copy()
    cand[0, 0] = np.nan
    ratio, failure = judge(cand, ref, ref.astype(np.float64), RULE)
    assert math.isinf(ratio) and failure is not None and failure[2] == 1
