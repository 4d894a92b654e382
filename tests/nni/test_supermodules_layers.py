"""NNI 2.10's own supermodule tests of its layers, ported to ``convention="nni"``.

The behaviours of ``test_oneshot_supermodules.py`` (mixed linear, conv2d, batchnorm2d, layernorm,
multi-head attention; path sampling and differentiable): the same layers, archs and inputs, the
same output shapes and values. Where NNI fails in a forward (a stride choice under DARTS, heads
that do not divide an embed dim, groups that do not fit), ours raises a SearchSpaceError when
the supernet is built; the frozen module computes what the supernet path computes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from _noise import assert_within_noise, float64_path
from torch import nn

import subnet_export as se
from subnet_export.nni import layers as nnn

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def C(candidates: list, label: str) -> se.Choice:  # noqa: N802 - NNI's ValueChoice
    return se.Choice(candidates, label=label)


class Single(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.m(*xs)


def _full(net: nn.Module, memo: dict) -> dict:
    # NNI's resample(memo): labels not in memo are drawn at random
    rng = random.Random(0)
    return {lb: memo.get(lb, rng.choice(spec.values()))
            for lb, spec in se.search_space(net).items()}


def sampling_check(layer: nn.Module, memo: dict, *xs: torch.Tensor) -> Any:
    """NNI's _mixed_operation_sampling_sanity_check, plus: the frozen module agrees."""
    net = se.to_supernet(Single(layer), "sampling").eval()
    arch = _full(net, memo)
    with torch.no_grad(), se.fixed_arch(net, arch):
        out = net(*xs)
    with torch.no_grad():
        plain = se.materialize(net, arch)(*xs)
    assert_within_noise(_first(plain), _first(out), _first(float64_path(net, arch, *xs)))
    return out


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out


def differentiable_check(layer: nn.Module, *xs: torch.Tensor) -> Any:
    """NNI's _mixed_operation_differentiable_sanity_check: forward, export, export_probs."""
    net = se.to_supernet(Single(layer), "differentiable")
    out = net(*xs)
    labels = set(se.search_space(net))
    assert set(net.m.export({})) == labels
    assert set(net.m.export_probs({})) == labels
    return out


def test_pathsampling_valuechoice() -> None:
    net = se.to_supernet(Single(nnn.Conv2d(3, C([3, 5, 7], "123"), kernel_size=3)))
    for width in (5, 7):
        with se.fixed_arch(net, {"123": width}):
            assert net(torch.zeros(1, 3, 5, 5)).size(1) == width
    assert net.m.export({})["123"] in [3, 5, 7]


