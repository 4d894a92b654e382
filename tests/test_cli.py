"""The CLI through the installed console script: exit codes, messages, the bundle handoff."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from subnet_export.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import tiny_space  # noqa: E402

sys.path.remove(str(FIXTURES))
SPACE = f"{FIXTURES / 'tiny_space.py'}"
ARCH = {"width": 12, "block.k": 5, "depth": 2, "op": "conv"}
SCRIPT = Path(sys.executable).with_name("subnet-export")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script."""
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """One clear message naming the problem, the given exit code, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


@pytest.fixture(scope="session")
def arch_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    path.write_text(json.dumps(ARCH))
    return path


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, arch_file) -> tuple[Path, dict]:
    """One bundle made by the real console script, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("b") / "bundle"
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out", str(out),
               "--json", "--batch", "4")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_onnx_writes_a_passing_bundle(bundle):
    out, summary = bundle
    assert summary["passed"] is True and summary["exit_code"] == 0
    assert summary["arch"] == ARCH
    assert sorted(p.name for p in out.iterdir()) == [
        "arch.json", "manifest.json", "model.onnx", "parity.json", "samples.npz"]
    assert json.loads((out / "arch.json").read_text()) == ARCH
    backends = {b["name"]: b["status"] for b in summary["parity"]["backends"]}
    assert backends["ort-cpu"] == "passed" and backends["torch-cpu"] == "passed"
    assert set(summary["timings_s"]) == {"freeze", "materialize", "export", "validate", "bundle"}


def test_onnx_prints_stages_on_stderr_and_the_result_on_stdout(tmp_path, arch_file):
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out",
               str(tmp_path / "b"), "--exporter", "torchscript")
    assert proc.returncode == 0, proc.stderr
    for n, stage in enumerate(["freeze", "materialize", "export", "validate", "bundle"], 1):
        assert f"[{n}/5] {stage}" in proc.stderr and f"[{n}/5]" not in proc.stdout
    assert "ort-cpu" in proc.stdout and f"bundle: {tmp_path / 'b'}" in proc.stdout
    assert "torchscript exporter" in proc.stdout and "bundle:" not in proc.stderr


