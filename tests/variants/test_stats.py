"""subnet_export.variants.stats: the statistics, limits and JSON form of an edge variant's parity.

numpy only: every expected value is computed here by hand or analytically.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from subnet_export.errors import InputError
from subnet_export.variants.stats import (
    DEFAULT_LIMITS,
    LIMIT_KEYS,
    OutputStats,
    VariantLimits,
    format_stats,
    output_stats,
    parse_limits,
    stats_from_json,
)

# ---------------------------------------------------------------------------------------------
# output_stats


def _scaled_noise(reference: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Noise whose total power is exactly ``sum(reference**2) / 10**(snr_db / 10)``."""
    noise = np.random.default_rng(seed).standard_normal(reference.shape)
    noise *= math.sqrt(np.sum(reference ** 2) / 10 ** (snr_db / 10) / np.sum(noise ** 2))
    return noise


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 23.5, 60.0])
def test_snr_of_exactly_scaled_noise(snr_db):
    r = np.random.default_rng(1).standard_normal((40, 10))
    v = r + _scaled_noise(r, snr_db, 2)
    s = output_stats("y", r.astype(np.float32), v.astype(np.float32))
    assert s.snr_db == pytest.approx(snr_db, abs=0.1)


def test_snr_of_random_noise_matches_the_power_ratio():
    # E[r^2] = 4, E[n^2] = 0.04: 20 dB; 200k elements make the estimate good to ~0.02 dB
    rng = np.random.default_rng(3)
    r = 2.0 * rng.standard_normal((2000, 100))
    v = r + 0.2 * rng.standard_normal(r.shape)
    s = output_stats("y", r, v)
    assert s.snr_db == pytest.approx(20.0, abs=0.1)
    assert s.samples == 2000
    assert s.finite


def test_snr_and_cosine_of_a_scaled_candidate():
    r = np.random.default_rng(4).standard_normal((8, 12))
    s = output_stats("y", r, 2 * r)  # the error equals the signal: 0 dB, the direction kept
    assert s.snr_db == pytest.approx(0.0, abs=1e-9)
    assert s.cosine == pytest.approx(1.0, abs=1e-12)
    neg = output_stats("y", r, -r)
    assert neg.cosine == pytest.approx(-1.0, abs=1e-12)
    assert neg.snr_db == pytest.approx(10 * math.log10(1 / 4), abs=1e-9)


def test_identical_outputs():
    r = np.random.default_rng(5).standard_normal((16, 10)).astype(np.float32)
    s = output_stats("logits", r, r.copy())
    assert s.snr_db == math.inf
    assert s.cosine == pytest.approx(1.0, abs=1e-12)
    assert s.max_abs_error == 0.0 and s.mean_abs_error == 0.0
    assert s.top1_agreement == 1.0 and s.top5_agreement == 1.0
    assert s.finite
    assert VariantLimits(cosine_min=0.9999, snr_db_min=200,
                         top1_agreement_min=1.0).failures(s) == []


