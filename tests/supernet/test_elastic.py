"""Elastic Conv2d, Linear, BatchNorm2d, LayerNorm and MultiheadAttention, both strategies.

For every module type and many archs: the materialized module computes what the supernet path
computes, has the parameter count of a hand formula, and its weights equal the slicing rules of
DESIGN.md applied by hand to the supernet tensors and loaded into a plain torch module built here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from _noise import assert_within_noise, run_float64
from spaces import (
    STRATEGIES,
    Single,
    arch_sweep,
    assert_plain_contract,
    count_params,
    randomise,
)
from torch import nn

import subnet_export as se

# torch warns that an even kernel with padding="same" pads asymmetrically; that is the case
# under test, on both sides of the comparison.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def centre(full: int, k: int) -> slice:
    """The k-wide centre window of ``full``; with an odd difference the extra row is at the end."""
    lo = (full - k) // 2
    hi = full - k - lo
    return slice(lo, full - hi)


# -- the cases -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One elastic module under test.

    ``space()`` builds the search space; ``inputs(v)`` the input for evaluated arch ``v``;
    ``n_params(v)`` the hand-counted parameters; ``reference(sup, v)`` a plain torch module
    built here, holding the supernet module ``sup``'s weights sliced by hand.
    """

    name: str
    space: Callable[[], nn.Module]
    inputs: Callable[[dict[str, Any]], torch.Tensor]
    n_params: Callable[[dict[str, Any]], int]
    reference: Callable[[nn.Module, dict[str, Any]], nn.Module]


def _img(c: int, size: int = 9) -> torch.Tensor:
    return torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(c))


