"""``subnet_export.nni.cell.NasBench201Cell`` against NNI 2.10's ``nn.NasBench201Cell``.

The same two-cell space is built with NNI's cell under ``@model_wrapper`` and with ours in a
model namespace; NNI's one-shot module (random sampling or DARTS) mutates its copy, whose
state dict is then loaded into our supernet. Labels, candidates, keys, NNI's exported archs and
every forward (supernet path, DARTS mixture, plain model) must agree.
"""

from __future__ import annotations

import copy
import json
import random

import nni.retiarii.nn.pytorch as nni_nn
import pytest
import torch
from _noise import assert_within_noise
from nni.retiarii import model_wrapper
from nni.retiarii.evaluator.pytorch.lightning import ClassificationModule
from nni.retiarii.oneshot.pytorch.differentiable import DartsLightningModule
from nni.retiarii.oneshot.pytorch.sampling import RandomSamplingLightningModule
from torch import nn

import subnet_export as se
from subnet_export.nni._labels import ModelNamespace
from subnet_export.nni.cell import NasBench201Cell
from subnet_export.nni.cell_supernet import CELL_HOOKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STRATEGIES = {"sampling": RandomSamplingLightningModule, "differentiable": DartsLightningModule}


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def _conv(k: int):
    return lambda i, o: nn.Sequential(nn.ReLU(), nn.Conv2d(i, o, k, padding=k // 2, bias=False),
                                      nn.BatchNorm2d(o))


OPS = {
    "none": lambda i, o: Zero(),
    "skip_connect": lambda i, o: nn.Identity(),
    "nor_conv_1x1": _conv(1),
    "nor_conv_3x3": _conv(3),
    "avg_pool_3x3": lambda i, o: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
}


def build(cell_cls, c: int = 4) -> dict[str, nn.Module]:
    """The cells of the space: a labelled and an automatically labelled one, as NNI's hub does,
    and a linear one with in != out features (NNI's own NasBench201Cell test)."""
    return {"cell1": cell_cls(OPS, c, c, label="cell1"),
            "cell2": cell_cls(OPS, c, c, num_tensors=3),
            "head": cell_cls([lambda x, y: nn.Linear(x, y),
                              lambda x, y: nn.Linear(x, y, bias=False)], c, 16)}


def _forward(cells, x):
    x = cells["cell2"](cells["cell1"](x))
    return cells["head"](x.mean((2, 3)))


def nni_net() -> nn.Module:
    @model_wrapper
    class Net(nni_nn.Module):
        def __init__(self):
            super().__init__()
            self.cells = nn.ModuleDict(build(nni_nn.NasBench201Cell))

        def forward(self, x):
            return _forward(self.cells, x)
    return Net()


class OurNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with ModelNamespace():
            self.cells = nn.ModuleDict(build(NasBench201Cell))

    def forward(self, x):
        return _forward(self.cells, x)


def _inputs(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list(STRATEGIES))
def pair(request):
    torch.manual_seed(0)
    net = nni_net()
    module = ClassificationModule()
    module.set_model(net)
    lm = STRATEGIES[request.param](module)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    ours = se.to_supernet(OurNet(), request.param, hooks=CELL_HOOKS)
    ours.load_state_dict(net.state_dict())
    return request.param, net.eval(), lm, ours.eval()


def _nni(net, x, double=False):
    net = copy.deepcopy(net).double() if double else net
    with torch.no_grad():
        return net(x.double() if double else x)


def test_labels_candidates_keys_and_exports_match_nni(pair):
    strategy, net, lm, ours = pair
    theirs, spec = lm.search_space_spec(), se.search_space(ours)
    assert list(spec) == list(theirs)
    assert [list(s.candidates) for s in spec.values()] == [list(s.values) for s in theirs.values()]
    assert "cell1/0_1" in spec and "model_1/1_2" in spec and "model_2/0_3" in spec
    assert ([(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
            == [(k, tuple(v.shape)) for k, v in net.state_dict().items()])
    random.seed(4)
    for _ in range(3):
        exported = lm.export()
        assert dict(se.freeze(ours, json.loads(json.dumps(exported)))) == exported
    if strategy == "differentiable":
        assert dict(se.freeze(ours)) == lm.export()


def test_forward_and_plain_model_match_nni(pair):
    strategy, net, lm, ours = pair
    for seed in range(3):
        arch = dict(se.sample_arch(ours, seed))
        x = _inputs(seed)
        if strategy == "sampling":
            for m in lm.nas_modules:
                m.resample(memo=arch)
        else:  # one-hot alphas: NNI's mixture is exactly the path of arch
            with torch.no_grad():
                for m in lm.nas_modules:
                    m._arch_alpha.zero_()
                    m._arch_alpha[m.op_names.index(arch[m.label])] = 1000.0
            ours.load_state_dict(net.state_dict())
            assert dict(se.freeze(ours)) == lm.export() == arch
        ref, oracle = _nni(net, x), _nni(net, x, double=True)
        with torch.no_grad():
            if strategy == "sampling":
                with se.fixed_arch(ours, arch):
                    path = ours(x)
            else:
                path = ours(x)  # the mixture
            out = se.materialize(ours, arch).eval()(x)
        assert out.shape == (2, 16)
        assert_within_noise(path, ref, oracle, what=f"{strategy} supernet")
        assert_within_noise(out, ref, oracle, what=f"{strategy} plain model")


@pytest.mark.parametrize("pair", ["differentiable"], indirect=True)
def test_darts_random_alphas_mixture_matches_nni(pair):
    _, net, lm, ours = pair
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for m in lm.nas_modules:
            m._arch_alpha.copy_(torch.randn(m._arch_alpha.shape, generator=g))
    ours.load_state_dict(net.state_dict())
    x = _inputs(5)
    with torch.no_grad():
        mixed = ours(x)
    assert_within_noise(mixed, _nni(net, x), _nni(net, x, double=True), what="DARTS mixture")
    assert dict(se.freeze(ours)) == lm.export()


def test_plain_model_holds_the_chosen_ops_only(pair):
    _, _, _, ours = pair
    arch = dict(se.sample_arch(ours, 7))
    plain = se.materialize(ours, arch)
    expected = 0
    for cell in ours.cells.values():
        for layer in cell.layers:
            for op in layer:
                expected += sum(t.numel() for t in op.chosen(arch).parameters())
    assert sum(t.numel() for t in plain.parameters()) == expected
    edge = ours.cells["cell1"].layers[0][0]
    assert type(plain.cells["cell1"].layers[0][0]) is type(edge.chosen(arch))
