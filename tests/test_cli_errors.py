"""Exit codes and messages a new user meets: each checked through the console script.

0 success, 1 failed parity / tampered bundle / broken budget, 2 usage error, 3 internal error;
``--debug`` adds a traceback and keeps the code. Errors are one line saying what to fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import ARCH, SPACE, assert_user_error, run

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = f"{FIXTURES / 'broken_space.py'}"


def _args(tmp_path: Path, *extra: str) -> list[str]:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    return ["onnx", f"{SPACE}:supernet", "--arch", str(arch), "--out", str(tmp_path / "b"),
            *extra]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny-space bundle (CPU only) and its --json summary, shared by the readers below."""
    root = tmp_path_factory.mktemp("made")
    proc = run(*_args(root, "--providers", "CPU", "--json"))
    assert proc.returncode == 0, proc.stderr
    return root / "b", json.loads(proc.stdout)


def test_help_documents_the_exit_codes():
    for args in (["--help"], ["onnx", "--help"]):
        proc = run(*args)
        assert proc.returncode == 0
        text = " ".join(proc.stdout.split())
        assert "3 internal error" in text and "2 usage error" in text, text


@pytest.mark.parametrize("extra, needles", [
    (["--input-shape", "1x3x12"], ("does not run on the inputs", "1x3x12", "rank")),
    (["--input-shape", "1x3x12x12", "--input-shape", "1x3x12x12"],
     ("does not run on the inputs",)),
    (["--input-shape", "1x3x100000x100000"], ("needs", "available", "smaller shape")),
    (["--batch", "1000000000"], ("--batch 1000000000", "available")),
    (["--input-shape", "1x3x64x64", "--batch", "20000"], ("--batch 20000", "activations",
                                                          "Use --batch")),
    (["--input-shape", "4x3x12x12", "--batch", "2"], ("contradicts", "batch 4")),
])
def test_impossible_inputs_are_usage_errors_before_any_work(extra, needles, tmp_path):
    proc = run(*_args(tmp_path, *extra))
    assert_user_error(proc, 2, *needles)
    assert "internal error" not in proc.stderr
    assert "[4/5] export" not in proc.stderr  # refused before the export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json"]


def test_the_input_shape_batch_is_the_one_validated(tmp_path):
    proc = run(*_args(tmp_path, "--input-shape", "4x3x12x12", "--providers", "CPU", "--json"))
    assert proc.returncode == 0, proc.stderr
    labels = [s["label"] for s in json.loads(proc.stdout)["parity"]["inputs"]]
    assert labels == ["random-b1", "random-b4"]


def test_debug_keeps_the_exit_code(tmp_path):
    usage = run(*_args(tmp_path, "--input-shape", "1x3x12", "--debug"))
    assert usage.returncode == 2 and "Traceback" in usage.stderr
    assert usage.stderr.rstrip().splitlines()[-1].startswith("error: ")
    internal = run("onnx", f"{BROKEN}:internal_bug", "--out", str(tmp_path / "c"), "--debug")
    plain = run("onnx", f"{BROKEN}:internal_bug", "--out", str(tmp_path / "c"))
    assert internal.returncode == plain.returncode == 3, (internal.stderr, plain.stderr)
    assert "Traceback" in internal.stderr and "Traceback" not in plain.stderr
    assert "internal error" in plain.stderr and "--debug" in plain.stderr


