"""``subnet-export onnx --reference-outputs``: a framework's own outputs as the backend external."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import ARCH, SPACE, assert_user_error, run, tiny_space

import subnet_export as se


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The arch, and outputs recorded by our supernet path and by one with a weight 2% off."""
    root = tmp_path_factory.mktemp("refout")
    (root / "arch.json").write_text(json.dumps(ARCH))
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    out = {"arch": root / "arch.json"}
    for name, scale in (("good", 1.0), ("off", 1.02)):
        net = tiny_space.supernet().eval()
        with torch.no_grad():
            net.stem.weight.mul_(scale)
            with se.fixed_arch(net, se.freeze(net, ARCH)):
                y = net(x).numpy()
        out[name] = root / f"{name}.npz"
        np.savez(out[name], input=x.numpy(), output=y)
    out["bad-keys"] = root / "bad-keys.npz"
    np.savez(out["bad-keys"], input=x.numpy(), logits=y)
    return out


def onnx_run(files: dict[str, Path], out: Path, ref: str | Path, *extra: str):
    return run("onnx", f"{SPACE}:supernet", "--arch", str(files["arch"]), "--out", str(out),
               "--exporter", "torchscript", "--batch", "2", "--reference-outputs", str(ref),
               *extra)


def test_recorded_outputs_of_our_own_path_pass(files, tmp_path):
    proc = onnx_run(files, tmp_path / "b", files["good"], "--json")
    assert proc.returncode == 0, proc.stderr
    parity = json.loads(proc.stdout)["parity"]
    assert {b["name"]: b["status"] for b in parity["backends"]}["external"] == "passed"
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["extra"]["external_parity"]["checked"] is True
    assert manifest["extra"]["external_parity"]["passed"] is True


def test_a_different_implementation_fails_with_the_row_named(files, tmp_path):
    proc = onnx_run(files, tmp_path / "b", files["off"])
    assert proc.returncode == 1, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("external"))
    assert "FAILED" in row and "recorded outputs disagree with our supernet path" in row
    assert "parity FAILED" in proc.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["extra"]["external_parity"]["passed"] is False


def test_keys_that_do_not_fit_and_a_missing_file_are_usage_errors(files, tmp_path):
    proc = onnx_run(files, tmp_path / "b", files["bad-keys"])
    assert_user_error(proc, 2, "hold no output", "'output'", "output_0", "output:")
    assert "[1/5]" not in proc.stderr  # refused before any stage ran
    proc = onnx_run(files, tmp_path / "c", tmp_path / "none.npz")
    assert_user_error(proc, 2, "reference outputs file", "does not exist")
