"""reference_outputs=: outputs a framework recorded, judged as the backend ``external``."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import subnet_export as se
from subnet_export.errors import InputError
from subnet_export.parity.report import ParityReport

FIXTURES = Path(__file__).parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
import tiny_space  # noqa: E402

sys.path.remove(str(FIXTURES))
ARCH = {"width": 12, "block.k": 5, "depth": 2, "op": "conv"}


def recorded(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """What a framework's supernet computes for ARCH: here, a given copy of ours."""
    net = net.eval()
    with torch.no_grad(), se.fixed_arch(net, se.freeze(net, ARCH)):
        return net(x).numpy()


def perturbed(net: torch.nn.Module, scale: float = 1.02) -> torch.nn.Module:
    """A slightly different implementation: the stem's weight a few percent off."""
    other = copy.deepcopy(net)
    with torch.no_grad():
        other.stem.weight.mul_(scale)
    return other


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    net = tiny_space.supernet().eval()
    arch = se.freeze(net, ARCH)
    plain = se.materialize(net, arch).eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("ref") / "model.onnx"
    result = se.export_onnx(plain, (x,), path, exporter="torchscript", arch=arch)
    inputs = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    return net, arch, plain, result, x, inputs


def check(setup, reference_outputs, **kw) -> se.ParityReport:
    net, arch, plain, result, x, _ = setup
    return se.validate(net, arch, plain, result, example_inputs=(x,), batch_sizes=(1, 2),
                       reference_outputs=reference_outputs, **kw)


def test_our_own_supernet_path_passes_as_external(setup, tmp_path):
    net, *_, inputs = setup
    path = tmp_path / "ref.npz"
    np.savez(path, input=inputs.numpy(), output=recorded(net, inputs))
    report = check(setup, path)
    assert report.passed, report.format_table()
    ext = report.backend("external")
    assert ext.status == "passed" and ext.noise[0].ratio <= 4
    assert [c.inputs for c in ext.comparisons] == ["reference-outputs"]
    assert report.inputs[-1]["label"] == "reference-outputs"
    assert report.inputs[-1]["source"] == str(path)
    # the recorded inputs are one more set for every backend
    assert "reference-outputs" in {c.inputs for c in report.backend("ort-cpu").comparisons}
    again = ParityReport.from_json(report.to_json())
    assert again.backend("external").status == "passed" and again.passed


def test_a_different_implementation_fails_external(setup):
    net, *_, inputs = setup
    # the plain model still agrees with our supernet path; the recorded outputs do not
    report = check(setup, {"input": inputs.numpy(), "output": recorded(perturbed(net), inputs)})
    ext = report.backend("external")
    assert ext.status == "failed" and not report.passed and report.exit_code == 1
    assert ext.noise[0].ratio > 40, ext.noise  # 10x over the factor
    assert "recorded outputs disagree with our supernet path" in ext.reason
    assert all(b.status != "failed" for b in report.backends if b.name != "external")
    assert report.divergence is None  # nothing of ours to locate
    table = report.format_table()
    row = next(line for line in table.splitlines() if line.startswith("external"))
    assert "FAILED" in row and "recorded outputs disagree" in row


def test_named_and_numbered_output_keys(setup):
    net, _, _, result, _, inputs = setup
    out = recorded(net, inputs)
    name = result.graph.output_names[0]
    for data in ({"input_0": inputs.numpy(), "output_0": out},
                 {result.graph.input_names[0]: inputs.numpy(), f"output:{name}": out}):
        assert check(setup, data, locate=False).backend("external").status == "passed"


@pytest.mark.parametrize("case, needle", [
    ("no-output", "hold no output"),
    ("no-input", "hold no input"),
    ("mixed", "mix output conventions"),
    ("wrong-name", "output:"),
    ("wrong-shape", "has shape"),
    ("wrong-input-shape", "the model takes [batch, 3, 12, 12]"),
    ("wrong-dtype", "int64"),
])
def test_keys_and_shapes_that_do_not_fit(setup, case, needle):
    net, *_, inputs = setup
    x, out = inputs.numpy(), recorded(net, inputs)
    data = {
        "no-output": {"input": x, "logits": out},
        "no-input": {"output": out},
        "mixed": {"input": x, "output": out, "output_0": out},
        "wrong-name": {"input": x, "output:nope": out},
        "wrong-shape": {"input": x, "output": out[:, :3]},
        "wrong-input-shape": {"input": x[:, :, :8], "output": out},
        "wrong-dtype": {"input": x, "output": out.astype(np.int64)},
    }[case]
    with pytest.raises(InputError, match="reference outputs") as err:
        check(setup, data, locate=False)
    assert needle in str(err.value)


def test_the_manifest_records_external_parity(setup, tmp_path):
    net, *_, inputs = setup
    path = tmp_path / "ref.npz"
    np.savez(path, input=inputs.numpy(), output=recorded(net, inputs))
    run = se.export_subnet(net, tmp_path / "with", input_shapes=[(1, 3, 12, 12)], arch=ARCH,
                           exporter="torchscript", batch=2, reference_outputs=path)
    assert run.exit_code == 0, run.report.format_table()
    manifest = json.loads((tmp_path / "with" / "manifest.json").read_text())
    assert manifest["extra"]["external_parity"] == {
        "checked": True, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "passed": True}
    # the bundle's samples stay the seeded random sets
    assert not any("reference" in k for k in np.load(tmp_path / "with" / "samples.npz").files)
    run = se.export_subnet(net, tmp_path / "without", input_shapes=[(1, 3, 12, 12)], arch=ARCH,
                           exporter="torchscript", batch=2)
    assert run.manifest.extra["external_parity"] == {"checked": False}
