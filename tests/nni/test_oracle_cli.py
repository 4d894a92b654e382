"""``subnet-export onnx`` on NNI 2.x files as NNI users have them, NNI 2.10 as the oracle.

The space file with only its imports changed, NNI's checkpoint (``torch.save`` of the one-shot
Lightning module's ``state_dict``, or a Lightning Trainer ``.ckpt``) and NNI's arch written with
``json.dump`` go through the installed console script; the bundle's model.onnx on onnxruntime
must compute NNI's output by the float32 noise rule.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import _oracle as oracle
import pytest
from _noise import assert_within_noise

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning:nni.*")]

SCRIPT = Path(sys.executable).with_name("subnet-export")


def export(spec: str, out: Path, strategy: str, weights: Path, shape: str,
           arch: Path | None = None, exporter: str = "dynamo") -> dict:
    """Run ``subnet-export onnx ... --json``; return its summary (asserting exit 0)."""
    cmd = [str(SCRIPT), "onnx", spec, "--weights", str(weights), "--out", str(out),
           "--strategy", strategy, "--input-shape", shape, "--batch", "2",
           "--providers", "CPU", "--exporter", exporter, "--json"]
    if arch is not None:
        cmd += ["--arch", str(arch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["passed"] is True and summary["exit_code"] == 0
    assert "parity PASSED" in proc.stderr  # the human result, on stderr beside --json
    return summary


def check_bundle(out: Path, module, name: str, arch: dict) -> None:
    """The bundle's arch is NNI's arch and its model computes NNI's output."""
    assert json.loads((out / "arch.json").read_text()) == arch
    x = oracle.SPACES[name].inputs(3, seed=11)
    oracle.set_sample(module, arch)
    ref, ref64 = oracle.nni_run(module, x)
    got = oracle.onnx_run(out / "model.onnx", x)
    assert_within_noise(got, ref, ref64, what=f"bundle vs NNI, {arch}")


def test_spos_state_dict_and_sampled_arch(cases, tmp_path):
    name = "cnn"
    module = cases.nni(name, "sampling")
    random.seed(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NNI: "export from RandomOneShot is arbitrary"
        arch_file = oracle.write_arch(module.export(), tmp_path / "arch.json")
    weights = oracle.save_state_dict(module, tmp_path / "spos.pth")
    spec = oracle.our_spec(name, tmp_path)
    summary = export(spec, tmp_path / "b", "sampling", weights,
                     oracle.SPACES[name].shape_text, arch_file)
    arch = json.loads(arch_file.read_text())
    assert summary["arch"] == arch
    check_bundle(tmp_path / "b", module, name, arch)


def test_lightning_trainer_checkpoint(tmp_path):
    """A ``.ckpt`` of ``Trainer.save_checkpoint`` after a few SPOS steps: ``state_dict`` beside
    Lightning's loops, optimizer states and the evaluator's hyper-parameters."""
    name = "transformer"
    module = oracle.nni_supernet(name, "sampling", seed=3)
    ckpt = oracle.save_trainer_checkpoint(module, name, tmp_path / "epoch=0-step=2.ckpt")
    arch = {"embed": 4, "heads": 2, "model_1": 3}
    arch_file = oracle.write_arch(arch, tmp_path / "arch.json")
    export(oracle.our_spec(name, tmp_path), tmp_path / "b", "sampling", ckpt,
           oracle.SPACES[name].shape_text, arch_file, exporter="torchscript")
    check_bundle(tmp_path / "b", module, name, arch)


def test_darts_checkpoint_and_exported_arch(cases, tmp_path):
    name = "darts"
    module = cases.nni(name, "differentiable")
    exported = oracle.set_one_hot(module, 5)
    arch_file = oracle.write_arch(exported, tmp_path / "arch.json")
    weights = oracle.save_state_dict(module, tmp_path / "darts.pth")
    export(oracle.our_spec(name, tmp_path), tmp_path / "b", "differentiable", weights,
           oracle.SPACES[name].shape_text, arch_file)
    check_bundle(tmp_path / "b", cases.twin(name), name, json.loads(arch_file.read_text()))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "model.model." in manifest["extra"]["weights_layout"]  # what the loader mapped


def test_darts_checkpoint_without_arch_exports_nnis_argmax(cases, tmp_path):
    name = "nasbench201"
    module = cases.nni(name, "differentiable")
    oracle.set_random_alphas(module, 21)
    weights = oracle.save_state_dict(module, tmp_path / "darts.pth")
    summary = export(oracle.our_spec(name, tmp_path), tmp_path / "b", "differentiable", weights,
                     oracle.SPACES[name].shape_text, exporter="torchscript")
    arch = oracle.as_json(module.export())
    assert summary["arch"] == arch
    check_bundle(tmp_path / "b", cases.twin(name), name, arch)
