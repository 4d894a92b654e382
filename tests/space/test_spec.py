"""ParameterSpec: sizes, values, validation (types kept apart) and JSON form."""

from __future__ import annotations

import itertools
import math

import pytest

import subnet_export as se
from subnet_export.space.spec import SPEC_KINDS


def test_value_spec_size_values_and_json() -> None:
    spec = se.ParameterSpec("w", "value", (16, 24, 32))
    assert spec.size == 3
    assert spec.values() == [16, 24, 32]
    assert spec.to_json() == {"kind": "value", "candidates": [16, 24, 32], "size": 3}
    assert "16" in spec.describe() and "32" in spec.describe()


@pytest.mark.parametrize(("n", "chosen"), [(3, 1), (4, 2), (5, 3), (3, 3)])
def test_input_spec_enumerates_combinations(n: int, chosen: int) -> None:
    spec = se.ParameterSpec("skip", "input", tuple(range(n)), chosen)
    assert spec.size == math.comb(n, chosen)
    values = spec.values()
    assert len(values) == spec.size
    assert all(len(v) == chosen and v == sorted(v) for v in values)
    assert {tuple(v) for v in values} == set(itertools.combinations(range(n), chosen))
    assert spec.to_json()["n_chosen"] == chosen


@pytest.mark.parametrize(("candidates", "value"), [
    ((16, 24), 24), ((0.5, 1.0), 1.0), (("a", "b"), "b"), ((True, False), False),
])
def test_validate_returns_the_candidate(candidates, value) -> None:
    spec = se.ParameterSpec("x", "value", candidates)
    out = spec.validate(value)
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize(("candidates", "value", "why"), [
    ((16, 24), 32, "not a candidate"),
    ((16, 24), "24", "wrong type"),
    ((16, 24), 24.0, "wrong type"),
    ((16, 24), True, "wrong type"),
    ((0, 1), False, "wrong type"),
    ((0.5, 1.0), 1, "wrong type"),
    ((True, False), 1, "wrong type"),
    (("conv", "skip"), None, "wrong type"),
])
def test_validate_refuses_with_label_and_candidates(candidates, value, why) -> None:
    spec = se.ParameterSpec("blk.op", "value", candidates)
    with pytest.raises(se.ArchError) as info:
        spec.validate(value)
    msg = str(info.value)
    assert info.value.label == "blk.op"
    assert "'blk.op'" in msg and why in msg
    assert str(list(candidates)) in msg


def test_input_validate_sorts() -> None:
    spec = se.ParameterSpec("skip", "input", (0, 1, 2, 3), 2)
    assert spec.validate([3, 1]) == [1, 3]
    assert spec.validate((2, 0)) == [0, 2]


@pytest.mark.parametrize("value", [
    [0], [0, 1, 2], [1, 1], [0, 4], [-1, 0], [0, True], [0.0, 1], "01", 1, None,
])
def test_input_validate_refuses(value) -> None:
    spec = se.ParameterSpec("skip", "input", (0, 1, 2, 3), 2)
    with pytest.raises(se.ArchError) as info:
        spec.validate(value)
    assert info.value.label == "skip"
    assert "'skip'" in str(info.value) and "[0, 1, 2, 3]" in str(info.value)


def test_kinds() -> None:
    assert set(SPEC_KINDS) == {"value", "layer", "input", "depth"}


def test_spec_is_frozen_and_comparable() -> None:
    a = se.ParameterSpec("w", "value", (1, 2))
    assert a == se.ParameterSpec("w", "value", (1, 2))
    assert a != se.ParameterSpec("w", "depth", (1, 2))
    with pytest.raises(AttributeError):
        a.label = "v"  # type: ignore[misc]


# -- tuple candidates, NNI's input choices, priors ------------------------------------------------
def test_tuple_candidates_take_json_lists() -> None:
    spec = se.ParameterSpec("shape", "value", ((6, 3), (8, 5)))
    assert spec.validate([8, 5]) == (8, 5) and spec.validate((6, 3)) == (6, 3)
    assert spec.to_json()["candidates"] == [(6, 3), (8, 5)]
    for bad in ([8, 5.0], [8], 8, [6, True]):
        with pytest.raises(se.ArchError):
            spec.validate(bad)


def test_bare_input_spec_is_an_index() -> None:
    spec = se.ParameterSpec("skip", "input", (0, 1, 2), 1, bare=True)
    assert spec.values() == [0, 1, 2] and spec.size == 3
    assert spec.validate(2) == 2 and spec.validate([1]) == 1
    for bad in ([0, 1], 3, True, [], "1"):
        with pytest.raises(se.ArchError):
            spec.validate(bad)
    assert spec.to_json()["bare"] is True


def test_any_number_input_spec() -> None:
    spec = se.ParameterSpec("pick", "input", (0, 1, 2), None)
    assert spec.size == 7 and len(spec.values()) == 7 and [0, 1, 2] in spec.values()
    assert spec.validate([2, 0]) == [0, 2] and spec.validate(1) == [1]
    assert spec.to_json()["n_chosen"] is None and "any number" in spec.describe()
    for bad in ([], [0, 0], [3]):
        with pytest.raises(se.ArchError):
            spec.validate(bad)


def test_prior_is_not_part_of_equality() -> None:
    a = se.ParameterSpec("w", "value", (1, 2), prior=(0.2, 0.8))
    assert a == se.ParameterSpec("w", "value", (1, 2)) and a.to_json()["prior"] == [0.2, 0.8]