def test_unwritable_out_is_refused_first(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # the factory raises: had --out been checked late, that error would come first
    proc = run("onnx", f"{SPACE}:raises", "--out", str(blocker / "b"))
    assert_user_error(proc, 2, str(blocker), "not a directory")


def test_work_files_live_beside_out_and_stale_ones_are_removed(tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".b.work-{dead}-abc123"
    (stale / "model.onnx").parent.mkdir()
    (stale / "model.onnx").write_bytes(b"x" * 1000)
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    proc = subprocess.run([str(Path(sys.executable).with_name("subnet-export")),
                           *_args(tmp_path, "--providers", "CPU")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json", "b", "tmp"]
    # torch keeps its compile cache in $TMPDIR; no work file of ours is there
    assert not [p for p in tmpdir.iterdir() if p.name.startswith(".subnet-export")]
    assert not list(tmpdir.rglob("*.onnx")) and not list(tmpdir.rglob("*.data"))


def test_truncated_torch_checkpoint_is_named_as_one(tmp_path):
    from tiny_space import save_checkpoint

    path = save_checkpoint(tmp_path / "w.pt")
    path.write_bytes(path.read_bytes()[:200])
    proc = run(*_args(tmp_path, "--weights", str(path)))
    assert_user_error(proc, 2, "torch checkpoint", "truncated")
    assert "safetensors" not in proc.stderr


def test_samples_that_are_not_npz_get_an_accurate_message(tmp_path):
    path = tmp_path / "samples.npz"
    path.write_text("not an archive")
    proc = run(*_args(tmp_path, "--samples", str(path)))
    assert_user_error(proc, 2, "is not an .npz archive", "numpy.savez")
    assert "allow_pickle" not in proc.stderr
    np.savez(path, input=np.array([{"a": 1}], dtype=object))
    proc = run(*_args(tmp_path, "--samples", str(path)))
    assert_user_error(proc, 2, "object arrays")


def test_missing_baseline_is_named_as_the_baseline(made, tmp_path):
    budget = tmp_path / "budget.toml"
    budget.write_text("[latency]\nmax_ratio = 2.0\n")
    gate = run("gate", str(made[0]), "--budget", str(budget), "--baseline",
               str(tmp_path / "nope"))
    assert_user_error(gate, 2, "baseline bundle (--baseline)", "nope")


def test_verify_and_gate_results_go_to_stdout(made, tmp_path):
    verify = run("verify", str(made[0]))
    assert verify.returncode == 0 and "PASSED" in verify.stdout, verify.stderr
    budget = tmp_path / "budget.toml"
    budget.write_text("max_params = 10\n")
    gate = run("gate", str(made[0]), "--budget", str(budget))
    assert gate.returncode == 1 and "max_params" in gate.stdout, gate.stdout + gate.stderr
    assert "gate: FAILED" in gate.stdout and gate.stderr == ""
    as_json = run("verify", str(made[0]), "--json")
    assert json.loads(as_json.stdout)["passed"] is True


def test_parameter_count_is_what_the_graph_reads(made):
    import onnx

    out, summary = made
    manifest = json.loads((out / "manifest.json").read_text())
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                  if not t.name.endswith(("running_mean", "running_var")))
    assert manifest["parameter_count"] == summary["parameter_count"] == weights
    assert manifest["extra"]["unused_parameter_count"] == 0
    assert summary["model_bytes"] == manifest["files"]["model.onnx"]["size"]


def test_space_shows_the_modules_each_label_shapes():
    proc = run("space", f"{SPACE}:space")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    width = next(k for k, line in enumerate(lines) if line.startswith("width"))
    assert lines[width + 1].split()[0] == "shapes" and "stem" in lines[width + 1]
    as_json = json.loads(run("space", f"{SPACE}:space", "--json").stdout)
    assert "stem" in as_json["labels"]["width"]["modules"]
    assert as_json["labels"]["op"]["modules"] == ["op"]


def test_nan_weights_warn_on_stderr_and_fail_parity(tmp_path):
    from tiny_space import save_checkpoint

    path = save_checkpoint(tmp_path / "w.pt",
                           lambda s: s["head.weight"].__setitem__((0, 0), torch.nan))
    proc = run(*_args(tmp_path, "--weights", str(path), "--providers", "CPU"))
    assert proc.returncode == 1
    assert "warning:" in proc.stderr and "head.weight" in proc.stderr
    assert "FAILED" in proc.stdout and "(marked failed)" in proc.stdout


@pytest.mark.parametrize("exporter, opset, accepted", [
    ("dynamo", "16", False), ("dynamo", "99", False), ("torchscript", "99", False),
    ("torchscript", "16", True),
])
def test_an_opset_the_exporter_cannot_write_is_refused(exporter, opset, accepted, tmp_path):
    proc = run(*_args(tmp_path, "--exporter", exporter, "--opset", opset, "--providers", "CPU"))
    if not accepted:
        assert_user_error(proc, 2, f"opset {opset} cannot be produced", exporter, "..")
        assert "[1/5]" not in proc.stderr and not (tmp_path / "b").exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["opset"] == int(opset)


@pytest.mark.parametrize("factory, exporter, needles", [
    ("unsupported_op", "dynamo", ("operator aten::kthvalue", "in module '1.1'", "dynamo",
                                  "hint:")),
    ("unsupported_op", "torchscript", ("operator aten::kthvalue", "in module '1.1'",
                                       "torchscript", "hint:")),
    ("data_dependent", "dynamo", ("data-dependent control flow", "in module '1.1'",
                                  "exporter 'torchscript'")),
])
def test_export_failures_are_one_line_with_an_accurate_hint(factory, exporter, needles,
                                                              tmp_path):
    args = ("onnx", f"{BROKEN}:{factory}", "--out", str(tmp_path / "b"), "--exporter", exporter)
    proc = run(*args, "--json")
    assert_user_error(proc, 2, *needles)
    error = [line for line in proc.stderr.splitlines() if not line.startswith("[")]
    assert len(error) == 1 and error[0].startswith("error: export"), proc.stderr
    assert proc.stdout == ""  # nothing the exporter printed reaches stdout, even with --json
    assert "Torch IR graph" not in proc.stderr and "exporter='torchscript'" not in proc.stderr
    debug = run(*args, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert len(debug.stderr.splitlines()) > len(proc.stderr.splitlines()) + 5
    assert debug.stderr.rstrip().splitlines()[-1] == error[0]
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_inspect_reads_a_bundle_and_its_json(made, tmp_path):
    shown = run("inspect", str(made[0]))
    assert shown.returncode == 0, shown.stderr
    for needle in ("Operators", "Conv", "width", "ort-cpu", "Provenance", "opset"):
        assert needle in shown.stdout, (needle, shown.stdout)
    data = json.loads(run("inspect", str(made[0]), "--json").stdout)
    assert data["arch"] == ARCH and data["passed"] is True
    assert data["model"]["manifest_parameter_count"] == json.loads(
        (made[0] / "manifest.json").read_text())["parameter_count"]
    assert_user_error(run("inspect", str(tmp_path / "nope")), 2, "does not exist")


def test_netron_friendly_node_names_match_module_paths(made):
    import onnx

    model = onnx.load(str(made[0] / "model.onnx"), load_external_data=False)
    convs = sorted(n.name for n in model.graph.node if n.op_type == "Conv")
    assert convs == ["blocks.0.dw/Conv", "blocks.1.dw/Conv", "op/Conv", "stem/Conv"]


def test_sigterm_mid_run_leaves_nothing_behind(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([str(Path(sys.executable).with_name("subnet-export")),
                             *_args(tmp_path, "--providers", "CPU")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".b.work-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".b.work-*")), "the run never made its work dir"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "terminated" in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json"]


@pytest.mark.parametrize("extra, needles", [
    (["--providers", "FOO"], ("'FOO' is not an onnxruntime execution provider", "CUDA")),
    (["--seed", "99999999999999999999"], ("--seed", "0<=x<=4294967295")),
])
def test_bad_option_values_are_usage_errors(extra, needles, tmp_path):
    assert_user_error(run(*_args(tmp_path, *extra)), 2, *needles)


@pytest.mark.parametrize("factory, needles", [
    ("no_space", ("no search space", "se.to_supernet")),
    ("foreign", ("an NNI model space or one-shot supernet", "nni.nas.oneshot", "se.Choice")),
])
def test_a_module_without_our_search_space_is_refused(factory, needles, tmp_path):
    for command in (["onnx", f"{BROKEN}:{factory}", "--out", str(tmp_path / "b")],
                    ["space", f"{BROKEN}:{factory}"]):
        assert_user_error(run(*command), 2, *needles)
    assert not (tmp_path / "b").exists()
