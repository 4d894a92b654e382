"""LayerChoice, InputChoice, Repeat and Choices kept as attributes, both strategies.

Covers the one-shot contract (export, export_probs, resample through ``se.sample_arch``) and the
materialized module of every container against the supernet path and against hand computations.
"""

from __future__ import annotations

import math

import pytest
import torch
from _noise import assert_within_noise
from spaces import (
    STRATEGIES,
    CompositeSpace,
    HeadShuffle,
    alpha_of,
    assert_plain_contract,
    build,
    count_params,
    every_arch,
    image,
)
from torch import nn

import subnet_export as se

W = se.Choice([4, 8], label="w")




# -- layer choice ----------------------------------------------------------------------------------
class LayerChoiceSpace(nn.Module):
    """A stem of width ``w``, a layer choice whose candidates are elastic in ``w``, a head."""

    def __init__(self, as_list: bool = False) -> None:
        super().__init__()
        self.stem = se.Conv2d(3, W, 3, padding=1)
        cands = {
            "conv3": se.Conv2d(W, W, 3, padding=1),
            "conv_bn": nn.Sequential(se.Conv2d(W, W, 1, bias=False), se.BatchNorm2d(W)),
            "skip": nn.Identity(),
        }
        self.op = se.LayerChoice(list(cands.values()) if as_list else cands, label="op")
        self.head = se.Linear(W, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.op(self.stem(x)).mean((2, 3)))


def _layer_choice_params(arch: dict, keys: list[str]) -> int:
    w, op = arch["w"], keys.index(arch["op"])
    stem, head = w * 3 * 9 + w, w * 3 + 3
    return stem + head + (w * w * 9 + w, w * w + 2 * w, 0)[op]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("as_list", [False, True])
def test_layer_choice(strategy: str, as_list: bool) -> None:
    net = build(LayerChoiceSpace(as_list), strategy)
    keys = ["0", "1", "2"] if as_list else ["conv3", "conv_bn", "skip"]
    specs = se.search_space(net)
    assert set(specs) == {"w", "op"}, "the candidates' width must be the outer label"
    assert specs["op"].kind == "layer" and list(specs["op"].candidates) == keys
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, image())
        assert count_params(plain) == _layer_choice_params(arch, keys)
        expected = (nn.Conv2d, nn.Sequential, nn.Identity)[keys.index(arch["op"])]
        assert type(plain.op) is expected
        # Keys carry no candidate name: the chosen module sits where the choice was, keyed as
        # the same torch module would be.
        same = (nn.Conv2d(4, 4, 3),
                nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)),
                nn.Identity())[keys.index(arch["op"])]
        assert {k for k in plain.state_dict() if k.startswith("op.")} == {
            f"op.{k}" for k in same.state_dict()}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_layer_choice_shares_weights_with_the_outer_width(strategy: str) -> None:
    # The conv3 candidate at width 4 is the top-left corner of the same tensor at width 8.
    net = build(LayerChoiceSpace(), strategy)
    small = se.materialize(net, {"w": 4, "op": "conv3"})
    large = se.materialize(net, {"w": 8, "op": "conv3"})
    assert torch.equal(small.op.weight, large.op.weight[:4, :4])


# -- input choice ----------------------------------------------------------------------------------
class InputChoiceSpace(nn.Module):
    """Three branches of one conv each, ``n_chosen`` of them reduced."""

    def __init__(self, n_chosen: int, reduction: str) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(3, 4, 3, padding=1) for _ in range(3))
        self.pick = se.InputChoice(3, n_chosen, reduction=reduction, label="pick")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pick([b(x) for b in self.branches])


def _reduce_by_hand(outs: list[torch.Tensor], reduction: str) -> torch.Tensor:
    if reduction == "concat":
        return torch.cat(outs, 1)
    total = torch.stack(outs).sum(0)
    return total / len(outs) if reduction == "mean" else total


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("reduction", ["sum", "mean", "concat"])
@pytest.mark.parametrize("n_chosen", [1, 2, 3])
def test_input_choice(strategy: str, reduction: str, n_chosen: int) -> None:
    net = build(InputChoiceSpace(n_chosen, reduction), strategy)
    spec = se.search_space(net)["pick"]
    assert spec.kind == "input" and spec.size == math.comb(3, n_chosen)
    x = image()
    with torch.no_grad():
        outs = [b(x) for b in net.branches]
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, x)
        with torch.no_grad():
            got = plain(x)
        expected = _reduce_by_hand([outs[i] for i in arch["pick"]], reduction)
        oracle = _reduce_by_hand([outs[i].double() for i in arch["pick"]], reduction)
        assert_within_noise(got, expected, oracle, what=f"{arch}")


