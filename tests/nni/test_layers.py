"""subnet_export.nni's layers against NNI 2.10's own one-shot supernet layers.

For each layer and case, NNI's mixed operation and ours hold the same weights (NNI's state dict
loads into ours strictly, so keys and shapes are NNI's); over many archs the sampling path, our
plain module and, with random architecture weights, the differentiable mixture equal NNI's
within the float32 noise floor (NNI's module run in float64 is the oracle).
"""

from __future__ import annotations

import copy

import pytest
import torch
from _nni_layer_oracle import Case, build_pair, nni_forward
from _nni_layer_oracle import pair as tup
from _noise import assert_within_noise
from spaces import alpha_of, assert_plain_contract, every_arch
from torch import nn

import subnet_export as se
from subnet_export.nni import layers as our_nn

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def _img(c: int, size: int = 7) -> tuple[torch.Tensor]:
    return (torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(c)),)


def _seq(*dims: int, batch_first: bool = False) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(sum(dims))
    shape = (2, 5) if batch_first else (5, 2)
    return tuple(torch.randn(*shape, d, generator=gen) for d in dims)


def _kv(v, first=False):
    e = v["emb"]
    return _seq(e, v.get("kdim") or e, v.get("vdim") or e, batch_first=first)


CASES = [
    Case("linear", lambda n, c: n.Linear(c([3, 6, 9], "in"), c([2, 4, 8], "out")),
         lambda v: (torch.randn(3, v["in"], generator=torch.Generator().manual_seed(1)),)),
    Case("linear_one_label_in_and_out",
         lambda n, c: n.Linear(c([4, 8], "w"), c([4, 8], "w") * 2, bias=False),
         lambda v: (torch.randn(3, v["w"], generator=torch.Generator().manual_seed(2)),)),
    Case("conv_in_out_kernel_padding",
         lambda n, c: n.Conv2d(c([3, 6], "in"), c([2, 4], "out") * 2, c([1, 3, 5], "k"),
                               padding=c([1, 3, 5], "k") // 2),
         lambda v: _img(v["in"])),
    Case("conv_one_label_in_and_out",
         lambda n, c: n.Conv2d(c([4, 8], "w"), c([4, 8], "w"), c([3, 5], "k"), padding=2),
         lambda v: _img(v["w"])),
    Case("conv_stride_dilation",
         lambda n, c: n.Conv2d(3, c([4, 8], "out"), 3, stride=c([1, 2], "s"),
                               padding=c([1, 2], "d"), dilation=c([1, 2], "d")),
         lambda v: _img(3), ("sampling",)),
    Case("conv_depthwise",
         lambda n, c: n.Conv2d(c([3, 6], "in"), c([3, 6], "in") * 2, c([3, 5], "k"),
                               padding=c([3, 5], "k") // 2, groups=c([3, 6], "in")),
         lambda v: _img(v["in"])),
    Case("conv_groups_expression",
         lambda n, c: n.Conv2d(c([6, 12], "in"), c([6, 12], "in"), 3, padding=1,
                               groups=c([6, 12], "in") // 3),
         lambda v: _img(v["in"])),
    Case("conv_groups_own_choice",
         lambda n, c: n.Conv2d(c([4, 8], "in"), 8, 3, groups=c([1, 2, 4], "g"), bias=False),
         lambda v: _img(v["in"]), ("sampling",)),
    Case("conv_reflect_padding",
         lambda n, c: n.Conv2d(3, c([4, 6], "out"), c([3, 5], "k"), padding=2,
                               padding_mode="reflect"),
         lambda v: _img(3)),
    Case("conv_tuple_kernel",
         lambda n, c: n.Conv2d(3, 4, tup(c([3, 5], "ka"), c([1, 3], "kb")),
                               padding=tup(c([3, 5], "ka") // 2, c([1, 3], "kb") // 2)),
         lambda v: _img(3), ("sampling",)),
    Case("conv_tuple_kernel_choice",
         lambda n, c: n.Conv2d(3, c([2, 4], "out"), c([(3, 1), (3, 3), (5, 3)], "k"),
                               padding=(1, 1)),
         lambda v: _img(3), ("sampling",)),
    Case("batchnorm", lambda n, c: n.BatchNorm2d(c([4, 6, 8], "nf")),
         lambda v: _img(v["nf"], 4)),
    Case("batchnorm_eps_momentum",
         lambda n, c: n.BatchNorm2d(c([4, 8], "nf"), eps=c([1e-5, 0.5], "eps"),
                                    momentum=c([0.1, 0.3], "mom")),
         lambda v: _img(v["nf"], 4), ("sampling",)),
    Case("layernorm", lambda n, c: n.LayerNorm(c([4, 6, 8], "ns")),
         lambda v: (torch.randn(2, 3, v["ns"], generator=torch.Generator().manual_seed(3)),)),
    Case("layernorm_tuple_shape", lambda n, c: n.LayerNorm(tup(c([2, 3], "a"), c([4, 6], "b"))),
         lambda v: (torch.randn(2, v["a"], v["b"], generator=torch.Generator().manual_seed(5)),)),
    Case("layernorm_tuple_choice",
         lambda n, c: n.LayerNorm(c([(2, 4), (2, 6), (3, 4), (3, 6)], "s")),
         lambda v: (torch.randn(2, *v["s"], generator=torch.Generator().manual_seed(6)),)),
    Case("attention_embed", lambda n, c: n.MultiheadAttention(c([4, 8], "emb"), 2),
         lambda v: _kv(v)),
    Case("attention_heads",
         lambda n, c: n.MultiheadAttention(c([4, 8], "emb"), c([1, 2, 4], "heads")),
         lambda v: _kv(v), ("sampling",)),
    Case("attention_kdim_vdim_bias_kv",
         lambda n, c: n.MultiheadAttention(c([4, 8], "emb"), 2, kdim=c([3, 7], "kdim"),
                                           vdim=c([5, 8], "vdim"), bias=False, add_bias_kv=True,
                                           batch_first=True),
         lambda v: _kv(v, True)),
    Case("attention_vdim",
         lambda n, c: n.MultiheadAttention(c([4, 8], "emb"), 4, vdim=c([5, 8], "vdim"),
                                           add_zero_attn=True),
         lambda v: _kv(v)),
]

PARAMS = [pytest.param(case, strategy, id=f"{case.name}-{strategy}")
          for case in CASES for strategy in case.strategies]
_PAIRS: dict[tuple[str, str], tuple[nn.Module, nn.Module, nn.Module]] = {}


def pair(case: Case, strategy: str):
    """NNI's op and our supernet for a case, built once."""
    key = (case.name, strategy)
    if key not in _PAIRS:
        _PAIRS[key] = build_pair(case, strategy, seed=len(_PAIRS))
    return _PAIRS[key]


def _nni_runs(op, arch, xs) -> bool:
    # NNI's MultiheadAttention fails where q, k, v are kept apart but this arch packs them
    # (its in_proj_weight is None): nothing of NNI's to compare there.
    try:
        nni_forward(op, arch, *xs)
    except (TypeError, AttributeError, RuntimeError, AssertionError):
        return False
    return True


@pytest.mark.parametrize(("case", "strategy"), PARAMS)
def test_path_and_plain_module_equal_nni(case: Case, strategy: str) -> None:
    op, _, net = pair(case, strategy)
    assert net.m.convention == "nni"
    archs = every_arch(se.search_space(net))
    compared = 0
    for arch in archs:
        xs = case.inputs(arch)
        plain = assert_plain_contract(net, arch, *xs)  # keys, storage, parity with the path
        with torch.no_grad(), se.fixed_arch(net, arch):
            path = net(*xs)
        if not _nni_runs(op, arch, xs):
            assert net.m.separate and "m.in_proj_weight" in plain.state_dict()
            continue
        theirs, oracle = nni_forward(op, arch, *xs), nni_forward(op, arch, *xs, double=True)
        with torch.no_grad():
            assert_within_noise(path, theirs, oracle, what=f"path {arch}")
            assert_within_noise(plain(*xs), theirs, oracle, what=f"plain {arch}")
        compared += 1
    assert compared >= len(archs) // 2


@pytest.mark.parametrize("case", [c for c in CASES if "differentiable" in c.strategies],
                         ids=lambda c: c.name)
def test_differentiable_mixture_equals_nni(case: Case) -> None:
    _, op, net = pair(case, "differentiable")
    big = {lb: max(spec.candidates) for lb, spec in se.search_space(net).items()}
    xs = case.inputs(big)
    theirs, oracle = nni_forward(op, None, *xs), nni_forward(op, None, *xs, double=True)
    with torch.no_grad():
        ours = net(*xs)
        assert_within_noise(ours, theirs, oracle, what="mixture")
        with se.fixed_arch(net, big):
            largest = net(*xs)
    if case.name.startswith(("batchnorm", "layernorm")):
        # NNI's norms run at full width under the mixture (the masks come from the convs)
        assert_within_noise(largest, theirs, oracle, what="largest path")
    else:  # the mixture is not one path: the test would pass vacuously otherwise
        assert not torch.allclose(largest, ours, rtol=1e-3, atol=1e-4)


def test_mixture_is_per_dimension_not_joint() -> None:
    # One label setting both widths: NNI masks each dimension on its own (a product of two
    # mixtures); the native convention mixes label values jointly. They must differ.
    case = CASES[1]
    net = pair(case, "differentiable")[2]
    native = se.to_supernet(nn.Sequential(se.Linear(se.Choice([4, 8], label="w"),
                                                    se.Choice([4, 8], label="w") * 2,
                                                    bias=False)), "differentiable")
    native[0].load_state_dict(net.m.state_dict())
    assert native[0].convention == "native"
    x = case.inputs({"w": 8})
    with torch.no_grad():
        assert not torch.allclose(native(x[0]), net(*x), rtol=1e-3, atol=1e-4)


# -- the front end --------------------------------------------------------------------------------
def test_plain_layers_are_torch_layers() -> None:
    conv = our_nn.Conv2d(3, 4, 3)
    assert type(conv) is nn.Conv2d
    assert isinstance(conv, our_nn.Conv2d) and issubclass(nn.Conv2d, our_nn.Conv2d)
    assert type(our_nn.ReLU()) is nn.ReLU
    assert our_nn.Module is nn.Module and our_nn.Parameter is nn.Parameter
    assert our_nn.functional is torch.nn.functional

    class Custom(our_nn.Linear):
        pass

    assert isinstance(Custom(2, 3), nn.Linear)


def test_star_import_gives_torch_nn_names() -> None:
    theirs: dict = {}
    exec("from torch.nn import *", theirs)  # noqa: S102
    ours: dict = {}
    exec("from subnet_export.nni.layers import *", ours)  # noqa: S102
    assert {k for k in theirs if not k.startswith("__")} == {
        k for k in ours if not k.startswith("__")}


@pytest.mark.parametrize("layer", ["Conv2d", "Linear", "BatchNorm2d", "LayerNorm",
                                   "MultiheadAttention"])
def test_a_choice_gives_the_nni_placeholder(layer: str) -> None:
    w = se.Choice([4, 8], label="w")
    m = getattr(our_nn, layer)(*{"Conv2d": (3, w, 3), "MultiheadAttention": (w, 2)}.get(
        layer, (w, 4) if layer == "Linear" else (w,)))
    assert type(m) is getattr(se, layer) and m.convention == "nni"
    assert type(se.to_supernet(Single1(m)).m).__name__.startswith(("Nni", "Elastic"))


def _big(w):
    return se.compose(lambda v: v > 4, w)


class Single1(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m


@pytest.mark.parametrize(("make", "words"), [
    (lambda w: our_nn.Dropout(w / 10), ("Dropout", "'p'")),
    (lambda w: our_nn.Conv1d(3, w, 3), ("Conv1d", "'out_channels'")),
    (lambda w: our_nn.Conv2d(3, 4, 3, bias=_big(w)), ("Conv2d", "'bias'")),
    (lambda w: our_nn.Conv2d(3, 4, 3, padding_mode=se.compose(str, w)), ("'padding_mode'",)),
    (lambda w: our_nn.Linear(w, 4, bias=_big(w)), ("Linear", "'bias'")),
    (lambda w: our_nn.BatchNorm2d(w, affine=_big(w)), ("BatchNorm2d", "'affine'")),
    (lambda w: our_nn.LayerNorm(w, eps=w / 1e5), ("LayerNorm", "'eps'")),
    (lambda w: our_nn.MultiheadAttention(w, 2, bias=_big(w)), ("MultiheadAttention", "'bias'")),
])
def test_unsupported_choice_names_layer_and_argument(make, words) -> None:
    with pytest.raises(se.SearchSpaceError) as err:
        make(se.Choice([4, 8], label="w"))
    assert all(word in str(err.value) for word in words)


def test_batchnorm_training_follows_nni() -> None:
    # Training mode: batch statistics, the active running statistics updated in place, and
    # (as NNI's MixedBatchNorm2d) num_batches_tracked left as it is.
    case = next(c for c in CASES if c.name == "batchnorm")
    op, _, net = build_pair(case, "sampling", seed=11)
    arch = {"nf": 6}
    x = case.inputs(arch)[0] * 2 + 1
    before = op.running_mean.clone()
    op.train().resample(memo=arch)
    with torch.no_grad(), se.fixed_arch(net, arch):
        theirs, ours = op(x), net.train()(x)
    assert torch.equal(ours, theirs)  # the same F.batch_norm call on the same tensors
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(net.m, name), getattr(op, name)), name
    assert int(net.m.num_batches_tracked) == 0
    assert not torch.equal(net.m.running_mean[:6], before[:6])
    assert torch.equal(net.m.running_mean[6:], before[6:])


# -- a small network: NNI's checkpoint, paths and mixture ------------------------------------------
class SmallNet(nn.Module):
    """Conv, BatchNorm, a kernel choice and a classifier; ``w`` sets in and out widths."""

    def __init__(self, n, c) -> None:
        super().__init__()
        w, k = (lambda: c([4, 8], "w")), (lambda: c([3, 5], "k"))
        self.conv1 = n.Conv2d(3, w(), 3, padding=1)
        self.bn = n.BatchNorm2d(w())
        self.conv2 = n.Conv2d(w(), w() * 2, k(), padding=k() // 2, bias=False)
        self.fc = n.Linear(w() * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv1(x)))
        return self.fc(self.conv2(x).mean((2, 3)))


@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_small_net_from_an_nni_checkpoint(strategy: str) -> None:
    import nni.retiarii.nn.pytorch as nni_nn
    from _nni_layer_oracle import POLICIES, nni_choice, our_choice, randomise_nni
    from nni.retiarii.oneshot.pytorch.base_lightning import traverse_and_mutate_submodules
    from nni.retiarii.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS

    theirs = SmallNet(nni_nn, nni_choice)
    mixed = traverse_and_mutate_submodules(
        theirs, [op.mutate for op in NATIVE_MIXED_OPERATIONS],
        {"mixed_op_sampling": POLICIES[strategy]})
    randomise_nni(theirs, seed=5)
    theirs.eval()
    ours = se.to_supernet(SmallNet(our_nn, our_choice), strategy).eval()
    state = {k: v for k, v in theirs.state_dict().items() if "_arch_alpha" not in k}
    alphas = {k: v for k, v in ours.state_dict().items() if "_arch_alpha" in k}
    ours.load_state_dict({**state, **alphas}, strict=True)  # NNI's keys, NNI's shapes
    for m in mixed:
        for label in getattr(m, "_arch_alpha", {}):
            with torch.no_grad():
                alpha_of(ours, label).copy_(m._arch_alpha[label])
    x = _img(3, 6)[0]

    def run_theirs(arch, double=False):
        model = copy.deepcopy(theirs).double() if double else theirs
        if arch is not None:
            for m in model.modules():
                if hasattr(m, "resample"):
                    m.resample(dict(arch))
        with torch.no_grad():
            return model(x.double() if double else x)

    if strategy == "differentiable":
        native = se.to_supernet(SmallNet(se, our_choice), strategy).eval()
        native.load_state_dict(ours.state_dict(), strict=True)
        with torch.no_grad():
            assert_within_noise(ours(x), run_theirs(None), run_theirs(None, True), what="mix")
            # the native convention mixes label values jointly: not NNI's network
            assert not torch.allclose(native(x), ours(x), rtol=1e-3, atol=1e-4)
        return
    for arch in every_arch(se.search_space(ours)):
        ref, oracle = run_theirs(arch), run_theirs(arch, True)
        with torch.no_grad(), se.fixed_arch(ours, arch):
            assert_within_noise(ours(x), ref, oracle, what=f"path {arch}")
        with torch.no_grad():
            assert_within_noise(se.materialize(ours, arch)(x), ref, oracle, what=f"plain {arch}")


@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_a_choice_inside_a_tuple_argument(strategy: str) -> None:
    # Beyond NNI (which sees choices only as whole arguments): kernel_size=(k, 3).
    k = se.Choice([3, 5], label="k")
    space = nn.Sequential(our_nn.Conv2d(3, 4, (k, 3), padding=(k // 2, 1)))
    net = se.to_supernet(space, strategy).eval()
    assert tuple(net[0].weight.shape) == (4, 3, 5, 3)
    x = _img(3)[0]
    for arch in every_arch(se.search_space(net)):
        plain = assert_plain_contract(net, arch, x)
        assert plain[0].kernel_size == (arch["k"], 3)
    with torch.no_grad():
        assert net(x).shape == (2, 4, 7, 7)
