"""``subnet_export.nni.cell.Cell`` against NNI 2.10's own ``nn.Cell`` and its one-shot supernets.

Each space is built twice, with NNI's ``Cell`` under ``@model_wrapper`` and with ours in a model
namespace; NNI's one-shot module (random sampling or DARTS) mutates its copy. The two must agree
on labels, candidates, state dict keys and shapes, NNI's exported arch, and (NNI's weights
loaded into ours) every forward: the supernet path, the DARTS mixture, the plain model. The
space kinds are those of NNI's own cell tests (``test/ut/nas/models.py``) plus a conv cell.
"""

from __future__ import annotations

import contextlib
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
from nni.retiarii.oneshot.pytorch.supermodule.differentiable import (
    DifferentiableMixedCell,
    DifferentiableMixedInput,
    DifferentiableMixedLayer,
)
from torch import nn

import subnet_export as se
from subnet_export.errors import SearchSpaceError
from subnet_export.nni._labels import ModelNamespace
from subnet_export.nni.cell import Cell, CellBody
from subnet_export.nni.cell_mixed import FrozenCell, MixedCell
from subnet_export.nni.cell_supernet import CELL_HOOKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("simple", "default_args", "custom_processor", "loose_end", "op_factory", "conv")
#: kinds NNI turns into one fully connected supernet cell (factories, loose ends)
WHOLE = ("loose_end", "op_factory", "conv")
LIST_CALL = ("custom_processor", "loose_end", "op_factory", "conv")
STRATEGIES = {"sampling": RandomSamplingLightningModule, "differentiable": DartsLightningModule}


class Preprocessor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 16)

    def forward(self, x):
        return [self.linear(x[0]), x[1]]


class Postprocessor(nn.Module):
    def forward(self, this, prev):
        return prev[-1], this


def _conv_op(k: int):
    def make(node, op, inp):  # predecessors are read at stride 2, as a DARTS reduction cell
        stride = 2 if inp is not None and inp < 2 else 1
        return nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, k, stride, k // 2, bias=False),
                             nn.BatchNorm2d(4))
    return make


def make_cell(cell_cls, kind: str):
    """The cell of ``kind`` built with ``cell_cls`` (NNI's or ours)."""
    linears = [nn.Linear(16, 16), nn.Linear(16, 16, bias=False)]
    two = dict(num_nodes=4, num_ops_per_node=2, num_predecessors=2)
    if kind == "simple":
        return cell_cls(linears, merge_op="all", **two)
    if kind == "default_args":
        return cell_cls(linears, num_nodes=4)
    if kind == "custom_processor":
        return cell_cls({"first": linears[0], "second": linears[1]}, preprocessor=Preprocessor(),
                        postprocessor=Postprocessor(), merge_op="all", **two)
    if kind == "loose_end":
        return cell_cls(linears, merge_op="loose_end", **two)
    if kind == "op_factory":
        return cell_cls({
            "first": lambda _, __, chosen: nn.Linear(3 if chosen == 0 else 16, 16),
            "second": lambda _, __, chosen: nn.Linear(3 if chosen == 0 else 16, 16, bias=False),
        }, merge_op="all", **two)
    if kind.startswith("shared"):  # two cells of one label: one choice, own weights
        ops = ({"a": lambda *_: nn.Linear(16, 16), "b": lambda *_: nn.Linear(16, 16, bias=False)}
               if kind == "shared_factory" else linears)
        return nn.Sequential(*(cell_cls(ops, 1, num_ops_per_node=2, label="shared")
                               for _ in range(2)))
    return cell_cls({"conv3": _conv_op(3), "conv1": _conv_op(1),
                     "pool": lambda _, __, inp: nn.AvgPool2d(3, 2 if inp is not None and inp < 2
                                                             else 1, 1)},
                    num_nodes=3, num_ops_per_node=2, num_predecessors=2, label="normal")


def _call(cell, kind, xs):
    return cell(list(xs)) if kind in LIST_CALL else cell(*xs)


