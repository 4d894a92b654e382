"""``subnet_export.nni.Repeat`` against NNI 2.10's ``nn.Repeat`` and its one-shot supernets.

Keys: the supernet keeps NNI's ``<path>.blocks.N`` (so NNI's checkpoints load key for key), the
plain model NNI's fixed model's ``<path>.N``. Depths: an int, a ``(min, max)`` tuple, a
ValueChoice, an expression over one; blocks from a factory, a list or one module. Forwards: the
sampled path, NNI's DARTS mixture (tuple and dict outputs too).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _noise import assert_within_noise
from _twin import (
    as_json,
    assert_path_equals_nni,
    build,
    nni_run,
    nni_space,
    our_space,
    set_alphas,
    spec_list,
)
from torch import nn as tnn

import subnet_export as se
import subnet_export.nni as our_nn
from subnet_export.errors import SearchSpaceError
from subnet_export.supernet.repeat import MixedRepeat

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:no @model_wrapper:RuntimeWarning")]


class Block(tnn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.lin = tnn.Linear(width, width)
        self.norm = tnn.LayerNorm(width)

    def forward(self, x):
        return x + torch.tanh(self.norm(self.lin(x)))


DEPTHS = {
    "tuple": lambda nn: (1, 3),
    "labelled_tuple": lambda nn: (2, 4),
    "value_choice": lambda nn: nn.ValueChoice([1, 2, 4], label="d"),
    "expression": lambda nn: 2 * nn.ValueChoice([0, 1, 2], label="d") + 1,
}
BLOCKS = {
    "factory": lambda nn, n: (lambda i: Block()),
    "module": lambda nn, n: Block(),
    "list": lambda nn, n: [Block() for _ in range(n + 1)],
}


def space(depth: str, blocks: str = "factory"):
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.pre = nn.Linear(3, 4)
                label = "rep" if depth == "labelled_tuple" else None
                self.rep = nn.Repeat(BLOCKS[blocks](nn, 5), DEPTHS[depth](nn), label=label)
                self.post = nn.Linear(4, 2)

            def forward(self, x):
                return self.post(self.rep(self.pre(x)))
        return Net()
    return make


def archs(twin) -> list[dict]:
    theirs, _ = spec_list(twin)
    (label, values), = theirs
    return [{label: v} for v in values]


@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
@pytest.mark.parametrize("depth", list(DEPTHS))
def test_labels_and_supernet_keys_are_nnis(depth, strategy):
    twin = build(space(depth), strategy)
    theirs, ours = spec_list(twin)
    assert ours == theirs
    assert twin.our_keys() == twin.nni_keys()
    assert any(k.startswith("rep.blocks.2.") for k in twin.our_keys())


@pytest.mark.parametrize("blocks", list(BLOCKS))
@pytest.mark.parametrize("depth", ["tuple", "expression"])
def test_sampled_path_and_plain_model_are_nnis(depth, blocks):
    twin = build(space(depth, blocks), "sampling")
    x = torch.randn(5, 3)
    for arch in archs(twin):
        twin.nni.resample(memo=dict(arch))
        assert_path_equals_nni(twin, arch, x)
        plain = se.materialize(twin.ours, se.freeze(twin.ours, arch))
        n = se.evaluate(twin.ours.rep.stages[0][1], arch)
        assert [k for k in plain.state_dict() if k.startswith("rep.")] == [
            k.replace("rep.blocks.", "rep.") for k in twin.nni_keys()
            if k.startswith("rep.blocks.") and int(k.split(".")[2]) < n]


def test_plain_model_is_nnis_fixed_model():
    twin = build(space("expression"), "sampling")
    x = torch.randn(2, 3)
    for arch in archs(twin):
        with our_nn.fixed_arch(arch):
            fixed = our_space(space("expression"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nni.retiarii import fixed_arch as nni_fixed_arch
            with nni_fixed_arch(arch):
                theirs = nni_space(space("expression"))
        assert type(fixed.rep) is tnn.Sequential and type(theirs.rep) is tnn.Sequential
        assert list(fixed.state_dict()) == list(theirs.state_dict())
        plain = se.materialize(twin.ours, se.freeze(twin.ours, arch))
        assert list(plain.state_dict()) == list(fixed.state_dict())
        fixed.load_state_dict(plain.state_dict())
        with torch.no_grad():
            assert torch.equal(fixed(x), plain(x))


def test_depth_zero_is_the_identity():
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.rep = nn.Repeat(lambda i: Block(), (0, 2))

            def forward(self, x):
                return self.rep(x)
        return Net()

    net = se.to_supernet(our_space(make))
    x = torch.randn(3, 4)
    with torch.no_grad(), se.fixed_arch(net, {"model_1": 0}):
        assert torch.equal(net(x), x)
    plain = se.materialize(net, {"model_1": 0})
    assert len(plain.rep) == 0 and torch.equal(plain(x), x)


@pytest.mark.parametrize("depth", ["tuple", "value_choice", "expression"])
def test_darts_mixture_is_nnis(depth):
    twin = build(space(depth), "differentiable")
    x = torch.randn(5, 3)
    for seed in range(3):
        set_alphas(twin, seed)
        out, out64 = nni_run(twin.nni, x)
        with torch.no_grad():
            got = twin.ours(x)
        assert_within_noise(got, out, out64, what=f"mixture, seed {seed}")
        assert as_json(se.freeze(twin.ours)) == as_json(twin.nni.export())


def test_darts_mixture_leaves_out_a_depth_of_zero_as_nni():
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.rep = nn.Repeat(lambda i: Block(), (0, 2))

            def forward(self, x):
                return self.rep(x)
        return Net()

    twin = build(make, "differentiable")
    set_alphas(twin, 4)
    x = torch.randn(3, 4)
    out, out64 = nni_run(twin.nni, x)
    with torch.no_grad():
        assert_within_noise(twin.ours(x), out, out64, what="mixture with a depth of 0")


class TupleModule(tnn.Module):
    def __init__(self, num: int) -> None:
        super().__init__()
        self.num = num
        self.scale = tnn.Parameter(torch.tensor(float(num)))

    def forward(self, *args):
        return (torch.full((2, 3), 1.0) * self.scale, torch.full((3, 5), float(self.num)),
                {"a": 7, "b": [self.num] * 11})


def test_darts_mixture_of_tuples_and_dicts_is_nnis():
    # NNI's own test_differentiable_repeat, through both supernets
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.rep = nn.Repeat(lambda i: TupleModule(i + 1),
                                     nn.ValueChoice([1, 2, 4], label="ccc"))

            def forward(self, x):
                return self.rep(x)
        return Net()

    twin = build(make, "differentiable")
    set_alphas(twin, 2)
    with torch.no_grad():
        theirs, ours = twin.nni_model(None), twin.ours(None)
    assert isinstance(ours, list) and len(ours) == len(theirs) == 3
    assert torch.allclose(ours[0], theirs[0]) and torch.allclose(ours[1], theirs[1])
    assert ours[2]["a"] == theirs[2]["a"]
    assert [float(v) for v in ours[2]["b"]] == pytest.approx([float(v) for v in theirs[2]["b"]])


def test_int_depth_keeps_nnis_blocks_level():
    def make(nn, wrap):
        @wrap
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.rep = nn.Repeat(Block(), 2)
                self.lc = nn.LayerChoice([nn.Identity(), nn.Linear(4, 4)])

            def forward(self, x):
                return self.lc(self.rep(x))
        return Net()

    for strategy in ("sampling", "differentiable"):
        net = se.to_supernet(our_space(make), strategy)
        assert isinstance(net.rep, MixedRepeat) and se.search_space(net).keys() == {"model_1"}
        assert [k for k in net.state_dict() if k.startswith("rep.")][0] == "rep.blocks.0.lin.weight"
        plain = se.materialize(net, {"model_1": "0"})
        assert list(plain.state_dict())[0] == "rep.0.lin.weight"


def test_native_repeat_is_unchanged():
    net = se.to_supernet(tnn.Sequential(se.Repeat(lambda i: tnn.Linear(2, 2),
                                                  se.Choice([1, 2], label="d"))))
    assert list(net.state_dict())[0] == "0.0.weight"
    assert se.search_space(net)["d"].kind == "depth"


def test_nni_api_of_repeat():
    reps = [nn.Repeat(lambda i: tnn.Linear(2, 2), (1, 3)) for nn in (our_nn,)]
    rep = reps[0]
    assert len(rep) == 3 and rep[1] is rep.blocks[1] and rep.min_depth == 1
    assert isinstance(rep.depth_choice, our_nn.ValueChoice) and rep.label == rep.depth_choice.label
    blocks = [tnn.Linear(2, 2) for _ in range(5)]
    assert list(our_nn.Repeat(blocks, 3).blocks) == blocks[:3]
    first = Block()
    copied = our_nn.Repeat(first, 3).blocks
    assert copied[0] is first and copied[1] is not first
    expr = our_nn.Repeat(Block(), 2 * our_nn.ValueChoice([1, 2], label="x") + 1)
    assert expr.label is None and expr.max_depth == 5
    with pytest.warns(RuntimeWarning, match="ignored"):
        our_nn.Repeat(Block(), our_nn.ValueChoice([1, 2], label="y"), label="z")


@pytest.mark.parametrize("blocks, depth", [
    (Block(), (3, 1)), (Block(), (0, 0)), (Block(), "2"), (Block(), [1, 2]),
    ([Block(), Block()], (1, 3)), (Block(), our_nn.ValueChoice([0.5, 1.0], label="f")),
])
def test_invalid_repeats_are_search_space_errors(blocks, depth):
    with pytest.raises(SearchSpaceError):
        our_nn.Repeat(blocks, depth)


def test_nni_sampled_archs_freeze_unchanged():
    twin = build(space("expression"), "sampling")
    for seed in range(3):
        arch = as_json(twin.nni.resample())
        assert dict(se.freeze(twin.ours, arch)) == arch
