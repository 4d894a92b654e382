"""The CLI with real models' inputs: names, dtypes, value ranges, dynamic axes, output names.

A token-id transformer (int64 ids, a bool mask, two outputs) goes through the console script
with a dynamic sequence axis, and its bundle runs on onnxruntime at other sequence lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_cli import SPACE, assert_user_error, run

from subnet_export.parity.inputs import other_size

FIXTURES = Path(__file__).parent / "fixtures"
TEXT = f"{FIXTURES / 'text_space.py'}:supernet"
TEXT_ARCH = {"embed": 24, "heads": 4, "depth": 2}


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("text")
    arch = root / "arch.json"
    arch.write_text(json.dumps(TEXT_ARCH))
    out = root / "bundle"
    proc = run("onnx", TEXT, "--arch", str(arch), "--out", str(out),
               "--input", "ids:2x12:int64:0..50", "--input", "mask:2x12:bool",
               "--dynamic-axes", "ids:1=seq,mask:1=seq", "--output-names", "logits,hidden",
               "--json")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout), proc.stderr


def test_token_ids_export_with_named_inputs_and_a_dynamic_sequence(text_bundle):
    out, summary, _ = text_bundle
    assert summary["passed"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(i["name"], i["dtype"], i["shape"]) for i in manifest["inputs"]] == [
        ("ids", "int64", ["batch", "seq"]), ("mask", "bool", ["batch", "seq"])]
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "hidden"]
    assert manifest["outputs"][1]["shape"][0] == "batch"
    assert manifest["extra"]["inputs"][0] == {"name": "ids", "shape": [2, 12], "dtype": "int64",
                                             "range": [0.0, 50.0], "dynamic_axes": {"1": "seq"}}
    # the --input batch (2) is the one validated besides 1, and the sequence at a second size
    labels = [s["label"] for s in summary["parity"]["inputs"]]
    assert labels == ["random-b1", "random-b2", f"random-b1-seq{other_size(12)}"]
    shapes = {s["label"]: s["shapes"] for s in summary["parity"]["inputs"]}
    assert shapes[labels[-1]] == [[1, other_size(12)], [1, other_size(12)]]
    ids = np.load(out / "samples.npz")["input:ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 50


def test_token_id_bundle_runs_at_other_lengths_and_verifies(text_bundle):
    import onnxruntime as ort

    out, _, _ = text_bundle
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for seq in (3, 9, 16):
        feed = {"ids": rng.integers(0, 50, (2, seq)), "mask": rng.integers(0, 2, (2, seq)) > 0}
        logits, hidden = session.run(None, feed)
        assert logits.shape == (2, 3) and hidden.shape == (2, seq, 24)
        assert np.isfinite(logits).all()
    proc = run("verify", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "PASSED" in proc.stdout


def test_factory_declared_input_specs_are_used(tmp_path):
    # text_space.supernet declares input_specs; no --input needed
    proc = run("onnx", TEXT, "--out", str(tmp_path / "b"), "--batch", "2", "--json",
               "--providers", "CPU")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [(i["name"], i["dtype"]) for i in manifest["inputs"]] == [("ids", "int64"),
                                                                    ("mask", "bool")]
    model = onnx.load(str(tmp_path / "b" / "model.onnx"), load_external_data=False)
    assert [i.name for i in model.graph.input] == ["ids", "mask"]


def test_onnx_result_goes_to_stdout_and_progress_to_stderr(text_bundle, tmp_path):
    _, _, stderr = text_bundle
    # with --json the human result goes to stderr and stdout holds the JSON alone
    assert "bundle:" in stderr and "parameters" in stderr
    proc = run("onnx", f"{SPACE}:supernet", "--out", str(tmp_path / "b"),
               "--input-shape", "1x3x12x12", "--providers", "CPU")
    assert proc.returncode == 0, proc.stderr
    assert "[1/5] freeze" in proc.stderr and "[1/5]" not in proc.stdout
    for needle in ("parameters", "opset", "time", "parity PASSED", "oracle:",
                   f"bundle: {tmp_path / 'b'}", "subnet-export verify", "subnet-export gate"):
        assert needle in proc.stdout, (needle, proc.stdout)
    assert "bundle:" not in proc.stderr


@pytest.mark.parametrize("option, value, needles", [
    ("--input", "ids", ("has no shape", "NAME:SHAPE")),
    ("--input", "ids:1x12:int65", ("int65", "int64")),
    ("--input", "ids:1x12:int64:5..2", ("5..2", "empty")),
    ("--input", "ids:1x12:int64:0.5..3", ("integer range",)),
    ("--input", "mask:1x12:bool:0..2", ("bool input takes no value range",)),
    ("--input", "1bad:1x12", ("1bad",)),
    ("--dynamic-axes", "ids:0=seq", ("axis 0 is the batch",)),
    ("--dynamic-axes", "ids=seq", ("NAME:AXIS=DIM",)),
    ("--dynamic-axes", "nope:1=seq", ("'nope'", "ids, mask")),
    ("--output-names", "logits,,x", ("--output-names",)),
])
def test_bad_input_options_are_usage_errors(option, value, needles, tmp_path):
    args = ["--input", "ids:1x12:int64:0..50", "--input", "mask:1x12:bool"]
    if option == "--input":
        args = []
    proc = run("onnx", TEXT, "--out", str(tmp_path / "b"), *args, option, value)
    assert_user_error(proc, 2, *needles)
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no work dir left beside --out


def test_input_and_input_shape_together_are_refused(tmp_path):
    proc = run("onnx", TEXT, "--out", str(tmp_path / "b"), "--input", "ids:1x12:int64",
               "--input-shape", "1x12")
    assert_user_error(proc, 2, "--input", "--input-shape", "not both")
