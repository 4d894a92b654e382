"""Choice values: arithmetic, compose, evaluate, leaves, possible_values, label conflicts."""

from __future__ import annotations

import itertools
import operator

import pytest

import subnet_export as se
from subnet_export.space.choice import is_choice, leaves, possible_values

W = (16, 24, 32)
K = (3, 5, 7)


@pytest.fixture
def w() -> se.Choice:
    return se.Choice(list(W), label="w")


@pytest.fixture
def k() -> se.Choice:
    return se.Choice(list(K), label="k")


@pytest.mark.parametrize(("op", "const", "reflected"), [
    *((op, c, r) for op, c in ((operator.add, 3), (operator.sub, 2), (operator.mul, 4),
                              (operator.floordiv, 2), (operator.truediv, 8))
      for r in (False, True)),
    (operator.mod, 5, False),
    (operator.mod, 5, True),
])
def test_arithmetic_with_a_constant(w, op, const, reflected) -> None:
    expr = op(const, w) if reflected else op(w, const)
    assert is_choice(expr)
    for value in W:
        expected = op(const, value) if reflected else op(value, const)
        assert se.evaluate(expr, {"w": value}) == expected


def test_negation(w) -> None:
    assert [se.evaluate(-w, {"w": v}) for v in W] == [-v for v in W]


def test_two_choices_compose_by_arithmetic(w) -> None:
    e = se.Choice([1, 2, 4], label="e")
    expr = w * e + w // 8
    for wv, ev in itertools.product(W, e.candidates):
        assert se.evaluate(expr, {"w": wv, "e": ev}) == wv * ev + wv // 8


def test_kernel_dependent_padding(k) -> None:
    # The padding of a conv written as k // 2 follows its kernel.
    assert [se.evaluate(k // 2, {"k": v}) for v in K] == [v // 2 for v in K]


def test_compose_calls_the_user_function(w) -> None:
    def make_divisible(v: float, d: int) -> int:
        return max(d, int(v + d / 2) // d * d)

    e = se.Choice([0.5, 1.0, 1.5], label="e")
    expr = se.compose(lambda a, b: make_divisible(a * b, 8), w, e)
    for wv, ev in itertools.product(W, e.candidates):
        assert se.evaluate(expr, {"w": wv, "e": ev}) == make_divisible(wv * ev, 8)
    assert set(leaves(expr)) == {"w", "e"}


def test_compose_accepts_constants_and_nested_expressions(w, k) -> None:
    expr = se.compose(max, w // 2, k, 10)
    for wv, kv in itertools.product(W, K):
        assert se.evaluate(expr, {"w": wv, "k": kv}) == max(wv // 2, kv, 10)


def test_evaluate_plain_values_and_sequences(w, k) -> None:
    assert se.evaluate(7, {}) == 7
    assert se.evaluate("same", {}) == "same"
    values = {"w": 24, "k": 5}
    assert se.evaluate((w, k // 2, 1), values) == (24, 2, 1)
    assert se.evaluate([w * 2, [k]], values) == [48, [5]]
    assert type(se.evaluate((w,), values)) is tuple


def test_evaluate_missing_label_is_an_arch_error(w, k) -> None:
    with pytest.raises(se.ArchError) as info:
        se.evaluate(w * k, {"w": 16})
    assert info.value.label == "k"
    assert "'k'" in str(info.value)
    assert str(list(K)) in str(info.value)


def test_leaves_of_expressions_and_sequences(w, k) -> None:
    e = se.Choice([1, 2], label="e")
    found = leaves([w * e, (k // 2, 3), "x"])
    assert set(found) == {"w", "e", "k"}
    assert found["w"] is w and found["k"] is k
    assert leaves(5) == {}


def test_leaves_same_label_same_candidates_is_one_choice(w) -> None:
    again = se.Choice(list(W), label="w")
    assert set(leaves([w, again * 2])) == {"w"}


def test_leaves_refuses_one_label_two_candidate_lists(w) -> None:
    other = se.Choice([16, 48], label="w")
    with pytest.raises(se.SearchSpaceError, match="'w'"):
        leaves(w + other)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda w, k: w, sorted(W)),
    (lambda w, k: k // 2, sorted({v // 2 for v in K})),
    (lambda w, k: w * k, sorted({a * b for a in W for b in K})),
    (lambda w, k: w - w, [0]),  # one label, one value: never a cross product with itself
    (lambda w, k: 4, [4]),
])
def test_possible_values(w, k, make, expected) -> None:
    assert possible_values(make(w, k)) == expected


def test_possible_values_of_strings() -> None:
    act = se.Choice(["relu", "gelu"], label="act")
    assert sorted(possible_values(act)) == ["gelu", "relu"]


@pytest.mark.parametrize(("candidates", "label"), [
    ([], "w"),             # no candidates
    ([1, 1], "w"),         # duplicates
    ([[1], [2]], "w"),     # not JSON scalars (and unhashable)
    ([None, 1], "w"),      # not a JSON scalar, hashable
    ([1, 2], ""),          # empty label
    ([1, 2], None),        # not a string
])
def test_invalid_choice_is_a_search_space_error(candidates, label) -> None:
    with pytest.raises(se.SearchSpaceError):
        se.Choice(candidates, label=label)


def test_true_and_one_are_different_candidates() -> None:
    # 1 == True == 1.0 in Python; as JSON values they differ, so they are distinct candidates.
    c = se.Choice([1, True, 1.0], label="x")
    assert len(c.candidates) == 3


def test_choice_has_no_truth_value(w) -> None:
    # `if w > 16:` in a space would silently take one branch; it must fail loudly instead.
    with pytest.raises(TypeError, match="compose"):
        bool(w)


def test_tuple_candidates() -> None:
    c = se.Choice([(6, 3), (8, 5)], label="shape")
    assert c.candidates == ((6, 3), (8, 5))
    assert possible_values(c) == [(6, 3), (8, 5)]
    with pytest.raises(se.SearchSpaceError, match="duplicate"):
        se.Choice([(1, 2), (1, 2)], label="x")
    assert len(se.Choice([(1, 2), (1.0, 2)], label="x").candidates) == 2  # JSON types apart
    with pytest.raises(se.SearchSpaceError, match="JSON scalar"):
        se.Choice([(1, [2])], label="x")
