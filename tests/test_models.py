"""The shipped search spaces: registry, seeded weights, arch files, and space-wide parity.

Every test is parametrised over ``list_spaces()``: a new space is covered by registering it.
For each space the smallest arch, the largest arch and seeded random archs are materialized and
compared with the supernet run on the same path (``se.fixed_arch``, eval mode).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _noise import assert_within_noise, float64_path, run_float64
from safetensors.torch import load_file
from torch import nn

import subnet_export as se
from models import extreme_arch, get_space, list_spaces
from subnet_export.loading import build_supernet
from subnet_export.supernet.base import BaseSuperNetModule
from subnet_export.supernet.choices import MixedEdgeChoice, MixedLayerChoice

ROOT = Path(__file__).resolve().parent.parent
SPACES = ("autoformer", "darts", "mobilenetv3", "nasbench201", "proxylessnas", "shufflenet")
#: Outputs must carry signal, or a parity check could pass on zeros: they must not vanish, and
#: the input must reach them (the weakest arch here varies by ~1e-4 across inputs: BatchNorm
#: statistics shared by the whole supernet fit no single path well).
MIN_OUTPUT_ABS = 1e-2
MIN_OUTPUT_STD = 2e-5
RANDOM_SEEDS = (0, 1, 2, 3)
CASES = ["smallest", "largest", *(f"random{s}" for s in RANDOM_SEEDS)]
CHECKPOINT_LIMIT = 3_000_000  # bytes


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest.py)."""


@functools.cache
def supernet(name: str) -> nn.Module:
    """The registered supernet of ``name`` (seed 0), built once per session."""
    return get_space(name).build(seed=0)


def arch_for(net: nn.Module, case: str) -> dict:
    if case == "smallest":
        return se.freeze(net, extreme_arch(net, "min"))
    if case == "largest":
        return se.freeze(net, extreme_arch(net, "max"))
    return se.sample_arch(net, int(case.removeprefix("random")))