def _ref_conv(sup, v, *, cin, cout, k, groups=1, stride=1, padding=0, dilation=1, bias=True):
    ref = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias)
    K = sup.weight.shape[-1]
    w = sup.weight[:cout, : cin // groups]
    if getattr(sup, "kernel_transform", False):
        w = _ofa_transform(sup, w, k)
    else:
        w = w[..., centre(K, k), centre(K, k)]
    with torch.no_grad():
        ref.weight.copy_(w)
        if bias:
            ref.bias.copy_(sup.bias[:cout])
    return ref


def _ofa_transform(sup, w: torch.Tensor, k: int) -> torch.Tensor:
    # Once-for-All: crop to the next smaller kernel, multiply by its learnt (b*b x b*b) matrix,
    # repeat until k; written out here from the parameter names, independently of crop_kernel.
    sizes = sorted({int(n.split("_")[1].split("to")[0]) for n, _ in sup.named_parameters()
                    if n.startswith("transform_")} | {w.shape[-1], k}, reverse=True)
    sizes = [s for s in sizes if s >= k]
    for a, b in zip(sizes, sizes[1:]):
        w = w[..., centre(a, b), centre(a, b)]
        m = getattr(sup, f"transform_{a}to{b}")
        w = (w.reshape(*w.shape[:2], b * b) @ m.T).reshape(*w.shape[:2], b, b)
    return w


def _conv_space(**kw):
    def space():
        return Single(se.Conv2d(**kw))
    return space


_out = se.Choice([4, 6, 8], label="out")
_k = se.Choice([3, 4, 5, 7], label="k")
_s = se.Choice([1, 2], label="stride")
_cin = se.Choice([2, 3, 5], label="cin")
_d = se.Choice([1, 2], label="dil")
_c = se.Choice([4, 8], label="c")
_kdw = se.Choice([3, 5, 6], label="k")
_fin = se.Choice([5, 7], label="fin")
_fout = se.Choice([3, 6], label="fout")
_nf = se.Choice([4, 6, 8], label="nf")
_e = se.Choice([8, 16], label="embed")
_h = se.Choice([1, 2, 4], label="heads")

CASES = [
    Case("conv_out_kernel_stride",
         _conv_space(in_channels=3, out_channels=_out, kernel_size=_k, stride=_s,
                     padding=_k // 2),
         lambda v: _img(3),
         lambda v: v["out"] * 3 * v["k"] ** 2 + v["out"],
         lambda sup, v: _ref_conv(sup, v, cin=3, cout=v["out"], k=v["k"], stride=v["stride"],
                                  padding=v["k"] // 2)),
    Case("conv_in_same_dilation",
         _conv_space(in_channels=_cin, out_channels=5, kernel_size=_k, padding="same",
                     dilation=_d, bias=False),
         lambda v: _img(v["cin"]),
         lambda v: 5 * v["cin"] * v["k"] ** 2,
         lambda sup, v: _ref_conv(sup, v, cin=v["cin"], cout=5, k=v["k"], padding="same",
                                  dilation=v["dil"], bias=False)),
    Case("conv_depthwise_multiplier",
         _conv_space(in_channels=_c, out_channels=_c * 2, kernel_size=_kdw, padding=_kdw // 2,
                     groups=_c),
         lambda v: _img(v["c"]),
         lambda v: 2 * v["c"] * v["k"] ** 2 + 2 * v["c"],
         lambda sup, v: _ref_conv(sup, v, cin=v["c"], cout=2 * v["c"], k=v["k"], groups=v["c"],
                                  padding=v["k"] // 2)),
    Case("conv_kernel_transform",
         lambda: Single(se.Conv2d(3, _out, _k, padding="same", kernel_transform=True)),
         lambda v: _img(3),
         lambda v: v["out"] * 3 * v["k"] ** 2 + v["out"],
         lambda sup, v: _ref_conv(sup, v, cin=3, cout=v["out"], k=v["k"], padding="same")),
    Case("linear",
         lambda: Single(se.Linear(_fin, _fout)),
         lambda v: torch.randn(4, v["fin"], generator=torch.Generator().manual_seed(1)),
         lambda v: v["fout"] * v["fin"] + v["fout"],
         lambda sup, v: _ref_linear(sup, v["fin"], v["fout"], bias=True)),
    Case("linear_no_bias_expr",
         lambda: Single(se.Linear(_fin, _fin * 2, bias=False)),
         lambda v: torch.randn(3, 2, v["fin"], generator=torch.Generator().manual_seed(2)),
         lambda v: 2 * v["fin"] ** 2,
         lambda sup, v: _ref_linear(sup, v["fin"], 2 * v["fin"], bias=False)),
    Case("batchnorm2d",
         lambda: Single(se.BatchNorm2d(_nf)),
         lambda v: _img(v["nf"], 5) * 3 + 1,
         lambda v: 2 * v["nf"],
         lambda sup, v: _ref_norm(nn.BatchNorm2d(v["nf"]), sup, v["nf"],
                                  ("weight", "bias", "running_mean", "running_var"))),
    Case("layernorm",
         lambda: Single(se.LayerNorm(_nf)),
         lambda v: torch.randn(3, 4, v["nf"], generator=torch.Generator().manual_seed(3)) * 2 + 1,
         lambda v: 2 * v["nf"],
         lambda sup, v: _ref_norm(nn.LayerNorm(v["nf"]), sup, v["nf"], ("weight", "bias"))),
    *(Case(f"attention_batch_first_{bf}",
           (lambda bf=bf: Single(se.MultiheadAttention(_e, _h, batch_first=bf), "attention")),
           lambda v: torch.randn(3, 5, v["embed"], generator=torch.Generator().manual_seed(4)),
           lambda v: 4 * v["embed"] ** 2 + 4 * v["embed"],
           (lambda sup, v, bf=bf: _ref_attention(sup, v["embed"], v["heads"], bf)))
      for bf in (True, False)),
]


def _ref_linear(sup, fin: int, fout: int, bias: bool) -> nn.Module:
    ref = nn.Linear(fin, fout, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(sup.weight[:fout, :fin])
        if bias:
            ref.bias.copy_(sup.bias[:fout])
    return ref


def _ref_norm(ref: nn.Module, sup, k: int, names: tuple[str, ...]) -> nn.Module:
    with torch.no_grad():
        for name in names:
            getattr(ref, name).copy_(getattr(sup, name)[:k])
    return ref


def _ref_attention(sup, e: int, h: int, batch_first: bool) -> nn.Module:
    # The supernet keeps H_max heads of D_max dims per projection; the subnet takes the first
    # e/h dims of each of its first h heads, row by row, built here without index tensors.
    d_max = max(ee // hh for ee in _e.candidates for hh in _h.candidates)
    inner = max(_h.candidates) * d_max
    rows = [block * inner + head * d_max + j
            for block in range(3) for head in range(h) for j in range(e // h)]
    ref = nn.MultiheadAttention(e, h, batch_first=batch_first)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.stack([sup.in_proj_weight[r, :e] for r in rows]))
        ref.in_proj_bias.copy_(torch.stack([sup.in_proj_bias[r] for r in rows]))
        out_cols = rows[: h * (e // h)]
        ref.out_proj.weight.copy_(torch.stack([sup.out_proj_weight[:e, c] for c in out_cols], 1))
        ref.out_proj.bias.copy_(sup.out_proj_bias[:e])
    return ref


# -- fixtures --------------------------------------------------------------------------------------
_SUPERNETS: dict[tuple[str, str], nn.Module] = {}


def supernet(case: Case, strategy: str) -> nn.Module:
    """The case's supernet with randomised weights, built once per (case, strategy)."""
    key = (case.name, strategy)
    if key not in _SUPERNETS:
        torch.manual_seed(0)
        net = se.to_supernet(case.space(), strategy=strategy).eval()
        randomise(net, seed=len(_SUPERNETS))
        _SUPERNETS[key] = net
    return _SUPERNETS[key]


def _params():
    for case in CASES:
        torch.manual_seed(0)
        specs = se.search_space(se.to_supernet(case.space()))
        for arch in arch_sweep(specs, limit=12):
            tag = "-".join(f"{k}{v}" for k, v in arch.items())
            yield pytest.param(case, arch, id=f"{case.name}-{tag}")


PARAMS = list(_params())


# -- tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("case", "arch"), PARAMS)
def test_materialized_matches_supernet_path(case: Case, arch: dict, strategy: str) -> None:
    net = supernet(case, strategy)
    plain = assert_plain_contract(net, arch, case.inputs(arch))
    assert count_params(plain) == case.n_params(arch)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("case", "arch"), PARAMS)
def test_slicing_matches_hand_built_module(case: Case, arch: dict, strategy: str) -> None:
    net = supernet(case, strategy)
    plain = se.materialize(net, arch)
    ref = case.reference(net.m, arch).eval()
    theirs, ours = ref.state_dict(), plain.m.state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key
    x = case.inputs(arch)
    hand = Single(ref, net.call)
    with torch.no_grad():
        expected = hand(x)
        assert_within_noise(plain(x), expected, run_float64(hand, x))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plain_when_no_choice(strategy: str) -> None:
    # A module without choices stays the torch module the user wrote, in the supernet too.
    net = se.to_supernet(Single(se.Conv2d(3, 4, 3, padding=1)), strategy=strategy)
    assert type(net.m) is nn.Conv2d
    plain = se.materialize(net, {})
    assert type(plain.m) is nn.Conv2d
    assert torch.equal(plain.m.weight, net.m.weight)
    assert plain.m.weight.data_ptr() != net.m.weight.data_ptr()


def test_kernel_transform_changes_the_weight() -> None:
    # Guards the transform test itself: random transforms must move the weight away from the
    # plain centre crop, or the transform case would also pass without transforms.
    net = supernet(CASES[3], "sampling")
    arch = {"out": 4, "k": 3}
    plain = se.materialize(net, arch)
    crop = net.m.weight[:4, :, centre(7, 3), centre(7, 3)]
    assert not torch.allclose(plain.m.weight, crop)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batchnorm_training_updates_only_active_statistics(strategy: str) -> None:
    net = se.to_supernet(Single(se.BatchNorm2d(_nf)), strategy=strategy)
    randomise(net, seed=7)
    before = net.m.running_mean.clone()
    with se.fixed_arch(net, {"nf": 4}):
        net.train()(_img(4, 5) + 5)
    assert not torch.equal(net.m.running_mean[:4], before[:4])
    assert torch.equal(net.m.running_mean[4:], before[4:])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_depthwise_follows_channels(strategy: str) -> None:
    net = supernet(CASES[2], strategy)
    for c in _c.candidates:
        plain = se.materialize(net, {"c": c, "k": 3})
        assert plain.m.groups == c
        assert plain.m.in_channels == c
        assert tuple(plain.m.weight.shape[:2]) == (2 * c, 1)


def test_differentiable_mixture_is_not_the_fixed_path() -> None:
    # Under the mixture a differentiable conv mixes every kernel; fixed_arch must stop that,
    # otherwise the parity tests above would compare the mixture with itself.
    torch.manual_seed(0)
    net = se.to_supernet(Single(se.Conv2d(3, _out, _k, padding=_k // 2)), "differentiable")
    randomise(net.eval(), seed=3)
    x = _img(3)
    arch = {"out": 8, "k": 3}
    with torch.no_grad():
        mixed = net(x)
        with se.fixed_arch(net, arch):
            path = net(x)
    ref = _ref_conv(net.m, arch, cin=3, cout=8, k=3, padding=1)
    with torch.no_grad():
        assert_within_noise(path, ref(x), run_float64(ref, x))
        assert mixed.shape == path.shape
        assert not torch.allclose(mixed, path, atol=1e-3)


def test_kernel_transform_in_ofa_layout() -> None:
    # Once-for-All's DynamicSeparableConv2d keys, and the same computation as the own layout.
    k = se.Choice([3, 5, 7], label="k")
    ofa = se.to_supernet(Single(se.Conv2d(4, 4, k, padding=k // 2, groups=4, bias=False,
                                          kernel_transform="ofa")))
    own = se.to_supernet(Single(se.Conv2d(4, 4, k, padding=k // 2, groups=4, bias=False,
                                          kernel_transform=True)))
    assert list(ofa.state_dict()) == ["m.5to3_matrix", "m.7to5_matrix", "m.conv.weight"]
    randomise(own, seed=2)
    state = own.state_dict()
    ofa.load_state_dict({"m.conv.weight": state["m.weight"],
                         "m.7to5_matrix": state["m.transform_7to5"],
                         "m.5to3_matrix": state["m.transform_5to3"]}, strict=True)
    x = _img(4)
    for size in (3, 5, 7):
        a, b = se.materialize(ofa, {"k": size}), se.materialize(own, {"k": size})
        assert list(a.state_dict()) == ["m.weight"]
        assert torch.equal(a.m.weight, b.m.weight)
        with torch.no_grad(), se.fixed_arch(ofa, {"k": size}):
            assert torch.equal(ofa(x), a(x))
    with pytest.raises(se.SearchSpaceError, match="kernel_transform"):
        se.to_supernet(Single(se.Conv2d(4, 4, k, kernel_transform="tf")))


# -- conventions -----------------------------------------------------------------------------------
_NNI_LAYERS = [
    ("Conv2d", lambda cv: se.Conv2d(3, _out, _k, padding=_k // 2, convention=cv), "NniConv2d"),
    ("Linear", lambda cv: se.Linear(_fin, _fout, convention=cv), "NniLinear"),
    ("BatchNorm2d", lambda cv: se.BatchNorm2d(_nf, convention=cv), "ElasticBatchNorm2d"),
    ("LayerNorm", lambda cv: se.LayerNorm(_nf, convention=cv), "ElasticLayerNorm"),
    ("MultiheadAttention", lambda cv: se.MultiheadAttention(_e, 2, convention=cv),
     "NniMultiheadAttention"),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("layer", "make", "nni_class"), _NNI_LAYERS,
                         ids=[c[0] for c in _NNI_LAYERS])
def test_convention_reaches_the_supernet_module(layer, make, nni_class, strategy) -> None:
    native = se.to_supernet(Single(make("native")), strategy).m
    nni = se.to_supernet(Single(make("nni")), strategy).m
    assert (native.convention, nni.convention) == ("native", "nni")
    assert type(native).__name__ == f"Elastic{layer}"
    assert type(nni).__name__ == nni_class


def test_every_case_is_native_by_default() -> None:
    for case in CASES:
        net = supernet(case, "sampling")
        assert [m.convention for m in net.modules() if hasattr(m, "active_params")] == ["native"]


def test_unknown_convention_is_refused() -> None:
    with pytest.raises(se.SearchSpaceError, match="convention"):
        se.Linear(_fin, 4, convention="ofa")


def test_native_attention_refuses_what_it_does_not_slice() -> None:
    with pytest.raises(se.SearchSpaceError, match="convention='nni'"):
        se.to_supernet(Single(se.MultiheadAttention(_e, 2, kdim=5)))


def test_native_and_nni_attention_layouts() -> None:
    # Same arguments, two parameter layouts: the native one keeps head blocks of D_max dims,
    # NNI's is nn.MultiheadAttention's at the largest size (so NNI checkpoints load).
    native = se.to_supernet(Single(se.MultiheadAttention(_e, _h))).m
    nni = se.to_supernet(Single(se.MultiheadAttention(_e, _h, convention="nni"))).m
    ref = nn.MultiheadAttention(16, 4)
    assert {k: v.shape for k, v in nni.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()}
    assert "out_proj_weight" in native.state_dict()


def test_nni_distribution_is_nnis_traverse_all_options() -> None:
    # NNI's own example (test_valuechoice_utils): exp * 2 + add + exp, with fixed weights.
    from subnet_export.supernet.mixing import distribution
    exp, add = se.Choice([3, 4, 6], label="exp"), se.Choice([0, 1], label="add")
    dist = distribution(exp * 2 + add + exp, {"exp": torch.tensor([0.5, 0.3, 0.2]),
                                               "add": torch.tensor([0.4, 0.6])})
    expected = {9: 0.2, 10: 0.3, 12: 0.12, 13: 0.18, 18: 0.08, 19: 0.12}
    assert [v for v, _ in dist] == sorted(expected)
    for value, weight in dist:
        assert abs(float(weight) - expected[value]) < 1e-6
