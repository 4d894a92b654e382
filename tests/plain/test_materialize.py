"""materialize on a composite supernet: stem, repeat of layer-choice blocks with depthwise convs,
input choice, attention block with a Choice kept as an attribute, classifier; both strategies.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from spaces import (
    STRATEGIES,
    CompositeSpace,
    assert_plain_contract,
    count_params,
    random_archs,
    randomise_norm_stats,
)
from torch import nn

import subnet_export as se

N_RANDOM = 10


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=STRATEGIES)
def net(request) -> nn.Module:
    torch.manual_seed(0)
    supernet = se.to_supernet(CompositeSpace(), strategy=request.param).eval()
    randomise_norm_stats(supernet)
    return supernet


def _extremes(net: nn.Module) -> list[dict]:
    specs = se.search_space(net)
    ends = []
    for pick in (0, -1):
        arch = {lb: s.values()[pick] for lb, s in specs.items()}
        ends.append(arch)
    return ends


def _archs(net: nn.Module) -> list[dict]:
    return _extremes(net) + random_archs(net, N_RANDOM, seed=11)


def composite_params(arch: dict) -> int:
    """Parameters of CompositeSpace's subnet ``arch``, counted from the layer shapes by hand."""
    w, k = arch["w"], arch["stem.k"]
    n = w * 3 * k * k + 2 * w  # stem conv (no bias) + stem BN
    for i in range(arch["depth"]):
        op, e, kk = arch[f"block{i}.op"], arch[f"block{i}.e"], arch[f"block{i}.k"]
        hid = w * e
        if op == "mb":
            n += w * hid + 2 * hid + hid * kk * kk + 2 * hid + hid * w + 2 * w
        elif op == "conv":
            n += w * w * 9 + w + 2 * w
    hid = w * arch["ratio"]
    n += 2 * w + (4 * w * w + 4 * w) + 2 * w + (w * hid + hid) + (hid * w + w)
    n += w * 5 + 5
    return n


def test_parity_keys_storage_classes_and_size(net) -> None:
    x = _x()
    for arch in _archs(net):
        plain = assert_plain_contract(net, arch, x)
        assert count_params(plain) == composite_params(arch)
        assert count_params(plain) < count_params(net)


def test_the_largest_arch_is_smaller_than_the_supernet(net) -> None:
    # Even the largest subnet drops the unchosen candidates of each layer choice and the
    # architecture weights.
    largest = _extremes(net)[-1]
    plain = se.materialize(net, largest)
    alphas = sum(p.numel() for n, p in net.named_parameters() if "_arch_alpha" in n)
    assert count_params(plain) == composite_params(largest)
    assert count_params(plain) < count_params(net) - alphas


def test_module_labels_maps_plain_paths(net) -> None:
    arch = dict(_extremes(net)[-1], **{"block0.op": "mb", "block1.op": "conv"})
    arch = se.freeze(net, arch)
    labels = se.module_labels(net, arch)
    plain_paths = {name for name, _ in se.materialize(net, arch).named_modules()}
    assert set(labels) <= plain_paths
    assert labels["stem"] == ["stem.k", "w"]
    assert {"block0.k", "block0.e", "block0.op", "depth", "w"} <= set(labels["blocks.0.dw"])
    assert "block1.op" in labels["blocks.1.0"] and "block1.k" not in labels["blocks.1.0"]
    assert set(labels["attn.attn"]) == {"heads", "w"}
    assert labels["skip"] == ["skip"]
    every = {lb for lbs in labels.values() for lb in lbs}
    assert every <= set(arch)


def test_one_skeleton_build_gives_the_model_and_its_labels(net, monkeypatch) -> None:
    from subnet_export.plain import materialize as stage

    arch = se.freeze(net, random_archs(net, 1, seed=5)[0])
    builds = []
    real = stage.freeze_module
    monkeypatch.setattr(stage, "freeze_module", lambda *a: builds.append(1) or real(*a))
    built = stage.materialize_with_labels(net, arch)
    assert len(builds) == 1 and built.arch == arch
    assert built.labels == se.module_labels(net, arch)
    plain = se.materialize(net, arch)
    x = _x(2)
    with torch.no_grad():
        assert torch.equal(built.model(x), plain(x))


def test_module_labels_includes_choice_attributes(net) -> None:
    labels = se.module_labels(net, _extremes(net)[-1])
    assert labels.get("attn.shuffle") == ["heads"]


def test_plain_is_picklable_and_deepcopyable(net) -> None:
    arch = random_archs(net, 1, seed=2)[0]
    plain = se.materialize(net, arch)
    x = _x(1)
    with torch.no_grad():
        ref = plain(x)
        for clone in (pickle.loads(pickle.dumps(plain)), copy.deepcopy(plain)):
            assert torch.equal(clone(x), ref)
            assert count_params(clone) == count_params(plain)
    buf = io.BytesIO()
    torch.save(plain.state_dict(), buf)
    buf.seek(0)
    again = se.materialize(net, arch)
    again.load_state_dict(torch.load(buf), strict=True)


def test_materialize_leaves_the_supernet_as_it_was(net) -> None:
    se.sample_arch(net, seed=4)
    x = _x(2)

    def snapshot():
        with torch.no_grad():
            out = net(x)
        modules = [(n, dict(m._arch), m._fixed) for n, m in net.named_modules()
                   if isinstance(m, se.BaseSuperNetModule)]
        state = {k: v.clone() for k, v in net.state_dict().items()}
        return out, se.freeze(net), modules, state, net.attn.shuffle.heads, net.training

    before = snapshot()
    for arch in random_archs(net, 4, seed=9):
        se.materialize(net, arch)
        se.module_labels(net, arch)
    after = snapshot()
    assert torch.equal(before[0], after[0])
    assert before[1:3] == after[1:3]
    assert before[3].keys() == after[3].keys()
    assert all(torch.equal(before[3][k], after[3][k]) for k in before[3])
    assert before[4:] == after[4:]


def test_plain_follows_the_training_mode_and_is_trainable(net) -> None:
    # skip [1] takes the blocks' output, so every plain parameter is on the path to the loss.
    arch = dict(random_archs(net, 1, seed=5)[0], skip=[1])
    net.train()
    try:
        plain = se.materialize(net, arch)
    finally:
        net.eval()
    assert plain.training and all(m.training for m in plain.modules())
    assert all(p.requires_grad for p in plain.parameters())
    plain(_x(3)).square().mean().backward()
    assert all(p.grad is not None for p in plain.parameters() if p.numel())
    assert not se.materialize(net, arch).training


def test_materialize_is_deterministic(net) -> None:
    arch = random_archs(net, 1, seed=6)[0]
    a, b = se.materialize(net, arch).state_dict(), se.materialize(net, arch).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sub_state_dict_holds_copies(net) -> None:
    arch = random_archs(net, 1, seed=7)[0]
    with se.fixed_arch(net, arch):
        state = se.sub_state_dict(net)
    theirs = {t.untyped_storage().data_ptr() for t in net.state_dict().values()}
    assert not {t.untyped_storage().data_ptr() for t in state.values()} & theirs
    # Each copy is no bigger than its own slice: a view would keep the whole supernet tensor.
    for key, t in state.items():
        assert t.is_contiguous(), key
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), key
