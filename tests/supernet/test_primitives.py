"""Parameter, EdgeChoice, and a repeat's depth label read in an expression; both strategies.

Each primitive is checked against the materialize contract (parity with the supernet path,
``state_dict`` keys equal to ``sub_state_dict`` keys, no supernet class left) over every arch of
a small space, and its plain model's parameter count against a hand count.
"""

from __future__ import annotations

import pytest
import torch
from _noise import assert_within_noise
from spaces import (
    STRATEGIES,
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




# -- Parameter -------------------------------------------------------------------------------------
TOKENS = 5


class TokenSpace(nn.Module):
    """A ViT-like embedding: a cls token and a position embedding of width ``w``, and a learnt
    ``r x w`` table (two elastic dims) that the tokens are projected on."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = se.Linear(6, W)
        self.cls_token = se.Parameter(1, 1, W)
        self.pos_embed = se.Parameter(1, TOKENS + 1, W)
        self.table = se.Parameter(se.Choice([2, 3], label="r"), W, std=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        cls = self.cls_token().expand(x.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed()
        return tokens @ self.table().T


def _tokens(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, TOKENS, 6, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_parameter(strategy: str) -> None:
    net = build(TokenSpace(), strategy, weights=True)
    assert type(net.cls_token).__name__ == "ElasticParameter"
    specs = se.search_space(net)
    assert list(specs) == ["w", "r"] and specs["r"].kind == "value"
    archs = every_arch(se.search_space(net))
    assert len(archs) == 4
    for arch in archs:
        plain = assert_plain_contract(net, arch, _tokens())
        w, r = arch["w"], arch["r"]
        for name in ("cls_token", "pos_embed", "table"):
            assert type(getattr(plain, name)) is se.LearnedTensor
        assert plain.table.weight.shape == (r, w)
        assert count_params(plain) == (6 * w + w) + w + (TOKENS + 1) * w + r * w
        # The first k along every dim.
        assert torch.equal(plain.table.weight, net.table.weight[:r, :w])
        assert torch.equal(plain.pos_embed.weight, net.pos_embed.weight[..., :w])
        assert list(plain.state_dict()) == ["embed.weight", "embed.bias", "cls_token.weight",
                                            "pos_embed.weight", "table.weight"]


def test_parameter_differentiable_mixture_runs_at_full_size() -> None:
    net = build(TokenSpace(), "differentiable", weights=True)
    assert net(_tokens()).shape == (2, TOKENS + 1, 3)
    with torch.no_grad():
        alpha_of(net, "w").copy_(torch.tensor([-1.0, 1.0]))
        alpha_of(net, "r").copy_(torch.tensor([1.0, -1.0]))
    assert se.freeze(net) == {"w": 8, "r": 2}
    assert se.materialize(net).table.weight.shape == (2, 8)


def test_fixed_parameter_is_a_plain_learned_tensor() -> None:
    placeholder = se.Parameter(1, 1, 64)
    assert not placeholder.is_elastic()
    plain = placeholder.to_plain()
    assert type(plain) is se.LearnedTensor and plain.weight.shape == (1, 1, 64)
    assert plain().abs().max() <= 2 * 0.02  # truncated at two std
    space = nn.Sequential()
    space.add_module("tok", se.Parameter(1, 1, 64))
    net = se.to_supernet(space)
    assert type(net.tok) is se.LearnedTensor and se.search_space(net) == {}
    assert type(se.to_supernet(se.Parameter(2, 3))) is se.LearnedTensor


@pytest.mark.parametrize("shape", [(), (0, 4), (2.5,), ("3",)])
def test_parameter_refuses_bad_sizes(shape) -> None:
    with pytest.raises(se.SearchSpaceError, match="Parameter"):
        se.Parameter(*shape)


def test_parameter_refuses_a_size_that_evaluates_to_zero() -> None:
    space = nn.Sequential()
    space.add_module("tok", se.Parameter(se.compose(lambda w: w - 4, W)))
    with pytest.raises(se.SearchSpaceError, match="positive"):
        se.to_supernet(space)


# -- EdgeChoice ------------------------------------------------------------------------------------
def _edges() -> list[nn.Module]:
    return [
        se.Conv2d(W, W, 3, padding=1),
        se.LayerChoice({"conv": se.Conv2d(W, W, 1), "skip": nn.Identity(), "none": se.Zero()},
                       label="e1"),
        nn.Sequential(se.BatchNorm2d(W), nn.ReLU()),
    ]


class EdgeSpace(nn.Module):
    """A stem of width ``w`` and one node keeping ``n_chosen`` of three edges, each its own op."""

    def __init__(self, n_chosen: int, label: str | None = "node") -> None:
        super().__init__()
        self.stem = se.Conv2d(3, W, 3, padding=1)
        self.node = se.EdgeChoice(_edges(), n_chosen, label=label)
        self.head = se.Linear(W, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        states = [s, torch.relu(s), 0.5 * s]
        return self.head(self.node(states).mean((2, 3)))


def _edge_params(arch: dict) -> dict[int, int]:
    w = arch["w"]
    conv1 = {"conv": w * w + w, "skip": 0, "none": 0}[arch["e1"]]
    return {0: w * w * 9 + w, 1: conv1, 2: 2 * w}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n_chosen", [1, 2, 3])
def test_edge_choice(strategy: str, n_chosen: int) -> None:
    net = build(EdgeSpace(n_chosen), strategy, weights=True)
    spec = se.search_space(net)["node"]
    assert spec.kind == "input" and spec.n_chosen == n_chosen and spec.candidates == (0, 1, 2)
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, image())
        w, chosen = arch["w"], arch["node"]
        assert type(plain.node) is se.ChosenEdges
        assert plain.node.indices == chosen and len(plain.node.ops) == n_chosen
        per_edge = _edge_params(arch)
        assert count_params(plain) == (3 * w * 9 + w) + (w * 5 + 5) + sum(
            per_edge[j] for j in chosen)
        # Only the chosen edges' tensors, under ops.<k>: the k-th chosen edge's own keys.
        with se.fixed_arch(net, arch):
            expected = {f"node.ops.{k}.{key}" for k, j in enumerate(chosen)
                        for key in se.sub_state_dict(net.node.edge(j))}
        assert {k for k in plain.state_dict() if k.startswith("node.")} == expected


def test_edge_choice_zero_edges_leave_no_op() -> None:
    # A chosen edge whose op is the zero op adds nothing: the plain node skips it.
    net = build(EdgeSpace(2), "sampling", weights=True)
    arch = {"w": 4, "e1": "none", "node": [1, 2]}
    plain = assert_plain_contract(net, arch, image())
    assert type(plain.node.ops[0]) is se.Zero
    s = plain.stem(image())
    assert torch.equal(plain.node([s, torch.relu(s), 0.5 * s]), plain.node.ops[1](0.5 * s))


def test_edge_choice_differentiable_export_is_the_top_k() -> None:
    net = build(EdgeSpace(2), "differentiable", weights=True)
    for weights in ([0.3, -1.0, 0.9], [-0.2, 0.4, 0.1], [2.0, 1.0, -3.0]):
        with torch.no_grad():
            alpha_of(net, "node").copy_(torch.tensor(weights))
        top2 = sorted(torch.tensor(weights).topk(2).indices.tolist())
        assert se.freeze(net)["node"] == top2
        plain = se.materialize(net)
        assert plain.node.indices == top2


def test_edge_choice_differentiable_forward_is_the_softmax_mixture() -> None:
    net = build(EdgeSpace(1), "differentiable", weights=True)
    with torch.no_grad():
        alpha_of(net, "node").copy_(torch.tensor([0.5, -0.25, 1.0]))
    s = net.stem(image())
    states = [s, torch.relu(s), 0.5 * s]
    p = torch.softmax(alpha_of(net, "node"), -1)
    with torch.no_grad():
        terms = [net.node.edge(j)(states[j]) for j in range(3)]
        ref = sum(p[j] * terms[j] for j in range(3))
        oracle = sum(p[j].double() * terms[j].double() for j in range(3))
        assert_within_noise(net.node(states), ref, oracle)


def test_edge_choice_label_defaults_to_the_module_path() -> None:
    space = nn.Sequential(nn.Identity(), EdgeSpace(1, label=None))
    net = se.to_supernet(space)
    specs = se.search_space(net)
    assert "1.node" in specs and specs["1.node"].kind == "input"
    layer = se.to_supernet(nn.Sequential(nn.Identity(), se.LayerChoice([nn.ReLU(), nn.Tanh()])))
    assert list(se.search_space(layer)) == ["1"]  # the same rule as LayerChoice's


@pytest.mark.parametrize("args, match", [
    (([nn.ReLU(), nn.Tanh()], 0), "n_chosen"),
    (([nn.ReLU(), nn.Tanh()], 3), "n_chosen"),
    (([nn.ReLU(), "relu"], 1), "nn.Module"),
    (([], 1), "n_chosen"),
])
def test_edge_choice_refuses_bad_arguments(args, match) -> None:
    with pytest.raises(se.SearchSpaceError, match=match):
        se.EdgeChoice(*args, label="node")


# -- depth label read in an expression -------------------------------------------------------------
class VanishingStage(nn.Module):
    """A stage that may have no block: the head's input width and a scale read its depth."""

    def __init__(self, head_first: bool = False) -> None:
        super().__init__()
        d = se.Choice([0, 1, 2], label="d")
        head = se.Linear(se.compose(lambda d, w: w if d else 3, d, W), 5)
        if head_first:  # the value use comes first in module order
            self.head = head
        self.stage = se.Repeat(lambda i: nn.Sequential(se.Conv2d(3 if i == 0 else W, W, 3,
                                                                 padding=1), nn.ReLU()), d)
        if not head_first:
            self.head = head
        self.scale = se.compose(lambda d: 1.0 + 0.5 * d, d)  # a choice attribute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(x).mean((2, 3))) * self.scale


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("head_first", [False, True])
def test_depth_label_read_in_an_expression(strategy: str, head_first: bool) -> None:
    net = build(VanishingStage(head_first), strategy, weights=True)
    specs = se.search_space(net)
    assert specs["d"] == se.ParameterSpec("d", "depth", (0, 1, 2))
    assert list(specs) == ["d", "w"]  # first use in module order, whichever kind it is
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, image())
        d, w = arch["d"], arch["w"]
        assert len(plain.stage) == d and plain.scale == 1.0 + 0.5 * d
        stage = (3 * w * 9 + w) + (d - 1) * (w * w * 9 + w) if d else 0
        assert count_params(plain) == stage + (w if d else 3) * 5 + 5
    with pytest.raises(se.ArchError, match="'d'"):
        se.freeze(net, {"d": 1.0, "w": 4})


