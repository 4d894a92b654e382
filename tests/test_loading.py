"""Loading weights: as saved, through a space's ``translate_state_dict`` hook, or refused by name.

NNI's one-shot layouts are tested against NNI itself in ``tests/nni/test_checkpoint.py``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from subnet_export.errors import CheckpointError
from subnet_export.loading import build_and_load, load_checkpoint, load_weights
from subnet_export.supernet.convert import to_supernet

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import tiny_space  # noqa: E402

sys.path.remove(str(FIXTURES))
SPACE = f"{FIXTURES / 'tiny_space.py'}"


class Hooked(tiny_space.TinySpace):
    """A space that reads an older layout of its own checkpoints (keys under ``legacy.``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def translate_state_dict(self, state):
        self.calls += 1
        if not any(k.startswith("legacy.") for k in state):
            return None
        return ({k.removeprefix("legacy."): v for k, v in state.items()},
                f"legacy layout: dropped 'legacy.' from {len(state)} keys")


def _seeded(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state of ``net``'s keys with seeded values (shared tensors, e.g. alphas, stay shared)."""
    gen = torch.Generator().manual_seed(seed)
    donor = {}
    for k, v in net.state_dict(keep_vars=True).items():
        donor.setdefault(id(v), torch.randn(v.shape, generator=gen)
                         if v.is_floating_point() else v.detach().clone())
    return {k: donor[id(v)] for k, v in net.state_dict(keep_vars=True).items()}


def _assert_state(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = net.state_dict()
    assert set(got) == set(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def test_a_checkpoint_that_fits_loads_as_saved(tmp_path):
    net = to_supernet(tiny_space.space())
    state = _seeded(net, 0)
    torch.save(state, tmp_path / "w.pt")
    loaded = load_checkpoint(net, tmp_path / "w.pt")
    assert loaded.note is None
    assert loaded.sha256 == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    assert load_weights(net, tmp_path / "w.pt") == loaded.sha256
    _assert_state(net, state)


def test_a_lightning_checkpoint_that_fits_says_where_it_came_from(tmp_path):
    net = to_supernet(tiny_space.space())
    state = _seeded(net, 1)
    torch.save({"state_dict": state, "epoch": 2, "global_step": 40, "optimizer_states": [],
                "pytorch-lightning_version": "1.9.5"}, tmp_path / "last.ckpt")
    note = load_checkpoint(net, tmp_path / "last.ckpt").note
    assert note == ("A Lightning Trainer checkpoint (epoch 2, global step 40): its state dict "
                    "fitted as saved")
    _assert_state(net, state)


def test_the_roots_hook_translates_first(tmp_path):
    space = Hooked()
    net = to_supernet(space)
    state = _seeded(net, 2)
    torch.save({f"legacy.{k}": v for k, v in state.items()}, tmp_path / "old.pt")
    note = load_checkpoint(net, tmp_path / "old.pt").note
    assert note == f"legacy layout: dropped 'legacy.' from {len(state)} keys"
    _assert_state(net, state)
    calls = space.calls
    torch.save(state, tmp_path / "new.pt")
    assert load_checkpoint(net, tmp_path / "new.pt").note is None
    assert space.calls == calls  # a state that fits never reaches the hook


def test_a_hook_that_declines_leaves_the_usual_error(tmp_path):
    space = Hooked()
    net = to_supernet(space)
    state = _seeded(net, 3)
    state["head.wieght"] = state.pop("head.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        load_weights(net, tmp_path / "bad.pt")
    message = str(info.value)
    assert space.calls == 1
    assert "'head.wieght'" in message and "nearest key of the supernet: 'head.weight'" in message
    assert "missing" in message and "'head.weight'" in message


def test_arch_weights_build_a_space_differentiable(tmp_path):
    own = to_supernet(tiny_space.space(), "differentiable")
    state = _seeded(own, 4)
    torch.save(state, tmp_path / "darts.pt")
    net, loaded = build_and_load(f"{SPACE}:space", None, tmp_path / "darts.pt")
    assert {m.strategy for m in net.modules() if hasattr(m, "strategy")} == {"differentiable"}
    assert loaded.note is None
    _assert_state(net, state)
    net, _ = build_and_load(f"{SPACE}:space", None, None)
    assert {m.strategy for m in net.modules() if hasattr(m, "strategy")} == {"sampling"}


class _Stage(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))


class _Staged(torch.nn.Module):
    """A repeat that keeps its blocks one level down (``stage.blocks.N``), as NNI's does."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = _Stage()
        self.head = torch.nn.Linear(3, 2)


def test_a_repeat_level_is_added_where_the_supernet_has_one(tmp_path):
    net = _Staged()
    state = _seeded(net, 5)
    flat = {k.replace("stage.blocks.", "stage."): v for k, v in state.items()}
    torch.save(flat, tmp_path / "flat.pt")
    note = load_checkpoint(net, tmp_path / "flat.pt").note
    assert "mapped 4 repeat key(s)" in note
    _assert_state(net, state)


def test_controller_keys_outside_a_lightning_layout_are_not_dropped(tmp_path):
    net = to_supernet(tiny_space.space())
    state = _seeded(net, 6)
    state["controller.g_emb"] = torch.zeros(1, 4)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="controller.g_emb"):
        load_weights(net, tmp_path / "w.pt")
