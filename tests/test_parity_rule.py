"""The verdict rule: atol + rtol * |ref|, plus the reference's own float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest

from subnet_export.parity import OutputComparison, Tolerance

TOL = Tolerance(atol=1e-6, rtol=0.0, rounding_slack=2.0)


def _arrays(ref_error: float, cand_error: float):
    oracle = np.linspace(-1.0, 1.0, 16)
    reference = (oracle + ref_error).astype(np.float32)
    candidate = (oracle - cand_error).astype(np.float32)
    return candidate, reference, oracle


def test_backend_as_accurate_as_the_reference_passes():
    # reference 1e-4 and candidate 0.8e-4 from float64, in opposite directions: 1.8e-4 apart,
    # far over atol, all of it explained by rounding
    cand, ref, oracle = _arrays(1e-4, 0.8e-4)
    c = OutputComparison.from_arrays("y", "x", cand, ref, TOL, oracle=oracle)
    assert c.max_abs_error > 100 * TOL.atol
    assert c.passed, c.reason
    assert c.min_passing_atol == 0.0


def test_backend_worse_than_rounding_fails():
    cand, ref, oracle = _arrays(1e-5, 1e-3)
    c = OutputComparison.from_arrays("y", "x", cand, ref, TOL, oracle=oracle)
    assert not c.passed and "max abs error" in c.reason
    assert c.min_passing_atol > 0.0


@pytest.mark.parametrize("oracle", [False, True])
def test_zero_slack_is_the_plain_rule(oracle):
    cand, ref, orc = _arrays(1e-4, 1e-4)
    strict = Tolerance(atol=1e-6, rtol=0.0, rounding_slack=0.0)
    c = OutputComparison.from_arrays("y", "x", cand, ref, strict,
                                     oracle=orc if oracle else None)
    assert not c.passed


def test_nan_fails_whatever_the_allowance():
    cand, ref, oracle = _arrays(1e-4, 1e-4)
    cand[3] = np.nan
    c = OutputComparison.from_arrays("y", "x", cand, ref, TOL, oracle=oracle)
    assert not c.passed and c.nan_count == 1
