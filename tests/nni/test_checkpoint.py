"""NNI 2.10's one-shot checkpoints, as NNI's strategies save them, load into our supernet.

NNI's side: a small CNN space (a value-choice width, a layer choice used twice under one label,
a repeat of elastic depth, an input choice) written with ``nni.retiarii.nn.pytorch``, wrapped
as NNI's strategies wrap it (``ClassificationModule`` inside each one-shot Lightning module).
Our side: the same space with our primitives and NNI's labels, built from a factory file as
the CLI builds it. Every tensor must land on our key for it, every alpha on its label.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from subnet_export.arch import freeze
from subnet_export.errors import CheckpointError
from subnet_export.loading import build_and_load, load_checkpoint, load_weights

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning:nni.*")]

NNI_SPACE = '''
import torch
import nni.retiarii.nn.pytorch as nn
from nni.retiarii import model_wrapper


def conv(w, k):
    return nn.Conv2d(w, w, k, padding=k // 2)


@model_wrapper
class Net(nn.Module):
    def __init__(self, widths=True):
        super().__init__()
        w = nn.ValueChoice([4, 8], label="width") if widths else 8
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.bn = nn.BatchNorm2d(w)
        self.op = nn.LayerChoice([conv(w, 3), conv(w, 5)], label="op")
        self.op2 = nn.LayerChoice([conv(w, 3), conv(w, 5)], label="op")
        self.pre = nn.Conv2d(w, 8, 1)
        if widths:
            self.blocks = nn.Repeat(lambda i: nn.Sequential(nn.Conv2d(8, 8, 3, padding=1),
                                                            nn.ReLU()), (1, 3), label="depth")
        else:
            self.blocks = nn.Identity()
        self.skip = nn.InputChoice(2, 1, label="skip")
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        y = self.blocks(self.pre(self.op(x)))
        return self.fc(self.skip([y, self.pre(self.op2(x))]).mean((2, 3)))
'''

#: ours: the same space, NNI's import lines and classes replaced by our primitives
OUR_SPACE = '''
import torch
from torch import nn
import subnet_export as se


def conv(w, k):
    return se.Conv2d(w, w, k, padding=k // 2)


class Net(nn.Module):
    def __init__(self, widths=True):
        super().__init__()
        w = se.Choice([4, 8], label="width") if widths else 8
        self.stem = se.Conv2d(3, w, 3, padding=1)
        self.bn = se.BatchNorm2d(w)
        self.op = se.LayerChoice([conv(w, 3), conv(w, 5)], label="op")
        self.op2 = se.LayerChoice([conv(w, 3), conv(w, 5)], label="op")
        self.pre = se.Conv2d(w, 8, 1)
        if widths:
            self.blocks = se.Repeat(lambda i: nn.Sequential(nn.Conv2d(8, 8, 3, padding=1),
                                                            nn.ReLU()),
                                    se.Choice([1, 2, 3], label="depth"))
        else:
            self.blocks = nn.Identity()
        self.skip = se.InputChoice(2, 1, label="skip")
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        y = self.blocks(self.pre(self.op(x)))
        return self.fc(self.skip([y, self.pre(self.op2(x))]).mean((2, 3)))


def space():
    return Net()


def narrow():
    return Net(widths=False)
'''

#: NNI's one-shot Lightning modules; proxyless searches no value choice or repeat
STRATEGIES = {
    "spos": ("sampling", "RandomSamplingLightningModule", True),
    "enas": ("sampling", "EnasLightningModule", True),
    "darts": ("differentiable", "DartsLightningModule", True),
    "gumbel": ("differentiable", "GumbelDartsLightningModule", True),
    "proxyless": ("differentiable", "ProxylessLightningModule", False),
}


def _load_source(source: str, name: str):
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    sys.modules[name] = module
    return module


def _nni_module(kind: str, seed: int):
    from nni.nas.oneshot.pytorch import differentiable, sampling
    from nni.retiarii.evaluator.pytorch.lightning import ClassificationModule

    _, cls_name, widths = STRATEGIES[kind]
    cls = getattr(sampling, cls_name, None) or getattr(differentiable, cls_name)
    space = _load_source(NNI_SPACE, "_nni_checkpoint_space")
    torch.manual_seed(seed)
    evaluator = ClassificationModule()
    evaluator.set_model(space.Net(widths=widths))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = cls(evaluator, reward_metric_name="val_acc") if kind == "enas" else cls(evaluator)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from BatchNorm's defaults and from near-equal alphas
        for key, t in module.state_dict(keep_vars=True).items():
            if t.is_floating_point() and ("bn." in key or "_arch_alpha" in key):
                t.copy_(torch.randn(t.shape, generator=gen))
        module.model.model.bn.running_var.abs_().add_(0.5)
    return module


@pytest.fixture(scope="module")
def nni_modules():
    """NNI's one-shot module of every strategy, seeded weights and alphas."""
    return {kind: _nni_module(kind, seed) for seed, kind in enumerate(STRATEGIES)}