def inputs(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Smooth random images plus noise: i.i.d. noise alone averages out in global pooling, and
    every sample would then get nearly the same output."""
    return image_like((batch, *get_space(name).input_shape[1:]), seed)


def image_like(shape, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    low = F.interpolate(torch.randn(b, c, 4, 4, generator=gen), size=(h, w), mode="bilinear")
    return low + 0.5 * torch.randn(b, c, h, w, generator=gen)


def check_parity(net: nn.Module, arch: dict, x: torch.Tensor) -> tuple[nn.Module, float]:
    """Materialize ``arch`` and compare it with the supernet path within the float32 noise
    floor (the path in float64 is the oracle); return (plain, worst noise ratio)."""
    net.eval()
    plain = se.materialize(net, arch)
    assert not plain.training
    with torch.no_grad():
        with se.fixed_arch(net, arch):
            ref = net(x)
        out = plain(x)
    assert out.shape == ref.shape
    assert float(ref.abs().max()) > MIN_OUTPUT_ABS, "the outputs vanish"
    assert float(ref.std(dim=0).max()) > MIN_OUTPUT_STD, "the output ignores the input"
    return plain, assert_within_noise(out, ref, float64_path(net, arch, x))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- registry -------------------------------------------------------------------------------------
def test_registry_lists_the_six_spaces():
    assert list_spaces() == sorted(SPACES)
    with pytest.raises(KeyError, match="registered"):
        get_space("no-such-space")


@pytest.mark.parametrize("name", list_spaces())
def test_space_info(name):
    info = get_space(name)
    assert info.name == name
    assert info.default_strategy in ("sampling", "differentiable")
    assert len(info.input_shape) == 4 and info.input_shape[0] == 1
    assert info.arch_files(), f"no arch file archs/{name}_*.json"
    net = supernet(name)
    assert tuple(net.input_shape) == info.input_shape  # the CLI's default input
    assert not net.training
    specs = se.search_space(net)
    size = math.prod(spec.size for spec in specs.values())
    assert len(specs) >= 6 and size >= 1000
    strategies = {m.strategy for m in net.modules() if isinstance(m, BaseSuperNetModule)}
    assert strategies == {info.default_strategy}


@pytest.mark.parametrize("name", list_spaces())
def test_cli_factory_loads_by_path(name):
    """``models/<name>.py:supernet`` works as the CLI loads it: by path, siblings on sys.path."""
    net = build_supernet(f"{ROOT / 'models' / name}.py:supernet")
    own = supernet(name).state_dict()
    theirs = net.state_dict()
    assert list(theirs) == list(own)
    assert all(torch.equal(theirs[k], own[k]) for k in own)


# -- seeded weights -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_spaces())
def test_seeded_and_batchnorm_statistics_non_trivial(name):
    a, b = get_space(name).build(seed=0).state_dict(), supernet(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = get_space(name).build(seed=1).state_dict()
    assert any(not torch.equal(a[k], other[k]) for k in a if a[k].is_floating_point())
    means = [v for k, v in a.items() if k.endswith("running_mean")]
    variances = [v for k, v in a.items() if k.endswith("running_var")]
    if name == "autoformer":  # LayerNorm only: its affine parameters are seeded instead
        norms = [v for k, v in a.items() if "norm" in k and k.endswith("weight")]
        assert norms and all(not torch.allclose(v, torch.ones_like(v)) for v in norms)
        return
    # Neither the fresh 0 / 1 nor one value for all channels: a wrong slice of them shows.
    assert means and all(float(v.abs().max()) > 0 and float(v.std()) > 0 for v in means)
    assert all(not torch.allclose(v, torch.ones_like(v)) for v in variances)


@pytest.mark.parametrize("name", list_spaces())
def test_factory_is_the_shipped_checkpoint(name):
    """The registered supernet is the checkpoint, bit for bit, on any machine: it is loaded,
    never recomputed (BatchNorm statistics from forward passes differ between CPUs)."""
    path = get_space(name).checkpoint
    assert path.is_file(), "run `python -m models.make_checkpoints`"
    assert path.stat().st_size < CHECKPOINT_LIMIT
    state = load_file(str(path))
    own = supernet(name).state_dict()
    assert set(own) == set(state)
    assert all(torch.equal(own[k], state[k]) for k in own)
    # a generated net of another seed has the same skeleton: the checkpoint loads strictly
    other = get_space(name).generate(seed=1, calib_steps=0)
    other.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", list_spaces())
def test_regeneration_is_deterministic_on_one_machine(name, tmp_path):
    from models.make_checkpoints import write_checkpoint

    first = write_checkpoint(name, tmp_path / "a")
    second = write_checkpoint(name, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    # what a regeneration writes is what the factory loads: same keys, shapes and dtypes
    fresh, shipped = load_file(str(first)), load_file(str(get_space(name).checkpoint))
    assert {k: (v.shape, v.dtype) for k, v in fresh.items()} == {
        k: (v.shape, v.dtype) for k, v in shipped.items()}


# -- parity over the space ------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", list_spaces())
def test_materialized_matches_supernet_path(name, case):
    net = supernet(name)
    arch = arch_for(net, case)
    plain, _ = check_parity(net, arch, inputs(name))
    # The plain model holds the arch's weights only (all of them for some largest archs).
    assert n_params(plain) <= n_params(net)
    assert case == "largest" or n_params(plain) < n_params(net)


@pytest.mark.parametrize("name", list_spaces())
def test_smallest_and_largest_bound_the_random_archs(name):
    net = supernet(name)
    sizes = {case: n_params(se.materialize(net, arch_for(net, case))) for case in CASES}
    randoms = [sizes[f"random{s}"] for s in RANDOM_SEEDS]
    assert sizes["smallest"] <= min(randoms) and max(randoms) <= sizes["largest"]
    assert sizes["smallest"] < sizes["largest"]


@pytest.mark.parametrize("name", list_spaces())
def test_arch_files_load_validate_and_materialize(name):
    net = supernet(name)
    specs = se.search_space(net)
    for path in get_space(name).arch_files():
        raw = se.load_arch(path)
        assert set(raw) == set(specs), f"{path.name} does not cover the space's labels"
        arch = se.freeze(net, raw)
        check_parity(net, arch, inputs(name, seed=1))


def test_sampling_flavour_of_darts_has_parity():
    net = get_space("darts").build("sampling", seed=0)
    for seed in (0, 1):
        check_parity(net, se.sample_arch(net, seed), inputs("darts"))


def test_darts_exports_the_argmax():
    net = get_space("darts").build(seed=0)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "_arch_alpha"):
                for alpha in m._arch_alpha:
                    alpha.copy_(torch.randn(alpha.shape, generator=gen))
    arch = se.freeze(net)  # no arch given: the supernet's own export
    checked = set()
    for m in net.modules():
        if isinstance(m, MixedLayerChoice):
            assert arch[m.label] == m.names[int(m.alpha(m.label).argmax())]
            checked.add(m.label)
        elif isinstance(m, MixedEdgeChoice):
            top2 = sorted(m.alpha(m.label).topk(2).indices.tolist())
            assert arch[m.label] == top2
            checked.add(m.label)
    assert checked == set(arch)
    check_parity(net, arch, inputs("darts"))


def test_demo_factory_and_arch():
    net = build_supernet(f"{ROOT / 'models' / 'demo.py'}:supernet")
    arch = se.freeze(net, se.load_arch(ROOT / "models" / "archs" / "demo.json"))
    check_parity(net, arch, image_like((2, *net.input_shape[1:])))


# -- MobileNetV3-Large and -Small, against an independent construction ----------------------------
# torchvision's tables: (kernel, expanded, out, SE, activation, stride) per block after the stem.
LARGE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
         (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
         (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
         (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
         (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]
SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
         (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
         (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
         (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]
PUBLISHED = {"large": (LARGE, 1280, 5_483_032), "small": (SMALL, 1024, 2_542_856)}


class _RefBlock(nn.Module):
    def __init__(self, cin, k, exp, out, use_se, act, stride):
        super().__init__()
        act_cls = nn.ReLU if act == "RE" else nn.Hardswish
        bn = lambda c: nn.BatchNorm2d(c, eps=1e-3)  # noqa: E731
        layers = []
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), bn(exp), act_cls()]
        layers += [nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), bn(exp),
                   act_cls()]
        self.body = nn.Sequential(*layers)
        squeeze = max(8, int(exp // 4 + 4) // 8 * 8)  # torchvision's _make_divisible(exp // 4, 8)
        squeeze += 8 if squeeze < 0.9 * (exp // 4) else 0
        self.se = (nn.Sequential(nn.Conv2d(exp, squeeze, 1), nn.ReLU(), nn.Conv2d(squeeze, exp, 1),
                                 nn.Hardsigmoid()) if use_se else None)
        self.project = nn.Sequential(nn.Conv2d(exp, out, 1, bias=False), bn(out))
        self.residual = stride == 1 and cin == out

    def forward(self, x):
        y = self.body(x)
        if self.se is not None:
            y = y * self.se(F.adaptive_avg_pool2d(y, 1))
        y = self.project(y)
        return x + y if self.residual else y


def _reference(table, hidden):
    layers = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16, eps=1e-3), nn.Hardswish()]
    cin = 16
    for k, exp, out, use_se, act, stride in table:
        layers.append(_RefBlock(cin, k, exp, out, use_se, act, stride))
        cin = out
    layers += [nn.Conv2d(cin, 6 * cin, 1, bias=False), nn.BatchNorm2d(6 * cin, eps=1e-3),
               nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(6 * cin, hidden), nn.Hardswish(), nn.Dropout(0.2),
               nn.Linear(hidden, 1000)]
    return nn.Sequential(*layers)


def _layer_kinds(module):
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Hardswish, nn.Hardsigmoid)
    return [type(m).__name__ for m in module.modules() if isinstance(m, kinds)]


@pytest.fixture(scope="module")
def full_size_mobilenetv3():
    return get_space("mobilenetv3").build(seed=0, width_mult=1.0, num_classes=1000,
                                          resolution=224, calib_steps=0)


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_published_mobilenetv3(variant, full_size_mobilenetv3):
    table, hidden, expected_params = PUBLISHED[variant]
    net = full_size_mobilenetv3
    arch = se.freeze(net, se.load_arch(ROOT / "models" / "archs" / f"mobilenetv3_{variant}.json"))
    plain = se.materialize(net, arch).eval()
    reference = _reference(table, hidden).eval()
    assert n_params(plain) == n_params(reference) == expected_params
    # Same layers (convs, norms, linears, activations) in the same order...
    assert _layer_kinds(plain) == _layer_kinds(reference)
    ours, theirs = plain.state_dict(), reference.state_dict()
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]
    # ...wired the same way: with our weights, the reference computes our outputs.
    reference.load_state_dict(dict(zip(theirs, ours.values())), strict=True)
    x = image_like((2, 3, 224, 224))
    with torch.no_grad():
        assert_within_noise(plain(x), reference(x), run_float64(reference, x))
    # SE placement: one squeeze-excite per SE block of the table.
    n_se = sum(type(m).__name__ == "SqueezeExcite" for m in plain.modules())
    assert n_se == sum(row[3] for row in table)
