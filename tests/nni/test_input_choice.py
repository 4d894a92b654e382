"""``subnet_export.nni.InputChoice`` against NNI 2.10: arch values, any number, ``"none"``.

An input choice of one is a bare index (NNI's export; a list of one is accepted), of more a
sorted list; ``n_chosen=None`` and ``reduction="none"``, which NNI's one-shot sampling refuses,
sample and freeze here; under DARTS both follow NNI's mixture.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _noise import assert_within_noise
from _twin import as_json, assert_path_equals_nni, build, nni_run, our_space, set_alphas, spec_list

import subnet_export as se
import subnet_export.nni as nn
from subnet_export.errors import ArchError, SearchSpaceError

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:no @model_wrapper:RuntimeWarning")]


# -- InputChoice ------------------------------------------------------------------------------
def _inputs(n_chosen, reduction):
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.convs = nn.ModuleList([nn.Linear(3, 4) for _ in range(3)])
                self.pick = nn.InputChoice(3, n_chosen, reduction)
                self.head = nn.Linear(4, 2)

            def forward(self, x):
                picked = self.pick([c(x) for c in self.convs])
                if isinstance(picked, list):
                    picked = torch.stack(picked).sum(0)
                return self.head(picked)
        return Net()
    return make


@pytest.mark.parametrize("n_chosen, reduction", [(1, "sum"), (2, "mean"), (3, "sum")])
def test_input_choice_sampled_path_is_nnis(n_chosen, reduction):
    twin = build(_inputs(n_chosen, reduction), "sampling")
    theirs, ours = spec_list(twin)
    assert ours == theirs
    x = torch.randn(4, 3)
    for seed in range(4):
        arch = as_json(twin.nni.resample())
        assert isinstance(arch["model_1"], int if n_chosen == 1 else list)
        assert dict(se.freeze(twin.ours, arch)) == arch
        assert_path_equals_nni(twin, arch, x)


def test_input_choice_of_one_takes_a_bare_index_or_a_list_of_one():
    net = se.to_supernet(our_space(_inputs(1, "sum")))
    assert se.freeze(net, {"model_1": [2]})["model_1"] == 2 == se.freeze(net, {"model_1": 2})[
        "model_1"]
    for bad in ([0, 1], 3, [], "1", True):
        with pytest.raises(ArchError, match="model_1"):
            se.freeze(net, {"model_1": bad})


def test_any_number_of_inputs_and_reduction_none_sampling():
    # NNI's one-shot sampling refuses both; ours samples any non-empty subset
    with pytest.raises(ValueError, match="n_chosen is None"):
        build(_inputs(None, "sum"), "sampling")
    net = se.to_supernet(our_space(_inputs(None, "none")))
    spec = se.search_space(net)["model_1"]
    assert spec.n_chosen is None and spec.size == 7 and [0, 1, 2] in spec.values()
    x = torch.randn(2, 3)
    seen = set()
    for seed in range(12):
        arch = se.sample_arch(net, seed)
        seen.add(tuple(arch["model_1"]))
        plain = se.materialize(net, arch)
        feats = [c(x) for c in plain.convs]
        want = plain.head(torch.stack([feats[i] for i in arch["model_1"]]).sum(0))
        with torch.no_grad(), se.fixed_arch(net, arch):
            assert torch.allclose(net(x), want)
            assert isinstance(net.pick([x, x, x]), list)
        assert torch.allclose(plain(x), want)
    assert len(seen) > 3 and all(seen)
    with pytest.raises(ArchError):
        se.freeze(net, {"model_1": []})


def test_any_number_of_inputs_in_darts_is_nnis():
    twin = build(_inputs(None, "sum"), "differentiable")
    theirs, ours = spec_list(twin)
    assert ours == theirs
    set_alphas(twin, 1)
    x = torch.randn(4, 3)
    out, out64 = nni_run(twin.nni, x)
    with torch.no_grad():
        assert_within_noise(twin.ours(x), out, out64, what="mixture of any number of inputs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert as_json(se.freeze(twin.ours)) == as_json(twin.nni.export()) == {"model_1": [0, 1,
                                                                                           2]}


def test_reduction_none_in_darts():
    net = se.to_supernet(our_space(_inputs(1, "none")), "differentiable")
    x = torch.randn(2, 3)
    with torch.no_grad():
        mixed = net.pick([x, 2 * x, 3 * x])
        assert isinstance(mixed, list) and len(mixed) == 1
        w = torch.softmax(net.pick.alpha("model_1"), -1)
        assert torch.allclose(mixed[0], w[0] * x + w[1] * 2 * x + w[2] * 3 * x)
    for n_chosen, reduction in ((2, "none"), (1, "concat")):
        with pytest.raises(SearchSpaceError, match="reduction"):
            se.to_supernet(our_space(_inputs(n_chosen, reduction)), "differentiable")


def test_invalid_input_choices_are_search_space_errors():
    for args in ((3, 1, "max"), (2, 3), (0, 1)):
        with pytest.raises(SearchSpaceError):
            nn.InputChoice(*args)


def test_chosen_inputs_is_nnis():
    xs = [torch.full((1, 2), float(k)) for k in range(3)]
    assert torch.equal(nn.ChosenInputs(1, "sum")(xs), xs[1])
    assert torch.equal(nn.ChosenInputs([0, 2], "mean")(xs), (xs[0] + xs[2]) / 2)
    assert nn.ChosenInputs([0, 2], "concat")(xs).shape == (1, 4)
    assert nn.ChosenInputs([2, 0], "none")(xs) == [xs[2], xs[0]]
    assert nn.ChosenInputs([], "sum")(xs) is None
