"""write_bundle: contents, manifest, determinism, atomic replacement, failures mid-write."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from _onnx_fixtures import PARITY_OK, conv_model, gemm_model, gemm_samples, make_bundle

from subnet_export.bundle import atomic as _atomic
from subnet_export.bundle import write as bundle
from subnet_export.bundle.hashing import digest_file
from subnet_export.bundle.layout import DEFAULT_TOLERANCE
from subnet_export.bundle.manifest import BundleManifest
from subnet_export.bundle.verify import verify_bundle
from subnet_export.bundle.write import write_bundle
from subnet_export.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _hidden_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_bundle_holds_every_file_and_a_complete_manifest(tmp_path):
    out, manifest = make_bundle(tmp_path)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["arch.json", "manifest.json", "model.onnx", "parity.json", "samples.npz"]
    assert manifest.inputs == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert manifest.outputs == [{"name": "y", "dtype": "float32", "shape": ["batch", 3]}]
    assert manifest.opset == 17 and manifest.opset_imports == {"": 17}
    assert manifest.parameter_count == 4 * 3 + 3  # computed from the initializers
    assert manifest.parity == "passed" and manifest.sample_cases == 2
    assert manifest.source_checkpoint_sha256 == "ab" * 32
    assert set(manifest.versions) == {"subnet-export", "torch", "onnx", "onnxruntime", "numpy"}
    assert manifest.versions["onnx"] == onnx.__version__
    for rel, entry in manifest.files.items():
        assert digest_file(out / rel).to_json() == entry, rel
    on_disk = json.loads((out / "manifest.json").read_text())
    assert BundleManifest.from_json(on_disk) == manifest
    assert on_disk["manifest_sha256"] == manifest.content_sha256()
    with np.load(out / "samples.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["input.1:x", "input:x", "oracle.1:y", "oracle:y",
                                     "output.1:y", "output:y"]
        np.testing.assert_array_equal(npz["input.1:x"], gemm_samples()["input.1:x"])


def test_external_data_is_copied_and_hashed(tmp_path):
    out, manifest = make_bundle(tmp_path, external=True)
    assert manifest.external_data == ["net.onnx.data"]
    source = tmp_path / "src-bundle" / "net.onnx.data"
    assert (out / "net.onnx.data").read_bytes() == source.read_bytes()
    assert manifest.files["net.onnx.data"] == digest_file(out / "net.onnx.data").to_json()
    assert manifest.files["net.onnx.data"]["size"] == 4 * (4 * 3 + 3)
    assert verify_bundle(out).passed  # onnxruntime resolves the data file inside the bundle


def test_same_inputs_give_byte_identical_bundles(tmp_path):
    model = gemm_model(tmp_path / "net.onnx", external=True)
    kwargs = dict(model_path=model, arch={"w": 3, "ops": ["a", "b"]}, parity=PARITY_OK,
                  samples=gemm_samples(), extra={"exporter": "dynamo", "calibration": None})
    write_bundle(tmp_path / "a", **kwargs)
    write_bundle(tmp_path / "b", **kwargs)
    first, second = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert sorted(first) == sorted(second) and len(first) == 6
    for rel in first:
        assert first[rel] == second[rel], rel


def test_extra_fills_fields_and_keeps_the_rest(tmp_path):
    _, manifest = make_bundle(tmp_path, extra={"parameter_count": 99, "exporter": "dynamo",
                                               "tolerance": {"atol": 0.5, "rtol": 0.25}})
    assert manifest.parameter_count == 99
    assert manifest.tolerance == {"atol": 0.5, "rtol": 0.25, "noise_factor": None}
    assert manifest.extra == {"exporter": "dynamo"}


def test_tolerance_comes_from_the_parity_report_or_the_default(tmp_path):
    _, from_parity = make_bundle(tmp_path, "a")
    # the ort-cpu backend's
    assert from_parity.tolerance == {"atol": None, "rtol": None, "noise_factor": 4.0}
    _, default = make_bundle(tmp_path, "b", parity={"passed": True})
    assert default.tolerance == DEFAULT_TOLERANCE


def test_failed_parity_is_recorded_not_refused(tmp_path):
    _, manifest = make_bundle(tmp_path, parity={**PARITY_OK, "passed": False})
    assert manifest.parity == "failed" and not manifest.passed


def test_conv_model_with_4d_dynamic_input(tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    x = np.ones((2, 1, 5, 5), np.float32)
    manifest = write_bundle(tmp_path / "b", model_path=model, arch={}, parity={"passed": True},
                            samples={"input:x": x, "output:y": np.zeros_like(x)},
                            extra={"tolerance": {"atol": 1e-5}})
    assert manifest.tolerance == {"atol": 1e-5, "rtol": None, "noise_factor": None}
    assert manifest.inputs[0]["shape"] == ["N", 1, 5, 5]
    assert manifest.parameter_count == 9


def test_existing_out_without_force_is_refused(tmp_path):
    out, _ = make_bundle(tmp_path)
    before = _snapshot(out)
    with pytest.raises(InputError, match="--force"):
        make_bundle(tmp_path, out_features=5)
    assert _snapshot(out) == before


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_force_replaces_the_previous_bundle(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    out, old = make_bundle(tmp_path)
    _, new = make_bundle(tmp_path, out_features=5, force=True)
    assert new.outputs[0]["shape"] == ["batch", 5]
    assert BundleManifest.loads((out / "manifest.json").read_bytes()) == new
    assert verify_bundle(out).passed
    assert _hidden_leftovers(tmp_path) == []


def test_force_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path):
    precious = tmp_path / "bundle"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="not a bundle"):
        make_bundle(tmp_path, force=True)
    assert (precious / "thesis.tex").read_text() == "years of work"


def _fail_writing_samples(monkeypatch, exc: BaseException) -> None:
    def boom(path, arrays):
        Path(path).write_bytes(b"PK\x03\x04 half")  # something half-written first
        raise exc

    monkeypatch.setattr(bundle, "write_samples", boom)


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    _fail_writing_samples(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(InputError, match="No space left"):
        make_bundle(tmp_path)
    assert not (tmp_path / "bundle").exists()
    assert _hidden_leftovers(tmp_path) == []


def test_unexpected_error_mid_write_also_cleans_up(tmp_path, monkeypatch):
    _fail_writing_samples(monkeypatch, RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        make_bundle(tmp_path)
    assert not (tmp_path / "bundle").exists()
    assert _hidden_leftovers(tmp_path) == []


def test_failure_mid_write_keeps_the_previous_bundle(tmp_path, monkeypatch):
    out, _ = make_bundle(tmp_path)
    before = _snapshot(out)
    _fail_writing_samples(monkeypatch, OSError(errno.EIO, "I/O error"))
    with pytest.raises(InputError):
        make_bundle(tmp_path, out_features=5, force=True)
    assert _snapshot(out) == before
    assert _hidden_leftovers(tmp_path) == []


def test_failure_at_the_swap_keeps_the_previous_bundle(tmp_path, monkeypatch):
    out, _ = make_bundle(tmp_path)
    before = _snapshot(out)

    def swap_fails(a, b):
        raise OSError(errno.EIO, "I/O error", str(b))

    monkeypatch.setattr(_atomic, "_exchange", swap_fails)
    with pytest.raises(InputError):
        make_bundle(tmp_path, out_features=5, force=True)
    assert _snapshot(out) == before
    assert _hidden_leftovers(tmp_path) == []


def test_out_under_a_regular_file_is_a_clear_input_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(InputError, match="cannot write the bundle") as info:
        write_bundle(tmp_path / "file" / "bundle", model_path=gemm_model(tmp_path / "m.onnx"),
                     arch={}, parity=PARITY_OK, samples=gemm_samples())
    assert "file" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.onnx"]


def test_permission_denied_is_a_clear_input_error(tmp_path, monkeypatch):
    # Tests run as root, where chmod does not stop writes: simulate the denial instead.
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(_atomic.tempfile, "mkdtemp", denied)
    with pytest.raises(InputError, match="Permission denied"):
        make_bundle(tmp_path)
    assert not (tmp_path / "bundle").exists()


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from subnet_export.bundle import write as bundle
    from _onnx_fixtures import make_bundle

    def die(path, arrays):
        Path(path).write_bytes(b"PK half")
        os.kill(os.getpid(), signal.SIGKILL)

    bundle.write_samples = die
    make_bundle(Path(sys.argv[1]), out_features=5, force=True)
""")


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "replacing"])
def test_sigkill_mid_write_leaves_old_or_nothing_and_next_run_cleans_up(tmp_path, previous):
    before = _snapshot(make_bundle(tmp_path)[0]) if previous else None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path), str(REPO / "tests")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    stale = [n for n in _hidden_leftovers(tmp_path) if n.startswith(".bundle.partial-")]
    assert len(stale) == 1  # the killed run's work dir, under a name no reader uses
    if previous:
        assert _snapshot(tmp_path / "bundle") == before
    else:
        assert not (tmp_path / "bundle").exists()
    make_bundle(tmp_path, force=True)
    assert _hidden_leftovers(tmp_path) == []
    assert verify_bundle(tmp_path / "bundle").passed