@pytest.fixture(scope="module")
def our_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "our_space.py"
    path.write_text(OUR_SPACE)
    return path


def _spec(our_file, kind: str) -> str:
    return f"{our_file}:{'space' if STRATEGIES[kind][2] else 'narrow'}"


def _ours(our_file, kind: str, strategy: str | None = None):
    from subnet_export.loading import build_supernet

    return build_supernet(_spec(our_file, kind), strategy or STRATEGIES[kind][0])


def _nni_labels(module) -> dict[str, str]:
    """NNI's state-dict key of every alpha -> its label, read from NNI's own supermodules."""
    ids = {}
    for m in module.nas_modules:
        alphas = getattr(m, "_arch_alpha", None)
        if isinstance(alphas, torch.nn.ParameterDict):
            ids.update({id(p): label for label, p in alphas.items()})
        elif alphas is not None:
            ids[id(alphas)] = m.label
    return {k: ids[id(p)] for k, p in module.state_dict(keep_vars=True).items()
            if id(p) in ids}


def _our_key(nni_key: str) -> str:
    # NNI's key for a model tensor -> ours: no Lightning prefix, no Repeat 'blocks.' level
    return nni_key.removeprefix("model.model.").replace("blocks.blocks.", "blocks.")


def _nni_export(module) -> dict:
    """NNI's export() in our arch form (an input choice of one: a list of one index)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arch = module.export()
    return {k: [v] if k == "skip" and isinstance(v, int) else v for k, v in arch.items()}


def _assert_loaded(ours, module, state) -> None:
    """Every model tensor of NNI's ``state`` equals ours; every alpha sits on its label."""
    got = ours.state_dict()
    labels = _nni_labels(module)
    model_keys = [k for k in state if k not in labels and not k.startswith("controller.")]
    assert {_our_key(k) for k in model_keys} == {k for k in got if "_arch_alpha" not in k}
    for key in model_keys:
        assert torch.equal(got[_our_key(key)], state[key]), key
    differentiable = any("_arch_alpha" in k for k in got)
    for key, label in labels.items():
        if differentiable:
            owner = next(m for m in ours.modules() if label in getattr(m, "_alpha_labels", ()))
            assert torch.equal(owner.alpha(label), state[key]), (key, label)


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_lightning_state_dict_loads_key_for_key(kind, nni_modules, our_file, tmp_path):
    module = nni_modules[kind]
    state = module.state_dict()
    path = tmp_path / "supernet.pth"
    torch.save(state, path)
    ours = _ours(our_file, kind)
    loaded = load_checkpoint(ours, path)
    _assert_loaded(ours, module, state)
    if STRATEGIES[kind][0] == "differentiable":
        assert dict(freeze(ours)) == _nni_export(module)
        n_alphas = sum("_arch_alpha" in k for k in state)
        assert f"mapped {n_alphas} architecture weight(s)" in loaded.note
        assert "stripped 'model.model.'" in loaded.note
    else:  # SPOS/ENAS save the user's model alone: only the repeat's level differs
        assert "stripped" not in loaded.note
    if STRATEGIES[kind][2]:
        n_blocks = sum("blocks.blocks." in k for k in state)
        assert f"mapped {n_blocks} repeat key(s)" in loaded.note
    assert loaded.note.startswith("NNI ") and "\n" not in loaded.note
    assert load_weights(ours, path) == loaded.sha256  # the old entry point, same load


def test_enas_controller_tensors_are_ignored(nni_modules, our_file, tmp_path):
    module = nni_modules["enas"]
    state = torch.nn.Module.state_dict(module)  # the whole module: model.model. + controller.
    controller = [k for k in state if k.startswith("controller.")]
    assert controller
    torch.save(state, tmp_path / "enas.pth")
    ours = _ours(our_file, "enas")
    note = load_checkpoint(ours, tmp_path / "enas.pth").note
    _assert_loaded(ours, module, state)
    assert f"ignored {len(controller)} ENAS controller tensor(s)" in note


def test_darts_checkpoint_into_a_sampling_supernet_ignores_the_alphas(nni_modules, our_file,
                                                                      tmp_path):
    module = nni_modules["darts"]
    torch.save(module.state_dict(), tmp_path / "darts.pth")
    ours = _ours(our_file, "darts", "sampling")
    note = load_checkpoint(ours, tmp_path / "darts.pth").note
    _assert_loaded(ours, module, module.state_dict())
    n_alphas = sum("_arch_alpha" in k for k in module.state_dict())
    assert f"ignored {n_alphas} architecture weight(s)" in note


@pytest.mark.parametrize("kind, strategy, built", [
    ("darts", None, "differentiable"), ("darts", "sampling", "sampling"),
    ("spos", None, "sampling")])