def test_input_choice_differentiable_export_is_top_n() -> None:
    net = build(InputChoiceSpace(2, "sum"), "differentiable")
    weights = torch.tensor([0.3, -1.0, 2.0])
    with torch.no_grad():
        alpha_of(net, "pick").copy_(weights)
    top = sorted(weights.topk(2).indices.tolist())
    assert se.freeze(net) == {"pick": top}
    probs = net.pick.export_probs({})["pick"]
    assert list(probs) == ["0", "1", "2"]
    assert torch.allclose(torch.tensor(list(probs.values())), torch.softmax(weights, 0))


# -- repeat ----------------------------------------------------------------------------------------
def _block(i: int) -> nn.Module:
    return nn.Sequential(se.Conv2d(W, W, 3, padding=1), se.BatchNorm2d(W), nn.ReLU())


class RepeatSpace(nn.Module):
    """A stem of width ``w`` and a repeat of elastic blocks, built by factory, list or copy."""

    def __init__(self, how: str, depths: list[int]) -> None:
        super().__init__()
        self.stem = se.Conv2d(3, W, 1)
        depth = se.Choice(depths, label="depth")
        n = max(depths)
        blocks = {"factory": _block, "list": [_block(i) for i in range(n)], "single": _block(0)}
        self.rep = se.Repeat(blocks[how], depth=depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(self.stem(x))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("how", ["factory", "list", "single"])
@pytest.mark.parametrize("depths", [[1, 2, 3], [0, 2]])
def test_repeat(strategy: str, how: str, depths: list[int]) -> None:
    net = build(RepeatSpace(how, depths), strategy)
    assert se.search_space(net)["depth"].kind == "depth"
    if how == "single":
        # Copies, not one module repeated: the blocks train separately.
        first, second = (net.get_submodule(f"rep.{i}.0").weight for i in (0, 1))
        assert first.data_ptr() != second.data_ptr()
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, image())
        d, w = arch["depth"], arch["w"]
        assert len(plain.rep) == d
        assert count_params(plain) == (3 * w + w) + d * (w * w * 9 + w + 2 * w)
        # The first d blocks, not any d blocks.
        for i in range(d):
            supernet_weight = net.get_submodule(f"rep.{i}.0").weight
            assert torch.equal(plain.rep[i][0].weight, supernet_weight[:w, :w])


def test_repeat_differentiable_export_is_the_argmax() -> None:
    net = build(RepeatSpace("factory", [1, 2, 3]), "differentiable")
    for best in range(3):
        with torch.no_grad():
            alpha_of(net, "depth").copy_(torch.nn.functional.one_hot(torch.tensor(best), 3) * 2.0)
        assert se.freeze(net)["depth"] == [1, 2, 3][best]


