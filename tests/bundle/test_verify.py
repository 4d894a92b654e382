"""verify_bundle: hashes, tampering, corrupt manifests, sample reruns, and no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _onnx_fixtures import PARITY_OK, gemm_model, gemm_samples, make_bundle

from subnet_export.bundle.integrity import check_files, require_intact
from subnet_export.bundle.verify import verify_bundle
from subnet_export.bundle.write import write_bundle
from subnet_export.errors import BundleError, TamperError

REPO = Path(__file__).resolve().parents[2]
FILES = ["arch.json", "model.onnx", "net.onnx.data", "parity.json", "samples.npz"]


@pytest.fixture
def fresh(tmp_path) -> Path:
    return make_bundle(tmp_path, external=True)[0]


def _statuses(report) -> dict[str, str]:
    return {f.path: f.status for f in report.files}


def test_fresh_bundle_passes(fresh):
    report = verify_bundle(fresh)
    assert report.passed and report.exit_code == 0
    assert set(_statuses(report).values()) == {"ok"}
    assert sorted(_statuses(report)) == sorted([*FILES, "manifest.json"])
    assert [(s.case, s.output) for s in report.samples] == [(0, "y"), (1, "y")]
    # the numpy reference and onnxruntime agree far inside the recorded tolerance
    assert all(s.passed and s.max_abs_error < 1e-5 for s in report.samples)
    assert report.tolerance == {"atol": None, "rtol": None, "noise_factor": 4.0}
    # the noise rule, pooled over both cases, against the float64 numpy oracle
    assert [n.output for n in report.noise] == ["y"] and report.noise[0].passed
    assert report.noise[0].elements == 2 * 3 + 3 * 3
    assert json.loads(json.dumps(report.to_json()))["exit_code"] == 0
    assert "verify: PASSED" in report.format_table()
    report.raise_for_tamper()  # nothing to raise


@pytest.mark.parametrize("name", FILES)
def test_one_flipped_byte_in_any_file_is_caught_and_named(fresh, name):
    path = fresh / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_bundle(fresh)
    assert report.exit_code == 1 and not report.passed
    assert [f.path for f in report.tampered] == [name]
    assert report.tampered[0].status == "modified"
    assert report.samples == []  # a tampered model is never loaded
    with pytest.raises(TamperError, match=name) as info:
        report.raise_for_tamper()
    assert info.value.exit_code == 1


def test_an_edit_to_the_manifest_that_keeps_it_valid_json_is_caught(fresh):
    path = fresh / "manifest.json"
    text = path.read_text()
    path.write_text(text.replace('"parameter_count": 15', '"parameter_count": 14'))
    assert path.read_text() != text
    report = verify_bundle(fresh)
    assert report.exit_code == 1
    assert [f.path for f in report.tampered] == ["manifest.json"]


def test_reformatting_the_manifest_is_caught(fresh):
    path = fresh / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text())))  # same content, other bytes
    assert [f.path for f in verify_bundle(fresh).tampered] == ["manifest.json"]


@pytest.mark.parametrize("name", FILES)
def test_a_deleted_file_is_caught_and_named(fresh, name):
    (fresh / name).unlink()
    report = verify_bundle(fresh)
    assert report.exit_code == 1
    assert [(f.path, f.status) for f in report.tampered] == [(name, "missing")]


@pytest.mark.parametrize("name", ["extra.onnx", "sub/dir/payload.bin", ".hidden"])
def test_an_added_file_is_caught_and_named(fresh, name):
    path = fresh / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"surprise")
    report = verify_bundle(fresh)
    assert report.exit_code == 1
    assert [(f.path, f.status) for f in report.tampered] == [(name, "added")]


def test_a_file_replaced_by_a_symlink_is_caught(fresh, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_bytes((fresh / "arch.json").read_bytes())  # same bytes, still not allowed
    (fresh / "arch.json").unlink()
    (fresh / "arch.json").symlink_to(outside)
    assert [(f.path, f.status) for f in verify_bundle(fresh).tampered] == [("arch.json",
                                                                            "not_a_file")]


def test_require_intact_raises_tamper_error_naming_every_file(fresh):
    (fresh / "arch.json").write_text("{}")
    (fresh / "parity.json").unlink()
    with pytest.raises(TamperError) as info:
        require_intact(fresh)
    assert "arch.json (modified)" in str(info.value)
    assert "parity.json (missing)" in str(info.value)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("content, message", [
    (None, "no manifest.json"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"schema": "something-else"}', "schema"),
])
def test_a_corrupt_or_missing_manifest_is_a_bundle_error(fresh, content, message):
    path = fresh / "manifest.json"
    path.unlink()
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BundleError, match=message) as info:
        verify_bundle(fresh)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), "lacks field 'files'"),
    (lambda m: m.update(schema_version=99), "upgrade subnet-export"),
    (lambda m: m.update(surprise=1), "unknown field"),
    (lambda m: m.update(parity="maybe"), "'parity'"),
    (lambda m: m["files"].update({"../../etc/passwd": {"size": 1, "sha256": "0"}}), "unsafe path"),
    (lambda m: m.update(parameter_count="many"), "wrong type"),
    (lambda m: m.update(tolerance={"atol": -1.0, "rtol": 0.0}), "'tolerance'"),
])
def test_a_malformed_manifest_is_a_bundle_error(fresh, edit, message):
    path = fresh / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        check_files(fresh)


def test_missing_bundle_directory_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="not a directory"):
        verify_bundle(tmp_path / "nowhere")


def test_outputs_off_by_more_than_the_tolerance_fail(tmp_path):
    # the model computes something else than the recorded reference and its oracle
    samples = gemm_samples()
    samples["output:y"] = samples["output:y"] + np.float32(0.01)
    samples["oracle:y"] = samples["oracle:y"] + 0.01
    out = tmp_path / "b"
    write_bundle(out, model_path=gemm_model(tmp_path / "m.onnx"), arch={}, parity=PARITY_OK,
                 samples=samples)
    report = verify_bundle(out)
    assert report.exit_code == 1 and not report.tampered
    assert [n.output for n in report.noise if not n.passed] == ["y"]
    assert report.noise[0].ratio > 1000
    assert report.samples[0].max_abs_error == pytest.approx(0.01, rel=1e-3)
    assert "FAIL" in report.format_table()
    # an explicit elementwise tolerance replaces the manifest's rule
    strict = verify_bundle(out, atol=1e-3)
    assert [(s.case, s.output) for s in strict.samples if not s.passed] == [(0, "y")]
    assert strict.noise == [] and not strict.passed
    assert verify_bundle(out, atol=0.02, rtol=0.0).passed  # a looser tolerance, given explicitly
    assert not verify_bundle(out, noise_factor=100.0).passed


def test_a_bundle_with_failed_parity_fails_verify_unless_allowed(tmp_path):
    out, _ = make_bundle(tmp_path, parity={**PARITY_OK, "passed": False})
    report = verify_bundle(out)
    assert report.exit_code == 1 and not report.tampered
    assert all(s.passed for s in report.samples)
    assert verify_bundle(out, require_parity=False).exit_code == 0


def test_an_unavailable_provider_is_an_input_error(fresh):
    from subnet_export.errors import InputError

    with pytest.raises(InputError, match="NoSuchExecutionProvider"):
        verify_bundle(fresh, providers=["NoSuchExecutionProvider"])


_NO_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError, as on an edge box
    import subnet_export.bundle.verify as v
    report = v.verify_bundle(sys.argv[1])
    assert report.passed, report.format_table()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m])
    assert not loaded, loaded
    assert not [m for m in sys.modules if m.startswith("subnet_export.supernet")]
    print("ok", report.exit_code)
""")


