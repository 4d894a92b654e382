"""``ValueChoice`` and ``LayerChoice`` of ``subnet_export.nni`` against NNI 2.10.

The API (expressions, indexing, helpers, NNI's positional ``evaluate``), the errors NNI raises for
an invalid space (as SearchSpaceError), and the one-shot supernets: labels, candidates, state dict
keys, NNI's sampled path and DARTS mixture (NNI's weights loaded into ours).
(``test_nni_choice``: ``tests/space/test_choice.py`` has the bare name ``test_choice``; the input
choice is in ``test_input_choice.py``.)
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from _noise import assert_within_noise
from _twin import as_json, assert_path_equals_nni, build, nni_run, our_space, set_alphas, spec_list
from torch import nn as tnn

import subnet_export as se
import subnet_export.nni as nn
from subnet_export.errors import ArchError, SearchSpaceError
from subnet_export.space.choice import Choice, ChoiceExpr

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:no @model_wrapper:RuntimeWarning")]


# -- ValueChoice: a Choice with NNI's API -----------------------------------------------------
def test_value_choice_is_a_choice_and_its_expressions_are_choice_exprs():
    w = nn.ValueChoice([4, 8], label="w")
    assert isinstance(w, Choice) and w.candidates == (4, 8) and w.label == "w"
    assert isinstance(w * 2 + 1, ChoiceExpr) and se.evaluate(w * 2 + 1, {"w": 8}) == 17
    assert repr(w) == "ValueChoice([4, 8], label='w')"


def test_value_choice_api_as_nnis_own_test():
    # NNI's test_value_choice_api_purely
    a, b, c = (nn.ValueChoice(v, label=lb) for v, lb in (([1, 2], "a"), ([3, 4], "b"),
                                                          ([5, 6], "c")))
    d = a + b + 3 * c
    assert [ch.candidates for ch in d.inner_choices()] == [(1, 2), (3, 4), (5, 6)]
    assert d.evaluate([2, 3, 5]) == 20 and d.evaluate({"a": 2, "b": 3, "c": 5}) == 20
    s, t = nn.ValueChoice(["cat", "dog"]), nn.ValueChoice(["milk", "coffee"])
    assert (s + t).evaluate(["dog", "coffee"]) == "dogcoffee"
    assert (s + 2 * t).evaluate(["cat", "milk"]) == "catmilkmilk"
    assert (3 - nn.ValueChoice([1, 2])).evaluate([1]) == 2
    with pytest.raises(SearchSpaceError):
        s + nn.ValueChoice([1, 3])
    e = (abs(-nn.ValueChoice([1, 17]) * 3) % 11) ** 5
    assert "abs" in repr(e) and e.evaluate([17]) == 7 ** 5
    with pytest.raises(ArchError):
        e.evaluate([42])
    assert round(7 / nn.ValueChoice([2, 5])).evaluate([2]) == 4
    assert (~(77 ^ (nn.ValueChoice([1, 4]) & 5))).evaluate([4]) == ~(77 ^ (4 & 5))
    f = nn.ValueChoice([5, 3]) * nn.ValueChoice([6.5, 7.5])
    assert math.floor(f.evaluate([5, 7.5])) == int(5 * 7.5)
    assert se.evaluate(math.floor(f), {lb: v for lb, v in zip(
        [x.label for x in f.inner_choices()], [5, 7.5])}) == 37


def test_value_choice_helpers():
    v = nn.ValueChoice([1, 2, 3], label="v")
    u = nn.ValueChoice([2, 4], label="u")
    assert se.evaluate(nn.ValueChoice.condition(v > 2, 10, 20), {"v": 3}) == 10
    assert se.evaluate(nn.ValueChoice.condition(v == 2, u, 0), {"v": 2, "u": 4}) == 4
    assert se.evaluate(nn.ValueChoice.max(v, u, 3), {"v": 1, "u": 2}) == 3
    assert se.evaluate(nn.ValueChoice.min([v, u]), {"v": 1, "u": 2}) == 1
    assert nn.ValueChoice.max(1, 5) == 5 and nn.ValueChoice.condition(True, 1, 2) == 1
    assert se.evaluate(nn.ValueChoice.to_int(v * 1.5), {"v": 3}) == 4
    assert type(se.evaluate(nn.ValueChoice.to_float(v), {"v": 3})) is float
    assert list((v * 2).all_options()) == [2, 4, 6] and (v + u).dry_run() == 3
    with pytest.raises(TypeError):
        nn.ValueChoice.max(v)
    for bad in (lambda: bool(v), lambda: range(v), lambda: list(v), lambda: math.trunc(v)):
        with pytest.raises(TypeError):
            bad()


def test_tuple_candidates_and_indexing():
    vc = nn.ValueChoice([(6, 3), [8, 5]], label="a")
    assert vc.candidates == ((6, 3), (8, 5))
    assert se.evaluate(vc[0], {"a": (8, 5)}) == 8 and se.evaluate(vc[1], {"a": (6, 3)}) == 3
    with pytest.raises(SearchSpaceError):
        vc[2]  # the dry run fails, as NNI's


@pytest.mark.parametrize("prior", [[0.5, 0.6], [0.2, 0.3, 0.5]])
def test_prior_must_be_a_distribution_over_the_candidates(prior):
    with pytest.raises(SearchSpaceError, match="prior"):
        nn.ValueChoice([1, 2], prior=prior)
    with pytest.raises(SearchSpaceError, match="prior"):
        nn.LayerChoice([tnn.Identity(), tnn.ReLU()], prior=prior)
    with pytest.raises(SearchSpaceError, match="prior"):
        nn.InputChoice(2, prior=prior)


def test_prior_is_kept_in_the_spec():
    net = se.to_supernet(tnn.Sequential(
        nn.LayerChoice([tnn.Identity(), tnn.ReLU()], prior=[0.25, 0.75], label="lc"),
        nn.Repeat(tnn.Identity(), nn.ValueChoice([1, 2], prior=[0.9, 0.1], label="d"))))
    specs = se.search_space(net)
    assert specs["lc"].prior == (0.25, 0.75) and specs["d"].prior == (0.9, 0.1)
    assert nn.ValueChoice([1, 2]).prior == [0.5, 0.5]


# -- one label, one choice --------------------------------------------------------------------
def _shared(nn, wrap, second=(4, 8)):
    @wrap
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, nn.ValueChoice([4, 8], label="h"))
            self.b = nn.Linear(nn.ValueChoice(list(second), label="h"), 2)

        def forward(self, x):
            return self.b(self.a(x))
    return Net()


def test_a_label_used_twice_is_one_choice():
    twin = build(_shared, "sampling")
    theirs, ours = spec_list(twin)
    assert ours == theirs == [("h", [4, 8])]
    for arch in ({"h": 4}, {"h": 8}):
        twin.nni.resample(memo=dict(arch))
        assert_path_equals_nni(twin, arch, torch.randn(3, 3))


def test_a_label_with_two_candidate_lists_is_refused():
    # NNI refuses it in its graph engine (test_valuechoice_inconsistent_label) and inside one
    # module (dedup_inner_choices); its one-shot supernet lets one layer's spec overwrite the
    # other's across modules. Ours refuses it wherever it is.
    def make(nn, wrap):
        return _shared(nn, wrap, second=(4, 6))

    with pytest.raises(SearchSpaceError, match="'h'"):
        se.to_supernet(our_space(make))


# -- LayerChoice ------------------------------------------------------------------------------
def test_layer_choice_api():
    ops = [tnn.Conv2d(3, 3, 1), tnn.Identity(), tnn.ReLU()]
    lc = nn.LayerChoice(ops, label="lc")
    assert lc.names == ["0", "1", "2"] and len(lc) == 3 and lc.candidates is ops
    assert lc[0] is ops[0] and lc["1"] is ops[1] and list(lc) == ops and lc.label == "lc"
    del lc["1"]
    assert lc.names == ["0", "2"] and list(lc) == [ops[0], ops[2]]
    lc[1] = tnn.Tanh()
    assert isinstance(lc["2"], tnn.Tanh)
    named = nn.LayerChoice(OrderedDict([("conv", tnn.Conv2d(3, 3, 1)), ("skip", tnn.Identity())]))
    assert named.names == ["conv", "skip"] and isinstance(named["skip"], tnn.Identity)
    with pytest.warns(UserWarning, match="key"):
        assert nn.LayerChoice([tnn.ReLU()], key="old").label == "old"


@pytest.mark.parametrize("candidates", [(tnn.ReLU(), tnn.Tanh()), {"names": tnn.ReLU()}, [],
                                        {"a.b": tnn.ReLU()}, [tnn.ReLU(), "relu"]])
def test_invalid_layer_choices_are_search_space_errors(candidates):
    with pytest.raises(SearchSpaceError):
        nn.LayerChoice(candidates)


class Pair(tnn.Module):
    """A candidate returning a tuple (NNI's DARTS mixes element-wise)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.lin = tnn.Linear(4, 4)
        self.k = k

    def forward(self, x):
        y = self.lin(x)
        return y, y * self.k


def _layers(nn, wrap):
    @wrap
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = nn.Linear(3, 4)
            self.lc = nn.LayerChoice(OrderedDict([
                ("lin", nn.Linear(4, 4)),
                ("nested", nn.LayerChoice([nn.Linear(4, 4), nn.Sequential(nn.ReLU())])),
                ("skip", nn.Identity())]))
            self.pair = nn.LayerChoice([Pair(1), Pair(3)])
            self.post = nn.Linear(4, 2)

        def forward(self, x):
            a, b = self.pair(self.lc(self.pre(x)))
            return self.post(a + b)
    return Net()


@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_layer_choice_supernet_is_nnis(strategy):
    twin = build(_layers, strategy)
    theirs, ours = spec_list(twin)
    assert ours == theirs and twin.our_keys() == twin.nni_keys()
    x = torch.randn(4, 3)
    if strategy == "sampling":
        for seed in range(6):
            arch = as_json(twin.nni.resample())
            assert dict(se.freeze(twin.ours, arch)) == arch
            assert_path_equals_nni(twin, arch, x)
        return
    for seed in range(3):
        set_alphas(twin, seed)
        out, out64 = nni_run(twin.nni, x)
        with torch.no_grad():
            assert_within_noise(twin.ours(x), out, out64, what=f"mixture, seed {seed}")
        assert as_json(se.freeze(twin.ours)) == as_json(twin.nni.export())


# -- fixed_arch -------------------------------------------------------------------------------
def test_fixed_arch_builds_the_chosen_model(tmp_path):
    arch = {"model_1": "1", "model_2": "nested", "model_3": "0"}
    with nn.fixed_arch(arch):
        net = our_space(_layers)
    assert isinstance(net.lc, tnn.Sequential) and isinstance(net.pair, Pair)
    path = tmp_path / "arch.json"
    path.write_text('{"model_1": 0, "w": [8, 5], "model_2": [0, 2]}')
    with nn.fixed_arch(path):
        assert nn.LayerChoice([tnn.ReLU(), tnn.Tanh()], label="model_1").__class__ is tnn.ReLU
        assert nn.ValueChoice([(6, 3), (8, 5)], label="w") == (8, 5)
        chosen = nn.InputChoice(3, 2, "sum", label="model_2")
        assert isinstance(chosen, nn.ChosenInputs) and chosen.chosen == [0, 2]
        with pytest.raises(ArchError, match="candidates"):
            nn.ValueChoice([1, 2], label="w")
        with pytest.raises(ArchError, match="no label"):
            nn.ValueChoice([1, 2], label="missing")
        with pytest.raises(ArchError, match="model_1"):
            nn.LayerChoice({"a": tnn.ReLU()}, label="model_1")
    assert isinstance(nn.ValueChoice([1, 2], label="w"), nn.ValueChoice)


def test_model_parameter_choice():
    assert nn.ModelParameterChoice([3, 5]) == 3
    assert nn.ModelParameterChoice([3, 5], default=nn.ModelParameterChoice.LAST) == 5
    with nn.fixed_arch({"p": 5}):
        assert nn.ModelParameterChoice([3, 5], label="p") == 5
    with pytest.raises(SearchSpaceError):
        nn.ModelParameterChoice([3, 5], default=7)


def test_wrapping_errors_are_nnis():
    @nn.basic_unit
    class Unit(tnn.Module):
        pass

    with pytest.raises(SearchSpaceError, match="basic_unit"):
        nn.model_wrapper(Unit)
    with pytest.raises(SearchSpaceError):
        nn.model_wrapper(int)
    assert nn.is_basic_unit(Unit()) and not nn.is_model_wrapped(Unit)