def test_bad_inputs_are_input_errors(tmp_path):
    model = gemm_model(tmp_path / "m.onnx")
    good = dict(model_path=model, arch={}, parity=PARITY_OK, samples=gemm_samples())
    cases = [
        ({"model_path": tmp_path / "missing.onnx"}, "does not exist"),
        ({"samples": {"input:x": np.zeros((1, 4), np.float32)}}, "at least one input and one"),
        ({"samples": {"in:x": np.zeros(1)}}, "kind one of input, output, oracle"),
        ({"samples": {"input:x": np.zeros((1, 4), np.float32),
                      "output:y": np.zeros((1, 3), np.float32)}}, "needs an 'oracle:<name>'"),
        ({"samples": {**gemm_samples(), "oracle:y": np.zeros((9, 3))}}, "do not match"),
        ({"extra": {"tolerance": {"atol": 1e-5, "typo": 1}}}, "noise_factor"),
        ({"extra": {"tolerance": {"atol": -1.0}}}, "non-negative"),
        ({"samples": {"input:z": np.zeros((1, 4), np.float32), "output:y": np.zeros(1)}},
         "the model takes"),
        ({"samples": {"input:x": np.zeros((1, 4)), "output:y": np.zeros(1)}}, "float32"),
        ({"samples": {"input:x": np.zeros((1, 5), np.float32), "output:y": np.zeros(1)}},
         "shape"),
        ({"samples": {"input:x": np.zeros((1, 4), np.float32), "output:q": np.zeros(1)}},
         "lacks"),
        ({"parity": {"verdict": "ok"}}, "boolean 'passed'"),
        ({"arch": {"bad": object()}}, "not JSON"),
        ({"extra": {"parameter_count": -1}}, "non-negative"),
    ]
    for change, message in cases:
        with pytest.raises(InputError, match=message):
            write_bundle(tmp_path / "out", **{**good, **change})
    assert not (tmp_path / "out").exists()