def test_cosine_is_the_mean_over_samples():
    r = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    v = np.array([[0.0, 3.0], [5.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    # orthogonal, parallel, 45 degrees, both zero (counted as equal)
    expected = (0.0 + 1.0 + 1 / math.sqrt(2) + 1.0) / 4
    assert output_stats("y", r, v).cosine == pytest.approx(expected, abs=1e-12)


def test_cosine_of_a_zero_reference_row_against_a_nonzero_one_is_zero():
    r = np.array([[0.0, 0.0], [1.0, 2.0]])
    v = np.array([[0.5, 0.0], [1.0, 2.0]])
    assert output_stats("y", r, v).cosine == pytest.approx(0.5, abs=1e-12)


def test_abs_errors():
    r = np.zeros((4, 3))
    v = r.copy()
    v[0, 0], v[2, 1], v[3, 2] = 0.5, -2.0, 1.5
    s = output_stats("y", r, v)
    assert s.max_abs_error == pytest.approx(2.0)
    assert s.mean_abs_error == pytest.approx(4.0 / 12)
    assert s.snr_db == -math.inf  # no signal at all, but an error


def _clear_logits(n: int, c: int, seed: int) -> np.ndarray:
    """Logits whose argmax leads the runner-up by at least 5 (noise below cannot flip it)."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-1, 1, (n, c))
    logits[np.arange(n), rng.integers(0, c, n)] += 5.0
    return logits


def test_top1_agreement_counts_planted_flips_exactly():
    n, c, flips = 50, 10, 7
    r = _clear_logits(n, c, 6)
    v = r + 0.01 * np.random.default_rng(7).standard_normal(r.shape)
    top = r.argmax(axis=1)
    for i in range(flips):  # the runner-up class becomes the candidate's winner
        other = (top[i] + 1) % c
        v[i, other] = v[i, top[i]] + 1.0
    s = output_stats("logits", r, v)
    assert s.top1_agreement == pytest.approx((n - flips) / n, abs=1e-12)
    assert s.top5_agreement == 1.0  # a flipped sample still has its class among the top 5


def test_top5_agreement_counts_samples_whose_class_leaves_the_top5():
    n, c, dropped = 40, 10, 3
    r = _clear_logits(n, c, 8)
    v = r.copy()
    top = r.argmax(axis=1)
    for i in range(dropped):  # the reference class becomes the candidate's smallest logit
        v[i, top[i]] = v[i].min() - 1.0
    s = output_stats("logits", r, v)
    assert s.top5_agreement == pytest.approx((n - dropped) / n, abs=1e-12)
    assert s.top1_agreement == pytest.approx((n - dropped) / n, abs=1e-12)


@pytest.mark.parametrize("classes, has_top5", [(2, False), (5, False), (6, True), (1000, True)])
def test_top5_only_beyond_five_classes(classes, has_top5):
    r = _clear_logits(12, classes, 9)
    s = output_stats("logits", r, r + 1e-3)
    assert s.top1_agreement == 1.0
    assert (s.top5_agreement is not None) == has_top5


@pytest.mark.parametrize("shape", [(6, 1), (6,), (6, 3, 4), (6, 8, 4, 4)])
def test_non_logits_outputs_have_no_agreement(shape):
    r = np.random.default_rng(10).standard_normal(shape).astype(np.float32)
    s = output_stats("features", r, r * 1.01)
    assert s.top1_agreement is None and s.top5_agreement is None
    assert s.samples == 6
    assert s.snr_db == pytest.approx(40.0, abs=1e-3)  # the error is 1% of the signal
    # agreement bounds do not apply to such an output
    strict = VariantLimits(top1_agreement_min=1.0, top5_agreement_min=1.0)
    assert strict.failures(s) == []


def test_integer_outputs_are_not_logits():
    r = np.arange(20, dtype=np.int64).reshape(4, 5)
    s = output_stats("ids", r, r)
    assert s.top1_agreement is None and s.top5_agreement is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_candidate(bad):
    r = np.random.default_rng(11).standard_normal((5, 10)).astype(np.float32)
    v = r.copy()
    v[3, 2] = bad
    s = output_stats("logits", r, v)
    assert not s.finite
    assert s.samples == 5
    assert s.snr_db == -math.inf and math.isnan(s.cosine)
    failures = VariantLimits().failures(s)  # even without bounds, NaN fails
    assert len(failures) == 1
    assert "NaN" in failures[0] and failures[0].startswith("logits:")
    assert DEFAULT_LIMITS["int8"].margin_db(s) == -math.inf


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="'y'.*expected"):
        output_stats("y", np.zeros((4, 10)), np.zeros((4, 9)))


# ---------------------------------------------------------------------------------------------
# VariantLimits.failures


def _stats(**kw) -> OutputStats:
    base = dict(output="out", samples=100, cosine=0.995, snr_db=30.0, max_abs_error=0.2,
                mean_abs_error=0.01, top1_agreement=0.99, top5_agreement=1.0)
    return OutputStats(**{**base, **kw})


def test_failures_empty_when_every_bound_holds():
    limits = VariantLimits(cosine_min=0.99, snr_db_min=20, top1_agreement_min=0.98,
                           top5_agreement_min=0.99, max_abs_error_max=0.5)
    assert limits.failures(_stats()) == []


@pytest.mark.parametrize("field, value, limit, bound", [
    ("cosine", 0.95, "cosine_min", 0.99),
    ("snr_db", 12.5, "snr_db_min", 20.0),
    ("top1_agreement", 0.9, "top1_agreement_min", 0.98),
    ("top5_agreement", 0.95, "top5_agreement_min", 0.99),
    ("max_abs_error", 0.7, "max_abs_error_max", 0.5),
])
def test_each_bound_fails_alone_and_is_named(field, value, limit, bound):
    limits = VariantLimits(**{limit: bound})
    failures = limits.failures(_stats(**{field: value}))
    assert len(failures) == 1
    assert failures[0].startswith("out: ") and field in failures[0]
    assert (">" if limit.endswith("_max") else "<") in failures[0]
    # the same statistics meet every other bound alone
    for other in LIMIT_KEYS:
        if other != limit:
            loose = -1e9 if other.endswith("_min") else 1e9
            assert VariantLimits(**{other: loose}).failures(_stats(**{field: value})) == []


def test_bound_met_exactly_passes():
    s = _stats(cosine=0.99, snr_db=20.0, top1_agreement=0.98, max_abs_error=0.5)
    limits = VariantLimits(cosine_min=0.99, snr_db_min=20.0, top1_agreement_min=0.98,
                           max_abs_error_max=0.5)
    assert limits.failures(s) == []


def test_several_failures_are_all_reported():
    s = _stats(cosine=0.5, snr_db=3.0, top1_agreement=0.5)
    failures = DEFAULT_LIMITS["int8"].failures(s)
    assert [f.split()[1] for f in failures] == ["cosine", "snr_db", "top1_agreement"]


def test_no_bounds_no_failures():
    assert VariantLimits().failures(_stats(cosine=-1.0, snr_db=-50.0, top1_agreement=0.0)) == []


def test_missing_agreement_skips_its_bound():
    s = _stats(top1_agreement=None, top5_agreement=None)
    assert DEFAULT_LIMITS["int8"].failures(s) == []


def test_margin_db():
    limits = VariantLimits(snr_db_min=20.0)
    assert limits.margin_db(_stats(snr_db=26.5)) == pytest.approx(6.5)
    assert limits.margin_db(_stats(snr_db=math.inf)) == math.inf
    assert VariantLimits().margin_db(_stats(snr_db=-5.0)) == math.inf


def test_default_limits_are_stricter_for_fp16():
    fp16, int8 = DEFAULT_LIMITS["fp16"], DEFAULT_LIMITS["int8"]
    for key in ("cosine_min", "snr_db_min", "top1_agreement_min", "top5_agreement_min"):
        assert getattr(fp16, key) > getattr(int8, key)


# ---------------------------------------------------------------------------------------------
# parse_limits


def test_parse_limits_without_overrides_is_the_defaults():
    assert parse_limits([], ["fp16", "int8"]) == DEFAULT_LIMITS
    assert parse_limits([], ["int8"]) == {"int8": DEFAULT_LIMITS["int8"]}
    assert parse_limits([], []) == {}


def test_parse_limits_overrides():
    limits = parse_limits(["int8.snr_db_min=25", " int8.cosine_min = 0.95 ",
                           "fp16.max_abs_error_max=1e-2", "int8.snr_db_min=27.5"],
                          ["fp16", "int8"])
    assert limits["int8"] == VariantLimits(cosine_min=0.95, snr_db_min=27.5,
                                           top1_agreement_min=0.98, top5_agreement_min=0.99)
    assert limits["fp16"].max_abs_error_max == pytest.approx(0.01)
    assert limits["fp16"].snr_db_min == DEFAULT_LIMITS["fp16"].snr_db_min
    # the defaults themselves are untouched
    assert DEFAULT_LIMITS["int8"].snr_db_min == 20.0
    assert DEFAULT_LIMITS["fp16"].max_abs_error_max is None


@pytest.mark.parametrize("none", ["none", "None", "NONE", " none "])
def test_parse_limits_none_drops_a_bound(none):
    limits = parse_limits([f"int8.top1_agreement_min={none}"], ["int8"])
    assert limits["int8"].top1_agreement_min is None
    assert limits["int8"].snr_db_min == DEFAULT_LIMITS["int8"].snr_db_min
    # the dropped bound no longer fails a variant
    assert limits["int8"].failures(_stats(top1_agreement=0.1)) == []
    assert DEFAULT_LIMITS["int8"].failures(_stats(top1_agreement=0.1)) != []


@pytest.mark.parametrize("entry", [
    "int8.snr_db_min",  # no value
    "snr_db_min=3",  # no kind
    "int4.snr_db_min=3",  # no such kind
    "fp16.snr_db_min=3",  # a kind not asked for
    "int8.snr_db=3",  # no such key
    "int8.=3",
    "int8.snr_db_min=abc",
    "int8.snr_db_min=",
    "int8.snr_db_min=inf",
    "int8.snr_db_min=-inf",
    "int8.snr_db_min=nan",
])
def test_parse_limits_bad_entry_is_named(entry):
    with pytest.raises(InputError) as info:
        parse_limits(["int8.cosine_min=0.9", entry], ["int8"])
    assert repr(entry) in str(info.value)


def test_parse_limits_bad_entry_lists_the_keys():
    with pytest.raises(InputError, match="snr_db_min") as info:
        parse_limits(["int8.snr=3"], ["int8"])
    assert all(key in str(info.value) for key in LIMIT_KEYS)


# ---------------------------------------------------------------------------------------------
# JSON


def test_to_json_round_trip():
    r = np.random.default_rng(12).standard_normal((20, 10)).astype(np.float32)
    s = output_stats("logits", r, r + np.float32(0.01))
    data = json.loads(json.dumps(s.to_json(), allow_nan=False))
    assert stats_from_json(data) == s


def test_to_json_round_trip_of_an_infinite_snr():
    r = np.random.default_rng(13).standard_normal((4, 3, 2, 2)).astype(np.float32)
    s = output_stats("features", r, r.copy())
    assert s.snr_db == math.inf
    text = json.dumps(s.to_json(), allow_nan=False)
    assert json.loads(text)["snr_db"] == "inf"
    back = stats_from_json(json.loads(text))
    assert back == s and back.snr_db == math.inf and back.top1_agreement is None


def test_to_json_round_trip_of_a_non_finite_candidate():
    r = np.ones((3, 10), np.float32)
    v = r.copy()
    v[0, 0] = np.nan
    s = output_stats("logits", r, v)
    data = json.loads(json.dumps(s.to_json(), allow_nan=False))
    back = stats_from_json(data)
    assert not back.finite and math.isnan(back.cosine)
    assert back.snr_db == -math.inf and back.max_abs_error == math.inf
    assert back.samples == 3 and back.output == "logits"


def test_stats_from_json_ignores_unknown_keys():
    s = _stats()
    assert stats_from_json({**s.to_json(), "added_later": 1}) == s


def test_limits_to_json():
    data = DEFAULT_LIMITS["int8"].to_json()
    assert set(data) == set(LIMIT_KEYS)
    assert VariantLimits(**json.loads(json.dumps(data, allow_nan=False))) == DEFAULT_LIMITS["int8"]


def test_format_stats_verdicts():
    ok, bad = _stats(), _stats(output="y", snr_db=math.inf, top5_agreement=None)
    lines = format_stats([("int8", "judged", ok, []), ("int8", "judged", bad, ["x"]),
                          ("fp16", "random", ok, None)])
    assert len(lines) == 4
    assert lines[1].endswith("ok") and lines[2].endswith("FAIL") and lines[3].endswith("-")
    assert " inf " in lines[2]