def nni_net(kind: str) -> nn.Module:
    @model_wrapper
    class Net(nni_nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = make_cell(nni_nn.Cell, kind)

        def forward(self, *xs):
            return _call(self.cell, kind, xs)
    return Net()


class OurNet(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        with ModelNamespace():
            self.cell = make_cell(Cell, kind)

    def forward(self, x, y=None):  # named inputs, as torch.export needs them
        return _call(self.cell, self.kind, (x,) if y is None else (x, y))


def inputs(kind: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    if kind == "conv":
        return torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    first = 3 if kind in ("custom_processor", "op_factory") else 16
    one = kind == "default_args" or kind.startswith("shared")
    rest = () if one else (torch.randn(2, 16, generator=g),)
    return (torch.randn(2, first, generator=g), *rest)


def _randomize_bn(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


class Pair:
    """NNI's one-shot supernet of a space and ours, NNI's state dict loaded into ours."""

    def __init__(self, kind: str, strategy: str) -> None:
        torch.manual_seed(0)
        self.kind, self.strategy = kind, strategy
        self.net = nni_net(kind)
        module = ClassificationModule()
        module.set_model(self.net)
        self.lm = STRATEGIES[strategy](module)
        _randomize_bn(self.net)
        self.ours = se.to_supernet(OurNet(kind), strategy, hooks=CELL_HOOKS)
        self.ours.load_state_dict(self.net.state_dict())
        self.net.eval()
        self.ours.eval()

    def nni_path(self, arch) -> None:
        """Put NNI's sampling supernet on ``arch``."""
        for m in self.lm.nas_modules:
            m.resample(memo=dict(arch))

    def nni_forward(self, xs, double: bool = False):
        net = copy.deepcopy(self.net).double() if double else self.net
        with torch.no_grad():
            return net(*(x.double() if double else x for x in xs))

    def sync(self) -> None:
        """Copy NNI's (changed) alphas into ours."""
        self.ours.load_state_dict(self.net.state_dict())


@pytest.fixture(scope="module")
def pairs():
    """``pairs(kind, strategy)``: the :class:`Pair` of a space, built once per module."""
    cache: dict[tuple[str, str], Pair] = {}

    def get(kind: str, strategy: str) -> Pair:
        if (kind, strategy) not in cache:
            cache[kind, strategy] = Pair(kind, strategy)
        return cache[kind, strategy]
    return get


def distinct_arch(supernet: nn.Module, rng: random.Random) -> dict:
    """A random arch whose ops of one node read distinct inputs (a one-hot DARTS alpha can
    express it)."""
    specs = se.search_space(supernet)
    arch = {}
    nodes = sorted({int(lb.split("_")[-2]) for lb in specs if "/input_" in lb})
    for i in nodes:
        ks = sorted(int(lb.split("_")[-1]) for lb in specs if f"/input_{i}_" in lb)
        prefix = next(lb for lb in specs if f"/input_{i}_" in lb).split("/input_")[0]
        for k, j in zip(ks, rng.sample(range(i), len(ks))):
            arch[f"{prefix}/input_{i}_{k}"] = j
            arch[f"{prefix}/op_{i}_{k}"] = rng.choice(specs[f"{prefix}/op_{i}_{k}"].candidates)
    return arch


def node_pairs(arch: dict) -> dict[str, set]:
    """``{node: {(input, op), ...}}``: an arch up to the order of a node's ops."""
    out: dict[str, set] = {}
    for label, j in arch.items():
        if "/input_" in label:
            node, k = label.replace("/input_", "/").rsplit("_", 1)
            out.setdefault(node, set()).add((j, arch[label.replace("/input_", "/op_")]))
    return out


def one_hot_alphas(lm, arch, big: float = 1000.0) -> None:
    """NNI's alphas set so that softmax is exactly the one-hot of ``arch``."""
    with torch.no_grad():
        for m in lm.nas_modules:
            if isinstance(m, DifferentiableMixedLayer):
                m._arch_alpha.copy_(torch.zeros(len(m.op_names)))
                m._arch_alpha[m.op_names.index(arch[m.label])] = big
            elif isinstance(m, DifferentiableMixedInput):
                m._arch_alpha.copy_(torch.zeros(m.n_candidates))
                m._arch_alpha[arch[m.label]] = big
            else:  # the fully connected cell: one alpha per edge, the zero path last
                assert isinstance(m, DifferentiableMixedCell)
                for edge, alpha in m._arch_alpha.items():
                    i, j = (int(v) for v in edge.rsplit("/", 1)[1].split("_"))
                    ops = [arch[f"{m.label}/op_{i}_{k}"] for k in range(m.num_ops_per_node)
                           if arch[f"{m.label}/input_{i}_{k}"] == j]
                    alpha.zero_()
                    alpha[m.op_names.index(ops[0]) if ops else -1] = big


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("kind", KINDS)
def test_labels_candidates_and_keys_match_nni(kind, strategy, pairs):
    p = pairs(kind, strategy)
    theirs, ours = p.lm.search_space_spec(), se.search_space(p.ours)
    assert list(ours) == list(theirs)
    for label, spec in theirs.items():
        assert list(ours[label].candidates) == list(spec.values), label
    assert ([(k, tuple(v.shape)) for k, v in p.ours.state_dict().items()]
            == [(k, tuple(v.shape)) for k, v in p.net.state_dict().items()])
    # NNI's own cell tests: which cells become one supernet cell, how many labels and alphas
    assert isinstance(p.ours.cell, MixedCell if kind in WHOLE else CellBody)
    cell = make_cell(Cell, kind)
    assert len(ours) == cell.num_nodes * cell.num_ops_per_node * 2
    if kind in WHOLE and strategy == "differentiable":
        n = cell.num_nodes
        assert len(p.ours.cell._arch_alpha) == n * (n + 3) // 2  # two predecessors


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("kind", KINDS)
def test_nni_exported_arch_freezes_unchanged(kind, strategy, pairs):
    p = pairs(kind, strategy)
    random.seed(3)
    for _ in range(3):
        exported = p.lm.export()
        loaded = json.loads(json.dumps(exported))
        assert dict(se.freeze(p.ours, loaded)) == exported
    if strategy == "differentiable":  # our argmax export is NNI's, on NNI's alphas
        assert dict(se.freeze(p.ours)) == p.lm.export()


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_path_and_plain_model_match_nni(kind, pairs):
    p = pairs(kind, "sampling")
    rng = random.Random(5)
    for seed in range(3):
        arch = se.sample_arch(p.ours, seed) if seed else distinct_arch(p.ours, rng)
        xs = inputs(kind, seed)
        p.nni_path(arch)
        ref, oracle = p.nni_forward(xs), p.nni_forward(xs, double=True)
        with torch.no_grad(), se.fixed_arch(p.ours, arch):
            path = p.ours(*xs)
        plain = se.materialize(p.ours, arch).eval()
        with torch.no_grad():
            out = plain(*xs)
        assert_within_noise(path, ref, oracle, what=f"{kind} supernet path")
        assert_within_noise(out, ref, oracle, what=f"{kind} plain model")


@pytest.mark.parametrize("kind", KINDS)
def test_darts_one_hot_alphas_match_nni_and_the_plain_model(kind, pairs):
    p = pairs(kind, "differentiable")
    rng = random.Random(7)
    for seed in range(2):
        arch = distinct_arch(p.ours, rng)
        one_hot_alphas(p.lm, arch)
        p.sync()
        exported = p.lm.export()  # NNI may number a node's ops in another order
        assert node_pairs(exported) == node_pairs(arch)
        assert dict(se.freeze(p.ours)) == exported
        xs = inputs(kind, seed)
        ref, oracle = p.nni_forward(xs), p.nni_forward(xs, double=True)
        with torch.no_grad():
            mixed = p.ours(*xs)
            out = se.materialize(p.ours, exported).eval()(*xs)
            with se.fixed_arch(p.ours, exported):
                fixed = p.ours(*xs)
        assert_within_noise(mixed, ref, oracle, what=f"{kind} DARTS mixture")
        assert_within_noise(out, ref, oracle, what=f"{kind} plain model")
        assert_within_noise(fixed, ref, oracle, what=f"{kind} fixed differentiable path")


@pytest.mark.parametrize("kind", KINDS)
def test_darts_random_alphas_mixture_matches_nni(kind, pairs):
    p = pairs(kind, "differentiable")
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in p.net.named_parameters():
            if "_arch_alpha" in name:
                param.copy_(torch.randn(param.shape, generator=g))
    p.sync()
    xs = inputs(kind, 1)
    with torch.no_grad():
        mixed = p.ours(*xs)
    assert_within_noise(mixed, p.nni_forward(xs), p.nni_forward(xs, double=True),
                        what=f"{kind} DARTS mixture")
    assert dict(se.freeze(p.ours)) == p.lm.export()


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("kind", ["shared", "shared_factory"])
def test_cells_sharing_a_label_share_their_choices(kind, strategy, pairs):
    p = pairs(kind, strategy)
    theirs, ours = p.lm.search_space_spec(), se.search_space(p.ours)
    assert list(ours) == list(theirs)
    assert sorted(ours) == [f"shared/{c}_1_{k}" for c in ("input", "op") for k in (0, 1)]
    assert ([(k, tuple(v.shape)) for k, v in p.ours.state_dict().items()]
            == [(k, tuple(v.shape)) for k, v in p.net.state_dict().items()])
    xs = inputs(kind)
    if strategy == "sampling":
        arch = se.sample_arch(p.ours, 1)
        p.nni_path(arch)
        ctx = se.fixed_arch(p.ours, arch)
    else:
        first, second = (dict(c.named_parameters()) for c in p.ours.cell)
        assert all(first[k] is second[k] for k in first if "_arch_alpha" in k)
        with torch.no_grad():
            for name, param in p.net.named_parameters():
                if "_arch_alpha" in name:
                    param.copy_(torch.randn(param.shape))
        p.sync()
        arch = se.freeze(p.ours)
        assert dict(arch) == p.lm.export()
        ctx = contextlib.nullcontext()
    with torch.no_grad(), ctx:
        out = p.ours(*xs)
    assert_within_noise(out, p.nni_forward(xs), p.nni_forward(xs, double=True), what=kind)


@pytest.mark.parametrize("kind", KINDS)
def test_plain_model_holds_only_the_chosen_ops(kind, pairs):
    p = pairs(kind, "sampling")
    arch = se.sample_arch(p.ours, 2)
    plain = se.materialize(p.ours, arch)
    assert isinstance(plain.cell, FrozenCell if kind in WHOLE else CellBody)
    supercell = p.ours.cell
    expected = sum(t.numel() for t in supercell.preprocessor.parameters())
    for i in range(supercell.num_predecessors, supercell.num_predecessors + supercell.num_nodes):
        n = i - supercell.num_predecessors
        for k in range(supercell.num_ops_per_node):
            name = arch[f"{supercell.label}/op_{i}_{k}"]
            j = arch[f"{supercell.label}/input_{i}_{k}"]
            op = (supercell.ops[n][j][name] if kind in WHOLE
                  else supercell.ops[n][k].chosen({supercell.ops[n][k].label: name}))
            expected += sum(t.numel() for t in op.parameters())
    assert sum(t.numel() for t in plain.parameters()) == expected
    # NNI's cell tests: output shapes of the cell (postprocessor's tuple for custom_processor)
    with torch.no_grad():
        out = plain(*inputs(kind))
    if kind == "custom_processor":
        assert isinstance(out, tuple) and out[0].shape == (2, 16) and out[1].shape == (2, 64)
    elif kind == "conv":
        assert out.shape == (2, 12, 4, 4)
    else:
        assert out.shape == (2, 64)  # every node, loose ends too, as NNI's one-shot cell


def test_automatic_labels_follow_nni():
    @model_wrapper
    class Theirs(nni_nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nni_nn.Cell([nn.Identity()], 1)
            self.b = nni_nn.Cell([nn.Identity()], 1, label="named")
            self.c = nni_nn.Cell([nn.Identity()], 1)

    with ModelNamespace():
        ours = [Cell([nn.Identity()], 1), Cell([nn.Identity()], 1, label="named"),
                Cell([nn.Identity()], 1)]
    theirs = Theirs()
    assert [c.label for c in ours] == [theirs.a.label, theirs.b.label, theirs.c.label]
    assert [c.ops[0][0].label for c in ours] == [f"{c.label}/op_1_0" for c in ours]


def test_user_errors():
    with ModelNamespace():
        with pytest.raises(SearchSpaceError, match="merge_op"):
            Cell([nn.Identity()], 2, merge_op="sum")
        with pytest.raises(SearchSpaceError, match="candidate"):
            Cell([3], 2)
        legacy = Cell(lambda: [nn.Identity(), nn.Identity()], 2, label="legacy")
        cell = Cell([nn.Identity()], 2, num_predecessors=2, label="two")
    with pytest.raises(SearchSpaceError, match="list or dict"):
        se.to_supernet(legacy, hooks=CELL_HOOKS)
    supernet = se.to_supernet(cell, hooks=CELL_HOOKS)
    with pytest.raises(SearchSpaceError, match="2 predecessors"):
        supernet(torch.randn(1, 3))


@pytest.mark.parametrize("kind", ["conv", "custom_processor"])
def test_plain_cell_exports_to_onnx_with_parity(kind, tmp_path, pairs):
    p = pairs(kind, "differentiable")
    arch = se.freeze(p.ours)
    plain = se.materialize(p.ours, arch).eval()
    xs = inputs(kind)
    result = se.export_onnx(plain, xs, tmp_path / "cell.onnx")
    assert result.initializer_bytes == result.state_bytes  # the chosen ops' weights, no others
    report = se.validate(p.ours, arch, plain, result, example_inputs=xs, batch_sizes=(2,),
                         providers=["CPUExecutionProvider"], locate=False)
    assert report.passed, report