def test_unsafe_external_data_location_is_refused(tmp_path):
    model = onnx.load(str(gemm_model(tmp_path / "m.onnx")))
    init = model.graph.initializer[0]
    init.data_location = onnx.TensorProto.EXTERNAL
    init.ClearField("raw_data")
    init.external_data.add(key="location", value="../../etc/passwd")
    onnx.save_model(model, str(tmp_path / "evil.onnx"))
    with pytest.raises(InputError, match="unsafe external data location"):
        write_bundle(tmp_path / "out", model_path=tmp_path / "evil.onnx", arch={},
                     parity=PARITY_OK, samples=gemm_samples())


def test_not_an_onnx_file_is_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\xff\x00 definitely not protobuf" * 10)
    with pytest.raises(InputError, match="not an ONNX model"):
        write_bundle(tmp_path / "out", model_path=tmp_path / "m.onnx", arch={},
                     parity=PARITY_OK, samples=gemm_samples())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_exchange_really_swaps_on_this_filesystem(tmp_path):
    # Guards the atomic --force path: if the exchange silently fell back, the window where
    # --out is absent would come back unnoticed.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "marker").write_text("a")
    (tmp_path / "b").mkdir()
    assert _atomic._exchange(tmp_path / "a", tmp_path / "b") is True
    assert (tmp_path / "b" / "marker").read_text() == "a"
    assert not (tmp_path / "a" / "marker").exists()


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from _onnx_fixtures import PARITY_OK, gemm_samples
    from subnet_export.bundle.write import write_bundle
    write_bundle(Path(sys.argv[2]), model_path=Path(sys.argv[1]), arch={"b": 1, "a": [2, 3]},
                 parity=PARITY_OK, samples=gemm_samples(), extra={"z": {"y": 1, "x": 2}})
""")


def test_two_processes_write_byte_identical_bundles(tmp_path):
    model = gemm_model(tmp_path / "net.onnx", external=True)
    for name, seed in (("a", "1"), ("b", "2")):  # different hash seeds, different set orders
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _WRITER, str(model), str(tmp_path / name),
                               str(REPO / "tests")], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
    first, second = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert len(first) == 6 and first == second


def test_fallback_swap_failing_halfway_restores_the_previous_bundle(tmp_path, monkeypatch):
    out, _ = make_bundle(tmp_path)
    before = _snapshot(out)
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def second_rename_fails(src, dst):
        if ".partial-" in str(src):
            raise OSError(errno.EIO, "I/O error", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(_atomic.os, "rename", second_rename_fails)
    with pytest.raises(InputError, match="I/O error"):
        make_bundle(tmp_path, out_features=5, force=True)
    assert _snapshot(out) == before
    assert _hidden_leftovers(tmp_path) == []