class StagedRepeatSpace(nn.Module):
    """One flat block list in three stages (Once-for-All's ``blocks.N``): fixed, elastic, and
    one that may vanish."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = se.Conv2d(3, W, 1)
        self.blocks = se.Repeat(_block, [1, se.Choice([1, 2], label="d1"),
                                         se.Choice([0, 2], label="d2")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_staged_repeat(strategy: str) -> None:
    net = build(StagedRepeatSpace(), strategy)
    specs = se.search_space(net)
    assert {lb: (s.kind, s.candidates) for lb, s in specs.items() if lb != "w"} == {
        "d1": ("depth", (1, 2)), "d2": ("depth", (0, 2))}
    assert [n for n in net.blocks._modules if n.isdigit()] == list("01234")  # 1 + 2 + 2
    for arch in every_arch(specs):
        plain = assert_plain_contract(net, arch, image())
        kept = [0, *range(1, 1 + arch["d1"]), *range(3, 3 + arch["d2"])]
        assert len(plain.blocks) == len(kept)  # numbered consecutively
        for i, j in enumerate(kept):
            supernet_weight = net.get_submodule(f"blocks.{j}.0").weight
            w = arch["w"]
            assert torch.equal(plain.blocks[i][0].weight, supernet_weight[:w, :w])


# -- differentiable export, probabilities and sampling ---------------------------------------------
@pytest.mark.parametrize("op", ["conv3", "conv_bn", "skip"])
@pytest.mark.parametrize("w", [4, 8])
def test_differentiable_export_is_the_argmax(op: str, w: int) -> None:
    net = build(LayerChoiceSpace(), "differentiable")
    keys = ["conv3", "conv_bn", "skip"]
    with torch.no_grad():
        alpha_of(net, "op").copy_(torch.tensor([0.5 if k == op else -0.5 for k in keys]))
        alpha_of(net, "w").copy_(torch.tensor([1.0, -1.0] if w == 4 else [-1.0, 1.0]))
    assert se.freeze(net) == {"w": w, "op": op}
    plain = se.materialize(net)
    assert plain.head.in_features == w


def test_alphas_are_shared_by_label() -> None:
    # Every module using `w` must read one alpha, or their exports could disagree.
    net = build(LayerChoiceSpace(), "differentiable")
    owners = [m for _, m in net.named_modules()
              if isinstance(m, se.BaseSuperNetModule) and "w" in getattr(m, "_alpha_labels", ())]
    assert len(owners) >= 4
    assert len({id(m.alpha("w")) for m in owners}) == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_export_probs(strategy: str) -> None:
    net = build(LayerChoiceSpace(), strategy)
    alpha = torch.tensor([2.0, 0.0, -1.0])
    if strategy == "differentiable":
        with torch.no_grad():
            alpha_of(net, "op").copy_(alpha)
    probs = net.op.export_probs({})
    assert list(probs) == ["op"]
    got = torch.tensor(list(probs["op"].values()))
    expected = torch.softmax(alpha, 0) if strategy == "differentiable" else torch.full((3,), 1 / 3)
    assert list(probs["op"]) == ["conv3", "conv_bn", "skip"]
    assert torch.allclose(got, expected)
    # Labels already decided elsewhere (in memo) are not reported again.
    assert net.op.export_probs({"op": "skip"}) == {}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_arch_is_deterministic_and_valid(strategy: str) -> None:
    net = build(CompositeSpace(), strategy)
    archs = [se.sample_arch(net, seed) for seed in range(12)]
    assert archs == [se.sample_arch(net, seed) for seed in range(12)]
    assert len({str(a) for a in archs}) > 1, "different seeds should give different archs"
    for arch in archs:
        assert se.freeze(net, arch) == arch


def test_sampling_export_is_the_last_sample() -> None:
    net = build(CompositeSpace(), "sampling")
    for seed in range(5):
        arch = se.sample_arch(net, seed)
        assert se.freeze(net) == arch
        assert net.attn.shuffle.heads == arch["heads"]


def test_sampling_export_is_the_last_sample_for_attribute_expressions() -> None:
    net = build(AttrExprSpace(), "sampling")
    for seed in range(8):
        arch = se.sample_arch(net, seed)
        assert net.mix.groups == arch["a"] * arch["b"]
        assert se.freeze(net) == arch


# -- Choices kept as attributes --------------------------------------------------------------------
class AttrSpace(nn.Module):
    """Width from an elastic Linear; the head count only as a plain attribute of a user module."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = se.Linear(6, se.Choice([8, 16], label="dim"))
        self.shuffle = HeadShuffle(se.Choice([1, 2, 4], label="heads"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.fc(x))


class GroupMix(nn.Module):
    """Reverses channel groups; ``groups`` is an expression of two attribute-only choices."""

    def __init__(self, groups) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape
        return x.reshape(b, self.groups, c // self.groups).flip(1).reshape(b, c)


class AttrExprSpace(nn.Module):
    """An attribute that is a product of two choices no module owns."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 24)
        self.mix = GroupMix(se.Choice([1, 2], label="a") * se.Choice([1, 3, 4], label="b"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.fc(x))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_choice_attribute_becomes_its_value(strategy: str) -> None:
    net = build(AttrSpace(), strategy)
    assert se.search_space(net)["heads"].candidates == (1, 2, 4)
    x = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0))
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, x)
        assert type(plain.shuffle.heads) is int and plain.shuffle.heads == arch["heads"]
        assert "_se_choice_attrs" not in vars(plain.shuffle)
        # Independent computation of the same forward with the arch's head count.
        with torch.no_grad():
            y = plain.fc(x)
            h = arch["heads"]
            expected = y.reshape(3, 5, h, -1).flip(2).reshape(3, 5, -1)
            assert torch.equal(plain(x), expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_choice_attribute_follows_fixed_arch(strategy: str) -> None:
    net = build(AttrSpace(), strategy)
    before = net.shuffle.heads
    for heads in (1, 2, 4):
        with se.fixed_arch(net, {"dim": 16, "heads": heads}):
            assert net.shuffle.heads == heads
        assert net.shuffle.heads == before


def test_choice_attribute_expression_in_plain_model() -> None:
    net = build(AttrExprSpace(), "sampling")
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, torch.randn(2, 4))
        assert plain.mix.groups == arch["a"] * arch["b"]


def test_registered_hooks_convert_their_placeholders():
    from torch import nn as tnn

    from subnet_export.space.placeholders import Placeholder
    from subnet_export.supernet import convert

    class Doubler(Placeholder):
        def is_elastic(self):
            return True

    class MixedDoubler(se.BaseSuperNetModule):
        @classmethod
        def mutate(cls, module, name, memo, mutate_kwargs):
            return cls() if type(module) is Doubler else None

        def search_space_spec(self):
            return {}

        def forward(self, x):
            return 2 * x

    space = tnn.Sequential(Doubler())
    with pytest.raises(se.SearchSpaceError, match="no supernet module accepts Doubler"):
        se.to_supernet(space)
    convert.register_hooks(MixedDoubler)
    convert.register_hooks(MixedDoubler)
    try:
        assert convert._REGISTERED.count(MixedDoubler) == 1
        net = se.to_supernet(tnn.Sequential(Doubler()))
        assert isinstance(net[0], MixedDoubler)
        with pytest.raises(TypeError, match="not a BaseSuperNetModule"):
            convert.register_hooks(tnn.ReLU)
    finally:
        convert._REGISTERED.remove(MixedDoubler)


# -- containers of front ends (the NNI drop-in), structured mixtures ----------------------------
def test_weighted_sum_mixes_tensors_tuples_and_dicts():
    # NNI 2.10's test_weighted_sum, through ours
    from subnet_export.supernet.weighted import weighted_sum

    weights = [0.1, 0.2, 0.7]
    assert abs(weighted_sum([1, 2, 3], weights) - 2.6) < 1e-6
    items = [torch.full((2, 3, 5), float(i)) for i in (1, 2, 3)]
    assert abs(weighted_sum(items, weights).flatten()[0].item() - 2.6) < 1e-6
    res = weighted_sum([(1, 2), (3, 4), (5, 6)], weights)
    assert isinstance(res, list) and res == pytest.approx([4.2, 5.2])
    res = weighted_sum([{"a": i, "b": torch.full((2,), float(i))} for i in (1, 2, 3)], weights)
    assert res["a"] == pytest.approx(2.6) and res["b"].shape == (2,)
    for bad in (["a", "b", "c"], [torch.randn(2, 3, i) for i in (1, 2, 3)],
                [(1, 2), (3, 4), (5, 6, 7)], []):
        with pytest.raises(se.SearchSpaceError):
            weighted_sum(bad, weights if bad else [])


def test_only_declared_subclasses_are_converted_by_the_built_in_modules():
    from subnet_export.space import containers

    class Opted(containers.LayerChoice):
        converts_as = containers.LayerChoice

    class Other(containers.LayerChoice):
        pass

    ops = {"a": nn.Linear(2, 2), "b": nn.Identity()}
    net = se.to_supernet(nn.Sequential(Opted(dict(ops), label="x")))
    assert isinstance(net[0], se.BaseSuperNetModule) and se.search_space(net)["x"].kind == "layer"
    with pytest.raises(se.SearchSpaceError, match="no supernet module accepts"):
        se.to_supernet(nn.Sequential(Other(dict(ops), label="x")))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_repeat_in_a_holder_keeps_the_level_in_the_supernet_only(strategy):
    from subnet_export.space import containers

    class Held(containers.Repeat):
        converts_as = containers.Repeat
        holder = "blocks"

        def __init__(self, blocks, depth):
            super().__init__(blocks, depth)
            self.blocks = nn.ModuleList(list(self._modules.values()))
            for key in [k for k in self._modules if k != "blocks"]:
                del self._modules[key]

    d = se.Choice([1, 2, 3], label="d")
    net = se.to_supernet(nn.Sequential(nn.Linear(3, 4), Held(lambda i: nn.Linear(4, 4), d)),
                         strategy)
    assert [k for k in net.state_dict() if "_arch_alpha" not in k][2] == "1.blocks.0.weight"
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, torch.randn(2, 3))
        assert list(plain.state_dict())[-1] == f"1.{arch['d'] - 1}.bias"


def test_input_choice_reduction_none_returns_the_list():
    from subnet_export.space import containers

    class Listed(containers.InputChoice):
        converts_as = containers.InputChoice
        REDUCTIONS = ("sum", "none")

    net = se.to_supernet(nn.Sequential(Listed(3, 2, "none", label="i")))
    xs = [torch.full((1,), float(k)) for k in range(3)]
    plain = se.materialize(net, {"i": [2, 0]})
    assert plain[0](xs) == [xs[0], xs[2]]
    with se.fixed_arch(net, {"i": [0, 1]}):
        assert net[0](xs) == [xs[0], xs[1]]