def test_depth_label_shares_its_architecture_weights_with_the_value_use() -> None:
    net = build(VanishingStage(), "differentiable", weights=True)
    users = [m for m in net.modules() if "d" in getattr(m, "_alpha_labels", ())]
    assert len(users) == 2 and users[0].alpha("d") is users[1].alpha("d")
    with torch.no_grad():
        alpha_of(net, "d").copy_(torch.tensor([-1.0, -1.0, 1.0]))
    assert se.freeze(net)["d"] == 2


class DepthMismatch(nn.Module):
    """A repeat's depth label used elsewhere with another meaning (``how``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.stage = se.Repeat(lambda i: nn.Conv2d(3, 3, 1), se.Choice([1, 2], label="d"))
        if how == "other_candidates":
            self.head = se.Linear(3, se.Choice([1, 2, 3], label="d"))
        elif how == "other_types":
            self.scale = se.Choice([1.0, 2.0], label="d")
        elif how == "layer_choice":
            self.op = se.LayerChoice([nn.ReLU(), nn.Tanh()], label="d")
        elif how == "input_choice":
            self.pick = se.InputChoice(2, 1, label="d")
        elif how == "two_depths":
            self.more = se.Repeat(lambda i: nn.Conv2d(3, 3, 1), se.Choice([1, 3], label="d"))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("how", ["other_candidates", "other_types", "layer_choice",
                                 "input_choice", "two_depths"])
def test_depth_label_with_another_meaning_is_refused(strategy: str, how: str) -> None:
    with pytest.raises(se.SearchSpaceError, match="'d'"):
        se.to_supernet(DepthMismatch(how), strategy=strategy)


def test_parameter_is_native() -> None:
    # Parameter has no NNI counterpart: it slices by the native rule and says so.
    net = build(TokenSpace(), "sampling")
    assert {m.convention for m in net.modules() if type(m).__name__ == "ElasticParameter"} == {
        "native"}
