"""Arch validation (freeze, fixed_arch, materialize, load_arch) and search-space errors.

Every bad arch must raise ``se.ArchError`` -- nothing else -- with a message that names the label
and what would have been valid, whichever stage the user called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from spaces import CompositeSpace, HeadShuffle
from torch import nn

import subnet_export as se


@pytest.fixture(scope="module", params=["sampling", "differentiable"])
def net(request) -> nn.Module:
    torch.manual_seed(0)
    return se.to_supernet(CompositeSpace(), strategy=request.param).eval()


@pytest.fixture(scope="module")
def good(net) -> dict[str, Any]:
    return se.sample_arch(net, seed=3)


def _freeze(net, arch):
    return se.freeze(net, arch)


def _fixed(net, arch):
    with se.fixed_arch(net, arch):
        pass


def _materialize(net, arch):
    return se.materialize(net, arch)


STAGES = {"freeze": _freeze, "fixed_arch": _fixed, "materialize": _materialize}


def _raises(stage: Callable, net: nn.Module, arch: Any) -> se.ArchError:
    with pytest.raises(se.ArchError) as info:
        stage(net, arch)
    return info.value


def _with(arch: dict, **changes: Any) -> dict:
    out = dict(arch)
    out.update(changes)
    return out


# -- bad archs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_unknown_label_near_a_real_one(net, good, stage) -> None:
    err = _raises(stage, net, _with(good, **{"stem.kk": 3}))
    assert err.label == "stem.kk"
    assert "'stem.kk'" in str(err) and "'stem.k'" in str(err)


@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_unknown_label_lists_the_labels(net, good, stage) -> None:
    err = _raises(stage, net, _with(good, zzz_unrelated=1))
    assert err.label == "zzz_unrelated"
    for label in se.search_space(net):
        assert repr(label) in str(err)


@pytest.mark.parametrize("label", ["w", "depth", "block0.op", "skip", "heads"])
@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_missing_label(net, good, stage, label) -> None:
    arch = {k: v for k, v in good.items() if k != label}
    err = _raises(stage, net, arch)
    assert err.label == label
    assert repr(label) in str(err) and "missing" in str(err)
    assert str(list(se.search_space(net)[label].candidates)) in str(err)


@pytest.mark.parametrize(("label", "value"), [
    ("w", 12), ("stem.k", 4), ("depth", 0), ("depth", 4), ("block1.op", "conv5"),
    ("heads", 3), ("ratio", 0), ("skip", [2]), ("skip", [0, 1]),
])
@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_value_not_a_candidate(net, good, stage, label, value) -> None:
    err = _raises(stage, net, _with(good, **{label: value}))
    assert err.label == label
    assert repr(label) in str(err)
    assert str(list(se.search_space(net)[label].candidates)) in str(err)


@pytest.mark.parametrize(("label", "value"), [
    ("w", "8"), ("w", 8.0), ("w", True), ("depth", "2"), ("depth", 2.0), ("heads", False),
    ("block0.op", 0), ("block0.op", None), ("skip", 0), ("skip", "0"), ("skip", [True]),
    ("skip", [0.0]), ("ratio", [1]), ("ratio", {"v": 1}),
])
@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_wrong_type(net, good, stage, label, value) -> None:
    err = _raises(stage, net, _with(good, **{label: value}))
    assert err.label == label
    assert repr(label) in str(err)
    assert str(list(se.search_space(net)[label].candidates)) in str(err)


@pytest.mark.parametrize("arch", [["w", 8], "w=8", 8, ({"w": 8},)], ids=repr)
@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_not_a_dict(net, stage, arch) -> None:
    err = _raises(stage, net, arch)
    assert "object" in str(err) and type(arch).__name__ in str(err)


def test_a_failed_fixed_arch_leaves_the_supernet_as_it_was(net, good) -> None:
    before = se.freeze(net)
    with pytest.raises(se.ArchError):
        _fixed(net, _with(good, heads=3))
    assert se.freeze(net) == before


# -- arch files ------------------------------------------------------------------------------------
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "arch.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_arch_round_trip(tmp_path, net, good) -> None:
    path = _write(tmp_path, json.dumps(good))
    assert se.freeze(net, se.load_arch(path)) == good


@pytest.mark.parametrize(("first", "second"), [(8, 16), ("mb", "skip"), ([0], [1]), (8, "8")])
def test_load_arch_conflicting_values(tmp_path, first, second) -> None:
    path = _write(tmp_path, f'{{"w": {json.dumps(first)}, "d": 1, "w": {json.dumps(second)}}}')
    with pytest.raises(se.ArchError) as info:
        se.load_arch(path)
    assert info.value.label == "w"
    msg = str(info.value)
    assert "'w'" in msg and repr(first) in msg and repr(second) in msg


@pytest.mark.parametrize(("first", "second"), [("8.0", "8"), ("true", "1")])
def test_load_arch_conflict_of_json_types(tmp_path, first, second) -> None:
    with pytest.raises(se.ArchError):
        se.load_arch(_write(tmp_path, f'{{"w": {first}, "w": {second}}}'))


def test_load_arch_same_value_twice_is_accepted(tmp_path) -> None:
    assert se.load_arch(_write(tmp_path, '{"w": 8, "w": 8}')) == {"w": 8}


@pytest.mark.parametrize("text", ['[["w", 8]]', '"w"', "8", "{not json", ""])
def test_load_arch_not_an_object(tmp_path, text) -> None:
    with pytest.raises(se.ArchError, match="JSON"):
        se.load_arch(_write(tmp_path, text))


# -- freeze without an arch ------------------------------------------------------------------------
def test_freeze_without_arch_is_the_differentiable_argmax() -> None:
    torch.manual_seed(0)
    net = se.to_supernet(CompositeSpace(), strategy="differentiable")
    specs = se.search_space(net)
    gen = torch.Generator().manual_seed(5)
    expected: dict[str, Any] = {}
    seen: set[int] = set()
    for _, m in net.named_modules():
        for label in getattr(m, "_alpha_labels", ()):
            alpha = m.alpha(label)
            if id(alpha) in seen:
                continue
            seen.add(id(alpha))
            with torch.no_grad():
                alpha.copy_(torch.randn(alpha.shape, generator=gen))
            best = int(alpha.argmax())
            spec = specs[label]
            expected[label] = [best] if spec.kind == "input" else spec.candidates[best]
    assert set(expected) == set(specs), "every label of this space has architecture weights"
    assert se.freeze(net) == {label: expected[label] for label in specs}


def test_freeze_without_arch_is_the_sampling_state() -> None:
    torch.manual_seed(0)
    net = se.to_supernet(CompositeSpace(), strategy="sampling")
    for seed in range(4):
        arch = se.sample_arch(net, seed)
        assert se.freeze(net) == arch
        assert se.materialize(net).head.in_features == arch["w"]


def test_freeze_is_in_search_space_order_and_normalised(net, good) -> None:
    shuffled = dict(reversed(list(good.items())))
    shuffled["skip"] = tuple(good["skip"])
    out = se.freeze(net, shuffled)
    assert list(out) == list(se.search_space(net))
    assert out == good and isinstance(out["skip"], list)


# -- search-space errors ---------------------------------------------------------------------------
class TwoLists(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = se.Linear(4, se.Choice([8, 16], label="w"))
        self.b = se.Linear(se.Choice([8, 32], label="w"), 2)


class ValueAndLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = se.Linear(4, se.Choice([8, 16], label="w"))
        self.b = se.LayerChoice([nn.Identity(), nn.ReLU()], label="w")


class AttrAndModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = se.Linear(4, se.Choice([8, 16], label="w"))
        self.b = HeadShuffle(se.Choice([1, 2], label="w"))


@pytest.mark.parametrize("space", [TwoLists, ValueAndLayer, AttrAndModule])
@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_one_label_two_candidate_lists(space, strategy) -> None:
    with pytest.raises(se.SearchSpaceError, match="'w'"):
        se.to_supernet(space(), strategy=strategy)


def test_one_label_two_lists_inside_one_module() -> None:
    with pytest.raises(se.SearchSpaceError, match="'w'"):
        se.to_supernet(nn.Sequential(se.Conv2d(se.Choice([3, 4], label="w"),
                                               se.Choice([3, 8], label="w"), 1)))


@pytest.mark.parametrize("run", [
    lambda space: space(torch.randn(1, 3, 8, 8)),
    lambda space: se.search_space(space),
    lambda space: se.freeze(space, {}),
    lambda space: se.materialize(space, {}),
    lambda space: se.sample_arch(space, 0),
], ids=["forward", "search_space", "freeze", "materialize", "sample_arch"])
def test_space_used_before_to_supernet(run) -> None:
    with pytest.raises(se.SearchSpaceError, match="to_supernet"):
        run(CompositeSpace())


def test_to_supernet_twice() -> None:
    net = se.to_supernet(CompositeSpace())
    with pytest.raises(se.SearchSpaceError, match="once"):
        se.to_supernet(net)


def test_unknown_strategy() -> None:
    with pytest.raises(se.SearchSpaceError, match="sampling"):
        se.to_supernet(CompositeSpace(), strategy="evolution")


def test_errors_are_value_errors_for_callers_that_catch_those() -> None:
    # Code written against NNI catches ValueError for a bad arch; that must keep working.
    assert issubclass(se.ArchError, ValueError) and issubclass(se.SearchSpaceError, ValueError)
    with pytest.raises(ValueError):
        se.freeze(se.to_supernet(CompositeSpace()), {"w": 3})


# -- a frozen arch is validated once ---------------------------------------------------------------
def test_a_frozen_arch_is_taken_as_it_is_by_its_own_supernet(net, good, monkeypatch) -> None:
    import copy

    from subnet_export import arch as arch_module

    frozen = se.freeze(net, dict(good))
    assert isinstance(frozen, se.FrozenArch) and frozen == good and frozen.valid_for(net)
    assert json.loads(json.dumps(frozen)) == dict(frozen)
    calls = []
    real = arch_module.collect_specs
    monkeypatch.setattr(arch_module, "collect_specs", lambda m: calls.append(m) or real(m))
    assert se.freeze(net, frozen) is frozen
    with se.fixed_arch(net, frozen) as inside:
        assert inside is frozen
    se.materialize(net, frozen)
    assert calls == []  # not one more validation
    # another supernet (a copy) validates it again, and a plain dict is always validated
    other = copy.deepcopy(net)
    assert not frozen.valid_for(other)
    assert se.freeze(other, frozen) == frozen and len(calls) == 1
    se.freeze(net, dict(frozen))
    assert len(calls) == 2


def test_a_frozen_arch_cannot_change(net, good) -> None:
    frozen = se.freeze(net, dict(good))
    label = next(iter(frozen))
    for change in (lambda a: a.__setitem__(label, 1), lambda a: a.update({label: 1}),
                   lambda a: a.pop(label), lambda a: a.clear(), lambda a: a.setdefault("x", 1)):
        with pytest.raises(TypeError, match="cannot change"):
            change(frozen)
    copy_ = dict(frozen)
    copy_[label] = "edited"  # a copy is an ordinary dict
    import copy as copy_module
    import pickle

    assert type(copy_module.deepcopy(frozen)) is dict and pickle.loads(pickle.dumps(frozen)) == good


# -- probabilities as an arch (NNI's export_probs) -----------------------------------------------
def _probs(net) -> dict[str, dict[str, float]]:
    from subnet_export.supernet.walk import iter_supernet_modules

    out: dict = {}
    for _, module in iter_supernet_modules(net):
        out.update(module.export_probs(out))
    return out


def test_probabilities_freeze_to_the_most_probable_arch(net, good) -> None:
    specs = se.search_space(net)
    nested = {}
    for label, spec in specs.items():
        values = spec.candidates
        if spec.kind == "input":
            chosen = set(good[label])
            nested[label] = {str(v): (0.9 if v in chosen else 0.05) for v in values}
        else:
            nested[label] = {str(v): (0.9 if v == good[label] else 0.05) for v in values}
    flat = {f"{label}/{c}": p for label, d in nested.items() for c, p in d.items()}
    for probs in (nested, flat):
        frozen = se.freeze(net, probs)
        assert dict(frozen) == dict(good) and frozen.source == probs
    assert set(_probs(net)) <= set(specs)


def test_probabilities_of_no_candidate_are_arch_errors(net) -> None:
    probs = _probs(net)
    with pytest.raises(se.ArchError, match="'w'") as info:
        se.freeze(net, {**probs, "w": {"12": 1.0}})
    assert info.value.label == "w"
    flat = {f"{lb}/{c}": p for lb, d in probs.items() for c, p in d.items()}
    with pytest.raises(se.ArchError, match="zzz/1"):
        se.freeze(net, {**flat, "zzz/1": 0.5})