def test_verify_passes_and_imports_no_torch(bundle):
    out, _ = bundle
    code = (
        "import sys; from subnet_export.cli import main; rc = main(['verify', sys.argv[1]]);"
        "assert 'torch' not in sys.modules, 'verify imported torch'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "PASSED" in proc.stdout


def test_noise_factor_is_a_real_option(bundle, tmp_path, arch_file):
    # torch-cpu is the reference bit for bit: its error is exactly the reference's own, so a
    # factor under 1 fails even it; the verdict and the reason say so
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out",
               str(tmp_path / "b"), "--noise-factor", "0.5", "--json")
    assert proc.returncode == 1, proc.stderr
    assert "parity FAILED" in proc.stderr and "over x0.5" in proc.stderr  # --json: on stderr
    parity = json.loads(proc.stdout)["parity"]
    assert parity["oracle"] == "supernet-float64"
    assert {b["tolerance"]["noise_factor"] for b in parity["backends"]} == {0.5}
    # the passing bundle's samples carry the oracle, and verify judges them by the noise rule
    out, _ = bundle
    proc = run("verify", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    noise = json.loads(proc.stdout)["noise"]
    assert noise and all(n["passed"] and n["factor"] == 4.0 for n in noise)
    assert "error/noise" in proc.stderr
    failed = run("verify", str(out), "--noise-factor", "0.01")
    assert failed.returncode == 1 and "FAIL" in failed.stdout, failed.stdout + failed.stderr
    assert_user_error(run("verify", str(out), "--noise-factor", "-1"), 2, "--noise-factor")


def test_verify_catches_a_tampered_model(bundle, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(bundle[0], copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    proc = run("verify", str(copy))
    assert proc.returncode == 1 and "model.onnx" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_space_and_sample_json():
    proc = run("space", f"{SPACE}:space", "--json")
    assert proc.returncode == 0, proc.stderr
    space = json.loads(proc.stdout)
    assert space["size"] == 3 * 2 * 2 * 2
    assert space["labels"]["op"]["candidates"] == ["conv", "skip"]
    first = run("sample", f"{SPACE}:supernet", "--seed", "7")
    again = run("sample", f"{SPACE}:supernet", "--seed", "7")
    assert first.returncode == 0 and first.stdout == again.stdout
    arch = json.loads(first.stdout)
    assert set(arch) == {"width", "block.k", "depth", "op"}
    assert arch["width"] in (8, 12, 16)


def test_space_factory_with_strategy_differentiable():
    runner = CliRunner()
    result = runner.invoke(cli, ["space", f"{SPACE}:space", "--strategy", "differentiable"])
    assert result.exit_code == 0, result.output
    assert "24 architectures" in result.output


# -- bad input: one message, exit 2, no traceback ---------------------------------------------
def _checkpoint(tmp_path: Path, mutate) -> Path:
    return tiny_space.save_checkpoint(tmp_path / "ckpt.pt", mutate)


class _Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['EVIL_MARK'], 'w').write('ran')",))


@pytest.mark.parametrize(
    "case",
    ["missing-file", "bad-factory-path", "no-such-factory", "factory-raises", "wrong-return",
     "bad-shape", "unknown-label", "bad-value", "missing-label", "arch-not-json", "arch-missing",
     "out-exists", "out-unwritable", "ckpt-missing-key", "ckpt-extra-key", "ckpt-wrong-shape",
     "ckpt-garbage", "ckpt-pickle", "samples-missing"],
)
def test_onnx_bad_input(case, tmp_path, arch_file, bundle, monkeypatch):
    out = tmp_path / "out"
    target = f"{SPACE}:supernet"
    extra: list[str] = []
    needles: tuple[str, ...]
    mark = tmp_path / "evil-ran"
    if case == "missing-file":
        target, needles = f"{tmp_path / 'nope.py'}:supernet", ("does not exist",)
    elif case == "bad-factory-path":
        target, needles = "no_colon_here", ("path/to/file.py:factory",)
    elif case == "no-such-factory":
        target, needles = f"{SPACE}:nope", ("no attribute 'nope'",)
    elif case == "factory-raises":
        target, needles = f"{SPACE}:raises", ("factory exploded",)
    elif case == "wrong-return":
        target, needles = f"{SPACE}:not_a_module", ("returned a dict",)
    elif case == "bad-shape":
        extra, needles = ["--input-shape", "1x3x-4"], ("1x3x-4", "e.g. 1x3x224x224")
    elif case in ("unknown-label", "bad-value", "missing-label", "arch-not-json"):
        arch = dict(ARCH)
        if case == "unknown-label":
            arch["widht"] = 8
            needles = ("widht", "did you mean")
        elif case == "bad-value":
            arch["width"] = 10
            needles = ("'width'", "[8, 12, 16]")
        else:
            arch.pop("depth")
            needles = ("'depth'", "missing")
        path = tmp_path / "arch.json"
        path.write_text("{not json" if case == "arch-not-json" else json.dumps(arch))
        if case == "arch-not-json":
            needles = ("not valid JSON",)
        extra = ["--arch", str(path)]
    elif case == "arch-missing":
        extra, needles = ["--arch", str(tmp_path / "none.json")], ("does not exist",)
    elif case == "out-exists":
        out, needles = bundle[0], ("already exists", "--force")
    elif case == "out-unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        out, needles = blocker / "bundle", (str(blocker),)
    elif case.startswith("ckpt-"):
        if case == "ckpt-missing-key":
            path, needles = _checkpoint(tmp_path, lambda s: s.pop("head.weight")), ("missing",
                                                                                    "head.weight")
        elif case == "ckpt-extra-key":
            path = _checkpoint(tmp_path, lambda s: s.__setitem__("stray", torch.zeros(1)))
            needles = ("unexpected", "stray")
        elif case == "ckpt-wrong-shape":
            path = _checkpoint(tmp_path, lambda s: s.__setitem__("head.bias", torch.zeros(3)))
            needles = ("shape", "head.bias")
        elif case == "ckpt-garbage":
            path = tmp_path / "garbage.safetensors"
            path.write_bytes(b"\x00\x01garbage")
            needles = ("cannot read",)
        else:
            path = tmp_path / "evil.pt"
            torch.save({"w": _Evil()}, path)
            monkeypatch.setenv("EVIL_MARK", str(mark))
            needles = ("refused", "unpickling")
        extra = ["--weights", str(path)]
    elif case == "samples-missing":
        extra, needles = ["--samples", str(tmp_path / "none.npz")], ("does not exist",)
    else:  # pragma: no cover - the parametrisation lists every case
        raise AssertionError(case)
    if case not in ("arch-missing", "unknown-label", "bad-value", "missing-label",
                    "arch-not-json"):
        extra += ["--arch", str(arch_file)]
    proc = run("onnx", target, "--out", str(out), *extra)
    assert_user_error(proc, 2, *needles)
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not mark.exists(), "a refused checkpoint ran code"
    if case not in ("out-exists",):
        assert not out.exists(), "a failed run left something at --out"
    # nothing half-written beside --out either
    if out.parent.exists() and case not in ("out-exists", "out-unwritable"):
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_debug_shows_the_traceback(tmp_path):
    proc = run("onnx", f"{SPACE}:raises", "--out", str(tmp_path / "o"), "--debug")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_verify_corrupt_bundle(tmp_path):
    (tmp_path / "manifest.json").write_text("{broken")
    assert_user_error(run("verify", str(tmp_path)), 2, "manifest")


def test_unknown_option_is_a_usage_error():
    proc = run("onnx", f"{SPACE}:supernet", "--out", "x", "--no-such-option")
    assert_user_error(proc, 2, "--no-such-option")


def test_calib_data_recalibrates_and_is_recorded(tmp_path, arch_file, bundle):
    import numpy as np

    calib = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, input=(rng.standard_normal((40, 3, 12, 12)) * 2 + 1).astype(np.float32))
    out = tmp_path / "b"
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out", str(out),
               "--calib-data", str(calib), "--calib-samples", "32", "--calib-batch", "8",
               "--json")
    assert proc.returncode == 0, proc.stderr
    assert "[2/6] recalibrate" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = manifest["extra"]["bn_recalibration"]
    assert recorded["num_samples"] == 32 and recorded["batch_size"] == 8
    assert recorded["seed"] == 0 and recorded["method"]
    # same inputs, new statistics: the expected outputs move away from the uncalibrated bundle
    fresh = np.load(out / "samples.npz")
    before = np.load(bundle[0] / "samples.npz")
    assert np.array_equal(fresh["input:input"], before["input:input"])
    assert not np.allclose(fresh["output:output"], before["output:output"], atol=1e-4)
    assert run("verify", str(out)).returncode == 0