def test_arch_weights_choose_the_strategy(kind, strategy, built, nni_modules, our_file,
                                          tmp_path):
    module = nni_modules[kind]
    torch.save(module.state_dict(), tmp_path / "w.pth")
    net, loaded = build_and_load(_spec(our_file, kind), strategy, tmp_path / "w.pth")
    assert {m.strategy for m in net.modules() if hasattr(m, "strategy")} == {built}
    if built == "differentiable":  # no --arch: NNI's export(), the argmax of the alphas
        assert dict(freeze(net)) == _nni_export(module)
    assert loaded.sha256 and loaded.note


def test_bare_supernet_and_wrapped_forms(nni_modules, our_file, tmp_path):
    module = nni_modules["darts"]
    bare = module.model.model.state_dict()  # torch.save of NNI's supernet itself
    torch.save(bare, tmp_path / "bare.pth")
    torch.save({"model": module.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("bare.pth", "wrapped.pth"):
        ours = _ours(our_file, "darts")
        note = load_checkpoint(ours, tmp_path / name).note
        _assert_loaded(ours, module, module.state_dict())
        assert dict(freeze(ours)) == _nni_export(module)
        assert ("stripped" in note) == (name == "wrapped.pth"), note


@pytest.fixture(scope="module")
def trainer_ckpt(tmp_path_factory):
    """One DARTS step with a Lightning Trainer, saved with ``Trainer.save_checkpoint``."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    module = _nni_module("darts", 7)
    data = TensorDataset(torch.randn(4, 3, 8, 8), torch.arange(4))
    loader = DataLoader(data, batch_size=4)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                         accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, {"train": loader, "val": loader})
    path = tmp_path_factory.mktemp("ckpt") / "epoch=0-step=1.ckpt"
    trainer.save_checkpoint(path)
    return module.eval(), path


def test_lightning_trainer_checkpoint(trainer_ckpt, our_file):
    module, path = trainer_ckpt
    raw = torch.load(path, weights_only=True)
    assert {"state_dict", "optimizer_states", "epoch"} <= set(raw)
    ours = _ours(our_file, "darts")
    note = load_checkpoint(ours, path).note
    _assert_loaded(ours, module, module.state_dict())
    assert dict(freeze(ours)) == _nni_export(module)
    assert "Lightning Trainer checkpoint" in note and "stripped 'model.model.'" in note


# -- what does not fit ----------------------------------------------------------------------------
def _error(ours, state, tmp_path) -> str:
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_weights(ours, tmp_path / "bad.pth")
    return str(info.value)


def test_a_foreign_key_is_named_with_the_nearest_of_ours(nni_modules, our_file, tmp_path):
    state = dict(nni_modules["darts"].state_dict())
    state["model.model.stem.wieght"] = state.pop("model.model.stem.weight")
    message = _error(_ours(our_file, "darts"), state, tmp_path)
    assert "'model.model.stem.wieght'" in message and "'stem.weight'" in message


@pytest.mark.parametrize("case", ["size", "shared", "missing", "sampling-saved", "label"])
def test_architecture_weights_that_do_not_fit(case, nni_modules, our_file, tmp_path):
    state = dict(nni_modules["darts" if case != "sampling-saved" else "spos"].state_dict())
    if case == "size":
        state["model.model.op._arch_alpha"] = torch.zeros(3)
        state["model.model.op2._arch_alpha"] = torch.zeros(3)
        needles = ["'op'", "3 entries", "2 candidates"]
    elif case == "shared":
        state["model.model.op2._arch_alpha"] = state["model.model.op2._arch_alpha"] + 1
        needles = ["'op'", "differ", "op2._arch_alpha"]
    elif case == "missing":
        del state["model.model.blocks._arch_alpha.depth"]
        needles = ["'depth'", "no architecture weights"]
    elif case == "sampling-saved":
        needles = ["no architecture weights", "--strategy sampling"]
    else:
        state["model.model.stem._arch_alpha.widht"] = state.pop(
            "model.model.stem._arch_alpha.width")
        needles = ["'widht'", "'width'"]
    message = _error(_ours(our_file, "darts"), state, tmp_path)
    for needle in needles:
        assert needle in message, (needle, message)


def test_cli_without_strategy_or_arch_exports_nnis_argmax(nni_modules, our_file, tmp_path):
    module = nni_modules["darts"]
    torch.save(module.state_dict(), tmp_path / "darts.pth")
    script = Path(sys.executable).with_name("subnet-export")
    proc = subprocess.run(
        [str(script), "onnx", _spec(our_file, "darts"), "--weights", str(tmp_path / "darts.pth"),
         "--out", str(tmp_path / "b"), "--input-shape", "1x3x8x8", "--batch", "2",
         "--providers", "CPU", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["arch"] == _nni_export(module)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("weights: NNI ")]
    assert len(lines) == 1 and "architecture weight" in lines[0], proc.stderr
    assert summary["weights_layout"] == lines[0].removeprefix("weights: ")
