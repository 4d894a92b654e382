"""The verdict rule: error against the float64 oracle in units of the float32 noise floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from subnet_export.parity.comparison import OutputComparison
from subnet_export.parity.report import BackendResult
from subnet_export.parity.rule import (
    DEFAULT_NOISE_FACTOR,
    DEFAULT_NOISE_FACTORS,
    UNIT_ROUNDOFF,
    Tolerance,
    noise_check,
    tolerance_for,
)

FACTOR = 4.0


def _noisy(oracle: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """``oracle`` plus an independent error of L2 norm ``scale * ||oracle||``."""
    e = np.random.default_rng(seed).standard_normal(oracle.shape)
    return oracle + e / np.linalg.norm(e) * scale * np.linalg.norm(oracle)


@pytest.fixture
def oracle() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((8, 10))


def test_a_backend_as_accurate_as_the_reference_passes_whatever_the_magnitude(oracle):
    # a badly conditioned net: both float32 paths are 1e-4 (relative) from float64, far over
    # any fixed atol, and the candidate is exactly as good as the reference
    ref, cand = _noisy(oracle, 1e-4, 1), _noisy(oracle, 1e-4, 2)
    check = noise_check("y", [cand], [ref], [oracle], FACTOR)
    assert np.abs(cand - ref).max() > 1e-5
    assert check.passed and check.ratio == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(("times", "passes"), [(0.5, True), (3.0, True), (3.99, True),
                                               (4.01, False), (10.0, False), (300.0, False)])
def test_the_factor_is_the_boundary(oracle, times, passes):
    ref, cand = _noisy(oracle, 1e-6, 1), _noisy(oracle, times * 1e-6, 2)
    check = noise_check("y", [cand], [ref], [oracle], FACTOR)
    assert check.ratio == pytest.approx(times, rel=1e-6)
    assert check.passed is passes


def test_a_small_fault_on_a_well_conditioned_output_fails(oracle):
    # what a fixed atol=1e-5, rtol=1e-4 lets through: 20x this reference's noise
    ref, cand = _noisy(oracle, 1e-7, 1), _noisy(oracle, 2e-6, 2)
    assert np.allclose(cand, ref, atol=1e-5, rtol=1e-4)
    check = noise_check("y", [cand], [ref], [oracle], FACTOR)
    assert not check.passed and check.ratio > 10


def test_the_floor_is_one_rounding_when_the_reference_is_exact(oracle):
    check = noise_check("y", [_noisy(oracle, 2 * UNIT_ROUNDOFF, 2)], [oracle], [oracle], FACTOR)
    assert check.noise == 0.0
    assert check.floor == pytest.approx(UNIT_ROUNDOFF * np.linalg.norm(oracle))
    assert check.passed and check.ratio == pytest.approx(2.0, rel=1e-6)
    worse = noise_check("y", [_noisy(oracle, 10 * UNIT_ROUNDOFF, 2)], [oracle], [oracle], FACTOR)
    assert not worse.passed


def test_input_sets_are_pooled(oracle):
    small = oracle[:1]
    refs = [_noisy(small, 1e-6, 1), _noisy(oracle, 1e-6, 2)]
    cands = [_noisy(small, 6e-6, 3), _noisy(oracle, 1e-6, 4)]
    check = noise_check("y", cands, refs, [small, oracle], FACTOR)
    err = math.sqrt(sum(np.sum((c - o) ** 2) for c, o in zip(cands, [small, oracle])))
    noise = math.sqrt(sum(np.sum((r - o) ** 2) for r, o in zip(refs, [small, oracle])))
    assert check.error == pytest.approx(err) and check.noise == pytest.approx(noise)
    assert check.elements == small.size + oracle.size
    # one small set far off alone, yet the whole output within the noise
    alone = noise_check("y", cands[:1], refs[:1], [small], FACTOR)
    assert not alone.passed and check.passed


def test_integer_outputs_must_be_equal():
    ref = np.arange(6, dtype=np.int64)
    assert noise_check("i", [ref.copy()], [ref], [ref.astype(np.float64)], FACTOR).passed
    off = ref.copy()
    off[2] += 1
    check = noise_check("i", [off], [ref], [ref.astype(np.float64)], FACTOR)
    assert not check.passed and check.ratio == math.inf


def test_without_an_oracle_only_the_rounding_floor_is_allowed(oracle):
    ref = oracle.astype(np.float32)
    cand = (oracle * (1 + 1e-5)).astype(np.float32)
    check = noise_check("y", [cand], [ref], None, FACTOR)
    assert check.noise == 0.0 and not check.passed


def test_explicit_atol_rtol_means_elementwise_and_nothing_else(oracle):
    ref = oracle.astype(np.float32)
    cand = ref + np.float32(5e-4)
    loose = Tolerance(atol=1e-3)
    assert loose.elementwise and loose.noise_factor is None and loose.bound == (1e-3, 0.0)
    assert OutputComparison.from_arrays("y", "b8", cand, ref, loose, oracle=oracle).passed
    tight = OutputComparison.from_arrays("y", "b8", cand, ref, Tolerance(atol=1e-4),
                                         oracle=oracle)
    assert not tight.passed and "atol=0.0001" in tight.reason
    assert tight.min_passing_atol == pytest.approx(5e-4, rel=1e-3)
    relative = OutputComparison.from_arrays("y", "b8", ref * np.float32(1 + 1e-4), ref,
                                            Tolerance(rtol=2e-4), oracle=oracle)
    assert relative.passed


def test_backend_verdict_applies_every_rule(oracle):
    ref = _noisy(oracle, 1e-6, 1).astype(np.float32)
    good = _noisy(oracle, 1e-6, 2).astype(np.float32)
    bad = _noisy(oracle, 1e-4, 3).astype(np.float32)

    def judge(cand, tol):
        return BackendResult.judge("ort-cpu", tol, ["random-b8"], [[cand]], [[ref]], [[oracle]],
                                   ["logits"])

    assert judge(good, tolerance_for("ort-cpu", None)).status == "passed"
    failed = judge(bad, tolerance_for("ort-cpu", None))
    assert failed.status == "failed" and "noise floor" in failed.reason
    assert failed.noise[0].output == "logits" and not failed.noise[0].passed
    # both rules: the elementwise one is loose, the noise rule still bites
    both = judge(bad, Tolerance(atol=1.0, noise_factor=FACTOR))
    assert both.status == "failed" and len(both.noise) == 1
    # elementwise only: no noise check at all
    assert judge(bad, Tolerance(atol=1.0)).status == "passed"
    assert judge(bad, Tolerance(atol=1.0)).noise == []


def test_nan_fails_whatever_the_rule(oracle):
    ref = oracle.astype(np.float32)
    cand = ref.copy()
    cand[0, 3] = np.nan
    result = BackendResult.judge("ort-cpu", Tolerance(atol=1.0), ["b8"], [[cand]], [[ref]],
                                 [[oracle]], ["y"])
    assert result.status == "failed" and "NaN" in result.reason
    assert result.comparisons[0].nan_count == 1


def test_defaults_and_overrides():
    assert tolerance_for("ort-cpu", None) == Tolerance(noise_factor=DEFAULT_NOISE_FACTOR)
    assert tolerance_for("ort-cuda", Tolerance()).noise_factor == DEFAULT_NOISE_FACTORS["ort-cuda"]
    assert tolerance_for("ort-new", None).noise_factor == DEFAULT_NOISE_FACTOR
    given = Tolerance(1e-5, 1e-4)
    assert tolerance_for("ort-cpu", given) is given
    assert tolerance_for("ort-cpu", {"torch-cpu": given}).noise_factor == DEFAULT_NOISE_FACTOR
    assert Tolerance(noise_factor=2).describe() == "noise x2"
    assert Tolerance(1e-5, 0).describe() == "atol=1e-05 rtol=0"
    for bad in (dict(atol=-1.0), dict(rtol=float("nan")), dict(noise_factor=float("inf"))):
        with pytest.raises(ValueError, match="finite number >= 0"):
            Tolerance(**bad)


def test_a_reference_far_from_its_own_oracle_fails_every_candidate(oracle):
    # a dtype-dependent code path: float32 and float64 disagree by far more than rounding, and
    # the floor that gives must not hide a candidate's fault
    ref = _noisy(oracle, 1e-2, 1)
    check = noise_check("y", [_noisy(oracle, 1e-2, 2)], [ref], [oracle], FACTOR)
    assert check.ratio < FACTOR and not check.passed
    result = BackendResult.judge("ort-cpu", Tolerance(noise_factor=FACTOR), ["b8"],
                                 [[_noisy(oracle, 1e-2, 2)]], [[ref]], [[oracle]], ["y"])
    assert result.status == "failed" and "more than rounding explains" in result.reason