def test_calib_data_missing_file(tmp_path, arch_file):
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out",
               str(tmp_path / "b"), "--calib-data", str(tmp_path / "none.npz"))
    assert_user_error(proc, 2, "calibration data", "does not exist")


def test_samples_opset_and_providers_options(tmp_path, arch_file):
    import numpy as np

    samples = tmp_path / "samples.npz"
    np.savez(samples, input=np.random.default_rng(1).standard_normal((3, 3, 12, 12))
             .astype(np.float32))
    out = tmp_path / "b"
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out", str(out),
               "--samples", str(samples), "--opset", "18", "--providers", "CPU",
               "--atol", "1e-4", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    labels = [s["label"] for s in summary["parity"]["inputs"]]
    assert labels[-1] == "samples" and summary["parity"]["inputs"][-1]["shapes"][0][0] == 3
    backends = {b["name"]: b for b in summary["parity"]["backends"]}
    assert "ort-cuda" not in backends  # only the provider asked for
    # an explicit --atol is the elementwise rule as written: rtol 0, no noise rule
    assert backends["ort-cpu"]["tolerance"] == {"atol": 1e-4, "rtol": None, "noise_factor": None}
    assert backends["ort-cpu"]["noise"] == []
    assert json.loads((out / "manifest.json").read_text())["opset"] == 18


def test_weights_layout_is_said_on_stderr_and_recorded(tmp_path, arch_file, bundle):
    """A checkpoint under a Lightning module's prefix, its repeat at ``.blocks.N.`` (NNI's
    one-shot layout): loaded, and the one line saying so reaches stderr and the manifest."""
    state = tiny_space.supernet().state_dict()
    relaid = {"model.model." + k.replace("blocks.", "blocks.blocks.", 1): v
              for k, v in state.items()}
    n_blocks = sum(k.startswith("blocks.") for k in state)
    torch.save(relaid, tmp_path / "nni.pth")
    out = tmp_path / "b"
    proc = run("onnx", f"{SPACE}:supernet", "--arch", str(arch_file), "--out", str(out),
               "--weights", str(tmp_path / "nni.pth"), "--providers", "CPU", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("weights: ")]
    assert len(lines) == 1, proc.stderr
    note = lines[0].removeprefix("weights: ")
    assert "stripped 'model.model.'" in note and f"mapped {n_blocks} repeat key(s)" in note
    summary = json.loads(proc.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["weights_layout"] == manifest["extra"]["weights_layout"] == note
    assert bundle[1]["weights_layout"] is None  # no weights given: nothing to say
