"""NNI 2.10's arch JSON, as its one-shot supernets write it, freezes unchanged in ours.

``resample()`` / ``export()`` dicts (a layer choice's key, an input choice of one as a bare
index, of more as a list, a depth as an int, a tuple value as a list) and ``export_probs()``
(``{"label/candidate": p}``, the most probable value taken) go through ``se.freeze`` and
``se.load_arch`` as NNI users keep them, and the subnet is NNI's.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from _twin import as_json, assert_path_equals_nni, build, our_space, set_alphas

import subnet_export as se
from subnet_export.errors import ArchError

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def space(nn, wrap):
    @wrap
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            shape = nn.ValueChoice([(6, 3), (8, 5)], label="shape")
            self.stem = nn.Conv2d(3, shape[0], kernel_size=shape[1], padding=shape[1] // 2)
            self.mid = nn.Conv2d(shape[0], 4, 1)
            self.op = nn.LayerChoice(OrderedDict([("conv", nn.Conv2d(4, 4, 3, padding=1)),
                                                  ("skip", nn.Identity())]), label="op")
            self.rep = nn.Repeat(lambda i: nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), (1, 3))
            self.one = nn.InputChoice(2)
            self.two = nn.InputChoice(3, 2, "mean")
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.mid(self.stem(x))
            y = self.rep(self.op(x))
            y = self.one([x, y])
            y = self.two([y, y * 2, torch.relu(y)])
            return self.head(y.mean((2, 3)))
    return Net()


def test_resampled_archs_freeze_unchanged_and_run_nnis_path(tmp_path):
    twin = build(space, "sampling")
    x = torch.randn(2, 3, 6, 6)
    for seed in range(6):
        arch = twin.nni.resample()
        path = tmp_path / f"arch{seed}.json"
        path.write_text(json.dumps(arch))
        loaded = se.load_arch(path)
        assert isinstance(loaded["shape"], list) and isinstance(loaded["model_2"], int)
        assert isinstance(loaded["model_3"], list) and isinstance(loaded["model_1"], int)
        frozen = se.freeze(twin.ours, loaded)
        assert as_json(frozen) == loaded and frozen.source is None
        assert isinstance(frozen["shape"], tuple)
        assert_path_equals_nni(twin, loaded, x)


def test_darts_export_and_export_probs_freeze_to_nnis_argmax():
    twin = build(space, "differentiable")
    for seed in range(4):
        set_alphas(twin, seed)
        export = as_json(twin.nni.export())
        probs = as_json(twin.nni.export_probs())
        assert all("/" in k for k in probs)
        assert as_json(se.freeze(twin.ours, export)) == export == as_json(se.freeze(twin.ours))
        frozen = se.freeze(twin.ours, probs)
        assert dict(frozen) == dict(se.freeze(twin.ours, export)) and frozen.source == probs


def test_our_own_export_probs_form_freezes_too():
    net = se.to_supernet(our_space(space), "differentiable")
    probs = {}
    for _, module in se.supernet.walk.iter_supernet_modules(net):
        probs.update(module.export_probs(probs))
    assert all(isinstance(v, dict) for v in probs.values())
    assert dict(se.freeze(net, probs)) == dict(se.freeze(net))


def test_probabilities_that_name_no_candidate_are_arch_errors():
    twin = build(space, "differentiable")
    probs = as_json(twin.nni.export_probs())
    with pytest.raises(ArchError, match="'op'.*'pool'"):
        se.freeze(twin.ours, {**probs, "op/pool": 0.9})
    with pytest.raises(ArchError, match="nope/x"):
        se.freeze(twin.ours, {**probs, "nope/x": 0.9})
    without = {k: v for k, v in probs.items() if not k.startswith("op/")}
    with pytest.raises(ArchError, match="'op' is missing"):
        se.freeze(twin.ours, without)


@pytest.mark.parametrize("label, value, why", [
    ("shape", [6, 5], "not a candidate"), ("shape", 6, "wrong type"),
    ("op", 0, "wrong type"), ("model_1", 4, "not a candidate"), ("model_2", [0, 1], "one input"),
    ("model_3", 1, "a list of 2"), ("model_3", [1, 1], "a list of 2"),
])
def test_wrong_values_name_the_label_and_what_is_valid(label, value, why):
    net = se.to_supernet(our_space(space))
    arch = {**as_json(se.freeze(net)), label: value}
    with pytest.raises(ArchError, match=why) as info:
        se.freeze(net, arch)
    assert info.value.label == label


def test_native_input_choice_still_takes_lists_only():
    net = se.to_supernet(torch.nn.Sequential(se.InputChoice(3, 1, label="i")))
    assert se.freeze(net, {"i": [2]})["i"] == [2]
    with pytest.raises(ArchError):
        se.freeze(net, {"i": 2})


def test_fixed_arch_builds_nnis_fixed_model_and_our_plain_model():
    import warnings

    from _twin import nni_space
    from nni.retiarii import fixed_arch as nni_fixed_arch

    import subnet_export.nni as our_nn

    twin = build(space, "sampling")
    x = torch.randn(2, 3, 6, 6)
    for seed in range(4):
        raw = twin.nni.resample()  # NNI's fixed_arch wants tuples back (its JSON has lists)
        arch = as_json(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with nni_fixed_arch(raw):
                theirs = nni_space(space).eval()
        with our_nn.fixed_arch(arch):
            ours = our_space(space).eval()
        assert not any(isinstance(m, se.space.placeholders.Placeholder) for m in ours.modules())
        assert list(ours.state_dict()) == list(theirs.state_dict())
        plain = se.materialize(twin.ours, se.freeze(twin.ours, arch)).eval()
        assert list(plain.state_dict()) == list(ours.state_dict())
        theirs.load_state_dict(plain.state_dict())
        ours.load_state_dict(plain.state_dict())
        with torch.no_grad():
            assert torch.equal(ours(x), theirs(x)) and torch.equal(ours(x), plain(x))