def test_verify_runs_without_torch(fresh):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(fresh)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok 0"


def test_module_entry_point_exit_codes(fresh):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "subnet_export.bundle.verify", str(fresh), "--json"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["passed"] is True
    (fresh / "arch.json").write_text("{}")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and json.loads(bad.stdout)["files"][0]["status"] == "modified"
    (fresh / "manifest.json").write_text("{")
    corrupt = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert corrupt.returncode == 2 and "not valid JSON" in corrupt.stderr


def test_noise_rule_without_oracles_is_a_bundle_error(tmp_path):
    samples = {k: v for k, v in gemm_samples().items() if not k.startswith("oracle")}
    out = tmp_path / "b"
    write_bundle(out, model_path=gemm_model(tmp_path / "m.onnx"), arch={}, parity=PARITY_OK,
                 samples=samples, extra={"tolerance": {"atol": 1e-5, "rtol": 1e-4}})
    assert verify_bundle(out).passed  # the manifest's elementwise rule needs no oracle
    with pytest.raises(BundleError, match="no oracle outputs"):
        verify_bundle(out, noise_factor=4.0)


def test_a_reference_far_from_its_oracle_fails(tmp_path):
    # 0.01 between the recorded reference and its float64 oracle is no float32 rounding: the
    # noise floor it would give could hide anything, so the output fails and says why
    samples = gemm_samples()
    samples["output:y"] = samples["output:y"] + np.float32(0.01)
    out = tmp_path / "b"
    write_bundle(out, model_path=gemm_model(tmp_path / "m.onnx"), arch={}, parity=PARITY_OK,
                 samples=samples)
    report = verify_bundle(out)
    assert not report.passed and not report.noise[0].passed
    assert report.noise[0].ratio < 1  # the candidate itself is as close to the oracle as ever