def test_differentiable_valuechoice() -> None:
    k = C([3, 5, 7], "123")
    net = se.to_supernet(Single(nnn.Conv2d(3, C([3, 5, 7], "456"), kernel_size=k,
                                           padding=k // 2)), "differentiable")
    assert net(torch.zeros(1, 3, 7, 7)).size(2) == 7
    assert set(net.m.export({})) == {"123", "456"}


def test_mixed_linear() -> None:
    linear = nnn.Linear(C([3, 6, 9], "shared"), C([2, 4, 8], "xx"))
    sampling_check(linear, {"shared": 3}, torch.randn(2, 3))
    sampling_check(linear, {"shared": 9}, torch.randn(2, 9))
    differentiable_check(linear, torch.randn(2, 9))
    linear = nnn.Linear(C([3, 6, 9], "shared"), C([2, 4, 8], "xx"), bias=False)
    sampling_check(linear, {"shared": 3}, torch.randn(2, 3))
    with pytest.raises(se.SearchSpaceError, match="bias"):
        nnn.Linear(C([3, 6, 9], "shared"), C([2, 4, 8], "xx"), bias=C([False, True], "yy"))


def test_mixed_conv2d() -> None:
    conv = nnn.Conv2d(C([3, 6, 9], "in"), C([2, 4, 8], "out") * 2, 1)
    assert sampling_check(conv, {"in": 3, "out": 4}, torch.randn(2, 3, 9, 9)).size(1) == 8
    differentiable_check(conv, torch.randn(2, 9, 3, 3))

    conv = nnn.Conv2d(C([3, 6, 9], "in"), C([2, 4, 8], "out"), 1, stride=C([1, 2], "stride"))
    assert sampling_check(conv, {"in": 3, "stride": 2}, torch.randn(2, 3, 10, 10)).size(2) == 5
    assert sampling_check(conv, {"in": 3, "stride": 1}, torch.randn(2, 3, 10, 10)).size(2) == 10
    with pytest.raises(se.SearchSpaceError, match="stride must not be a choice"):
        differentiable_check(conv, torch.randn(2, 9, 10, 10))

    dw = C([3, 6, 9], "in")
    conv = nnn.Conv2d(dw, dw, 1, groups=dw)
    out = sampling_check(conv, {"in": 6}, torch.randn(2, 6, 10, 10))
    assert out.size() == torch.Size([2, 6, 10, 10])


def test_mixed_conv2d_groups() -> None:
    inc = C([9, 6, 3], "in")
    with pytest.raises(se.SearchSpaceError, match="groups"):  # NNI: a RuntimeError in forward
        se.to_supernet(Single(nnn.Conv2d(inc, inc, 1, groups=9)))

    inc = C([3, 6, 9], "in")
    differentiable_check(nnn.Conv2d(inc, C([3, 6, 9], "out"), 1, groups=inc),
                         torch.randn(2, 9, 3, 3))
    differentiable_check(nnn.Conv2d(inc, inc, 1, groups=inc), torch.randn(2, 9, 3, 3))
    with pytest.raises(se.SearchSpaceError, match="groups"):
        se.to_supernet(Single(nnn.Conv2d(inc, inc, 1, groups=C([3, 9], "groups"))),
                       "differentiable")
    net = se.to_supernet(Single(nnn.Conv2d(inc, inc, 1, groups=inc // 3)), "differentiable")
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 10, 3, 3))


def test_mixed_conv2d_kernel_is_cropped_from_the_centre() -> None:
    net = se.to_supernet(Single(nnn.Conv2d(1, 1, C([1, 3], "k"), bias=False)))
    with torch.no_grad():
        net.m.weight.zero_()
        net.m.weight[0, 0, 1, 1] = 1  # only the centre is 1: a crop elsewhere gives zeros
    with se.fixed_arch(net, {"k": 1}):
        assert net(torch.ones((1, 1, 3, 3))).sum().item() == 9


def test_mixed_conv2d_state_dict() -> None:
    # only in_channels, out_channels, kernel_size and groups shape the state dict
    conv = nnn.Conv2d(C([2, 4, 8], "in_channels"), C([6, 12, 24], "out_channels"),
                      kernel_size=C([3, 5, 7], "kernel_size"), groups=C([1, 2], "groups"))
    kwargs = {"in_channels": 8, "out_channels": 12, "kernel_size": 5, "groups": 2}
    sampling_check(conv, kwargs, torch.randn(2, 8, 16, 16))
    net = se.to_supernet(Single(conv))
    assert tuple(net.m.weight.shape) == (24, 8, 7, 7)
    plain = se.materialize(net, kwargs).m
    assert type(plain) is nn.Conv2d and tuple(plain.weight.shape) == (12, 4, 5, 5)


def test_mixed_batchnorm2d() -> None:
    bn = nnn.BatchNorm2d(C([32, 64], "dim"))
    assert sampling_check(bn, {"dim": 32}, torch.randn(2, 32, 3, 3)).size(1) == 32
    assert sampling_check(bn, {"dim": 64}, torch.randn(2, 64, 3, 3)).size(1) == 64
    differentiable_check(bn, torch.randn(2, 64, 3, 3))
    bn = nnn.BatchNorm2d(C([32, 48, 64], "num_features"))
    sampling_check(bn, {"num_features": 48}, torch.randn(2, 48, 3, 3))


def test_mixed_layernorm() -> None:
    ln = nnn.LayerNorm(C([32, 64], "normalized_shape"), elementwise_affine=True)
    assert sampling_check(ln, {"normalized_shape": 32}, torch.randn(2, 16, 32)).size(-1) == 32
    assert sampling_check(ln, {"normalized_shape": 64}, torch.randn(2, 16, 64)).size(-1) == 64
    differentiable_check(ln, torch.randn(2, 16, 64))

    shape = se.compose(lambda a, b: (a, b), C([16, 32, 64], "a"), C([8, 16], "b"))
    ln = nnn.LayerNorm(shape)
    assert list(sampling_check(ln, {"a": 16, "b": 8}, torch.randn(2, 16, 8)).shape[-2:]) == [16, 8]
    out = sampling_check(ln, {"a": 64, "b": 16}, torch.randn(2, 64, 16))
    assert list(out.shape[-2:]) == [64, 16]
    differentiable_check(ln, torch.randn(2, 64, 16))


def _qkv(*shapes):
    return tuple(torch.randn(*s) for s in shapes)


def test_mixed_mhattn() -> None:
    att = nnn.MultiheadAttention(C([4, 8], "emb"), 4)
    assert sampling_check(att, {"emb": 4}, *_qkv((7, 2, 4), (7, 2, 4), (7, 2, 4)))[0].size(-1) == 4
    assert sampling_check(att, {"emb": 8}, *_qkv((7, 2, 8), (7, 2, 8), (7, 2, 8)))[0].size(-1) == 8
    differentiable_check(att, *_qkv((7, 2, 8), (7, 2, 8), (7, 2, 8)))

    att = nnn.MultiheadAttention(C([4, 8], "emb"), C([2, 4], "heads"))
    assert sampling_check(att, {"emb": 4, "heads": 2},
                          *_qkv((7, 2, 4), (7, 2, 4), (7, 2, 4)))[0].size(-1) == 4
    with pytest.raises(se.SearchSpaceError, match="divisible"):  # NNI: in the forward
        se.to_supernet(Single(nnn.MultiheadAttention(C([4, 8], "emb"), C([2, 3, 4], "heads"))))

    att = nnn.MultiheadAttention(C([4, 8], "emb"), 4, kdim=C([5, 7], "kdim"))
    out = sampling_check(att, {"emb": 4, "kdim": 7}, *_qkv((7, 2, 4), (7, 2, 7), (7, 2, 4)))
    assert out[0].size(-1) == 4
    out = sampling_check(att, {"emb": 8, "kdim": 5}, *_qkv((7, 2, 8), (7, 2, 5), (7, 2, 8)))
    assert out[0].size(-1) == 8

    att = nnn.MultiheadAttention(C([4, 8], "emb"), 4, vdim=C([5, 8], "vdim"))
    out = sampling_check(att, {"emb": 4, "vdim": 8}, *_qkv((7, 2, 4), (7, 2, 4), (7, 2, 8)))
    assert out[0].size(-1) == 4
    out = sampling_check(att, {"emb": 8, "vdim": 5}, *_qkv((7, 2, 8), (7, 2, 8), (7, 2, 5)))
    assert out[0].size(-1) == 8
    differentiable_check(att, *_qkv((5, 3, 8), (5, 3, 8), (5, 3, 8)))


def test_mixed_mhattn_state_dict() -> None:
    att = nnn.MultiheadAttention(embed_dim=C([4, 8, 16], "embed_dim"),
                                 num_heads=C([1, 2, 4], "num_heads"),
                                 kdim=C([4, 8, 16], "kdim"), vdim=C([4, 8, 16], "vdim"))
    kwargs = {"embed_dim": 16, "num_heads": 2, "kdim": 4, "vdim": 8}
    sampling_check(att, kwargs, *_qkv((7, 2, 16), (7, 2, 4), (7, 2, 8)))
    plain = se.materialize(se.to_supernet(Single(att)), kwargs).m
    assert type(plain) is nn.MultiheadAttention
    assert {k: tuple(v.shape) for k, v in plain.state_dict().items()} == {
        "q_proj_weight": (16, 16), "k_proj_weight": (16, 4), "v_proj_weight": (16, 8),
        "in_proj_bias": (48,), "out_proj.weight": (16, 16), "out_proj.bias": (16,)}


def test_mixed_mhattn_batch_first() -> None:
    att = nnn.MultiheadAttention(C([4, 8], "emb"), 2, kdim=C([3, 7], "kdim"),
                                 vdim=C([5, 8], "vdim"), bias=False, add_bias_kv=True,
                                 batch_first=True)
    out = sampling_check(att, {"emb": 4, "kdim": 7, "vdim": 8},
                         *_qkv((2, 7, 4), (2, 7, 7), (2, 7, 8)))
    assert out[0].size(-1) == 4
    out = sampling_check(att, {"emb": 8, "kdim": 3, "vdim": 5},
                         *_qkv((2, 7, 8), (2, 7, 3), (2, 7, 5)))
    assert out[0].size(-1) == 8
    differentiable_check(att, *_qkv((1, 7, 8), (1, 7, 7), (1, 7, 8)))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: nnn.MultiheadAttention(C([4, 8], "e"), C([1, 2], "h")), "num_heads must not"),
    (lambda: nnn.MultiheadAttention(C([4, 8], "e"), 2, dropout=C([0.0, 0.1], "p")),
     "dropout must not"),
    (lambda: nnn.Conv2d(3, 4, 3, dilation=C([1, 2], "d")), "dilation must not"),
    (lambda: nnn.Conv2d(3, 4, 3, padding=C([0, 1], "p")), "padding may be a choice"),
    (lambda: nnn.BatchNorm2d(C([4, 8], "n"), eps=C([1e-5, 1e-3], "eps")), "eps must not"),
])
def test_differentiable_refuses_what_nni_refuses(make, match: str) -> None:
    with pytest.raises(se.SearchSpaceError, match=match):
        se.to_supernet(Single(make()), "differentiable")


@pytest.mark.parametrize(("make", "match"), [
    (lambda: nnn.Conv2d(3, 4, C([3, 5], "k"), padding="same", padding_mode="reflect"),
     "pads otherwise"),
    (lambda: nnn.Conv2d(3, 4, se.compose(lambda k: (k, 8 - k), C([3, 5], "k"))),
     "does not fit"),
    (lambda: nnn.Conv2d(3, 4, 3, padding="same", stride=C([1, 2], "s")), "cannot be built"),
    (lambda: nnn.BatchNorm2d(C([4, 8], "n"), momentum=None), "momentum"),
    (lambda: nnn.LayerNorm(se.compose(lambda n: n if n < 6 else (n, 2), C([4, 8], "n"))),
     "one length"),
    (lambda: nnn.MultiheadAttention(C([4, 6], "e"), C([2, 4], "h")), "divisible"),
])
def test_sampling_refuses_what_nni_cannot_run(make, match: str) -> None:
    with pytest.raises(se.SearchSpaceError, match=match):
        se.to_supernet(Single(make()), "sampling")
