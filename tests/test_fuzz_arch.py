"""Arch fuzzing: whatever dict reaches ``freeze``, the outcome is a valid arch or an ArchError
naming the label. Nothing else may escape."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import subnet_export as se

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import tiny_space  # noqa: E402

sys.path.pop(0)

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


#: spaces fuzzed: the tiny test space in both strategies, and shipped spaces with every kind
#: of label (value, layer, input, depth, labels shared through expressions)
FUZZED = ["tiny-sampling", "tiny-differentiable", "autoformer", "darts", "nasbench201",
          "mobilenetv3"]


@pytest.fixture(scope="module", params=FUZZED)
def net(request):
    if request.param.startswith("tiny-"):
        return se.to_supernet(tiny_space.TinySpace(), strategy=request.param.split("-")[1])
    from models import get_space

    return get_space(request.param).build()


@pytest.fixture(scope="module", params=["sampling", "differentiable"])
def tiny(request):
    return se.to_supernet(tiny_space.TinySpace(), strategy=request.param)


def _check(net, arch) -> None:
    specs = se.search_space(net)
    try:
        frozen = se.freeze(net, arch)
    except se.ArchError as err:
        assert err.label is None or isinstance(err.label, str)
        if err.label is not None:
            assert repr(err.label) in str(err) or err.label in str(err)
        return
    # accepted: complete, and every value a candidate of its label
    assert set(frozen) == set(specs)
    for label, value in frozen.items():
        assert specs[label].validate(value) == value


@FUZZ
@given(data=st.data())
def test_random_dicts(net, data):
    arch = data.draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=6))
    _check(net, arch)


@FUZZ
@given(data=st.data())
def test_valid_arch_with_one_value_replaced(net, data):
    specs = se.search_space(net)
    arch = {label: data.draw(st.sampled_from(spec.values())) for label, spec in specs.items()}
    label = data.draw(st.sampled_from(sorted(specs)))
    arch[label] = data.draw(JSON_VALUES)
    _check(net, arch)


@FUZZ
@given(data=st.data())
def test_labels_added_or_removed(net, data):
    specs = se.search_space(net)
    arch = {label: spec.values()[0] for label, spec in specs.items()}
    for label in data.draw(st.lists(st.sampled_from(sorted(specs)), max_size=3)):
        arch.pop(label, None)
    for label in data.draw(st.lists(st.text(min_size=1, max_size=8), max_size=2)):
        arch[label] = data.draw(JSON_VALUES)
    _check(net, arch)


@FUZZ
@given(arch=JSON_VALUES)
def test_non_dict_archs(net, arch):
    if isinstance(arch, dict):
        return _check(net, arch)
    if arch is None:  # None means "the supernet's own export"
        assert set(se.freeze(net, arch)) == set(se.search_space(net))
        return
    with pytest.raises(se.ArchError, match="JSON object"):
        se.freeze(net, arch)


def test_huge_and_negative_numbers_name_the_label(tiny):
    for value in (2**64, -1, 0, -(2**64), float("inf")):
        arch = {"width": value, "block.k": 3, "depth": 1, "op": "skip"}
        with pytest.raises(se.ArchError, match="'width'") as err:
            se.freeze(tiny, arch)
        assert err.value.label == "width"


def test_unicode_labels(tiny):
    arch = {"width": 8, "block.k": 3, "depth": 1, "op": "skip", "wïdth\u200b": 8}
    with pytest.raises(se.ArchError) as err:
        se.freeze(tiny, arch)
    assert err.value.label == "wïdth\u200b"
