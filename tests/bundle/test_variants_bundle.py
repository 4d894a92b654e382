"""Edge variants through the pipeline, the bundle, ``verify`` and the CLI (docs/edge.md)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from subnet_export.bundle.verify import verify_bundle
from subnet_export.cli import main
from subnet_export.variants.build import VariantOptions
from subnet_export.variants.stats import VariantLimits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCH = {"width": 12, "depth": 2, "block.k": 3, "op": "conv"}
# robust bounds for a random-weight net judged on random inputs (the defaults assume real data)
LIMITS = {"fp16": VariantLimits(snr_db_min=30.0), "int8": VariantLimits(snr_db_min=10.0)}


def _tiny():
    sys.path.insert(0, str(FIXTURES))
    try:
        import tiny_space
    finally:
        sys.path.remove(str(FIXTURES))
    return tiny_space.supernet()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from subnet_export.pipeline import export_subnet

    net = _tiny()
    out = tmp_path_factory.mktemp("variants") / "bundle"
    run = export_subnet(net, out, input_shapes=[net.input_shape], arch=ARCH, batch=2,
                        providers=["CPUExecutionProvider"],
                        variants=VariantOptions(limits=LIMITS, ort_format=True,
                                                sensitivity="never"))
    return out, run


def test_bundle_holds_hashed_variants_and_ort_files(bundle):
    out, run = bundle
    assert run.exit_code == 0, [v.failures for v in run.variants]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 3
    for name in ("model.fp16.onnx", "model.int8.onnx", "variants.npz", "model.ort",
                 "model.fp16.ort", "model.int8.ort", "required_operators.config"):
        assert name in manifest["files"], name
    assert set(manifest["variants"]) == {"fp16", "int8"}
    int8 = manifest["variants"]["int8"]
    assert int8["passed"] and int8["judged_set"] == "random"
    assert int8["limits"]["snr_db_min"] == 10.0 and int8["settings"]["reduce_range"] is True
    assert manifest["ort"]["files"]["model.onnx"] == "model.ort"
    assert manifest["files"]["model.int8.onnx"]["size"] < manifest["files"]["model.onnx"]["size"]
    config = (out / "required_operators.config").read_text()
    assert "ai.onnx;" in config and str(out.parent) not in config


def test_verify_reruns_variants_and_the_ort_model(bundle):
    report = verify_bundle(bundle[0])
    assert report.passed, report.format_table()
    files = {c.file for c in report.variants}
    assert files == {"model.fp16.onnx", "model.fp16.ort", "model.int8.onnx", "model.int8.ort"}
    assert any(s.output.startswith("model.ort:") for s in report.samples)
    assert "model.int8.ort" in report.format_table()


def test_verify_judges_by_the_recorded_limits(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["variants"]["int8"]["limits"]["snr_db_min"] = 500.0
    from subnet_export.bundle.manifest import BundleManifest

    m = BundleManifest.from_json(manifest)
    (copy / "manifest.json").write_text(m.dumps())
    report = verify_bundle(copy)
    assert not report.passed
    assert [c.file for c in report.variants if not c.passed] == ["model.int8.onnx",
                                                                  "model.int8.ort"]


def test_a_tampered_variant_is_named(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle[0], copy)
    with open(copy / "model.int8.onnx", "ab") as f:
        f.write(b"\0")
    report = verify_bundle(copy)
    assert [f.path for f in report.tampered] == ["model.int8.onnx"]


def test_a_failed_variant_fails_the_run(tmp_path):
    from subnet_export.pipeline import export_subnet

    net = _tiny()
    limits = {"int8": VariantLimits(snr_db_min=500.0)}
    run = export_subnet(net, tmp_path / "b", input_shapes=[net.input_shape], arch=ARCH,
                        batch=2, providers=["CPUExecutionProvider"],
                        variants=VariantOptions(kinds=("int8",), limits=limits))
    assert run.report.passed and run.exit_code == 1
    (v,) = run.variants
    assert not v.passed and any("snr_db" in f for f in v.failures)
    assert v.sensitivity, "a failing variant gets its per-layer sensitivity"
    assert {r.module for r in v.sensitivity} >= {"stem", "head"}
    assert run.summary()["passed"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["--int8-exclude", "stem"], "add --variants"),
    (["--variants", "int4"], "int4"),
    (["--variants", "int8", "--variant-limit", "int8.snr=3"], "int8.snr=3"),
])
def test_cli_refuses_bad_variant_options(tmp_path, capsys, args, message):
    code = main(["onnx", f"{FIXTURES}/tiny_space.py:supernet", "--out", str(tmp_path / "b"),
                 "--input-shape", "1x3x12x12", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "b").exists()


def test_cli_writes_and_verifies_variants(tmp_path, capsys):
    out = tmp_path / "b"
    code = main(["onnx", f"{FIXTURES}/tiny_space.py:supernet", "--out", str(out),
                 "--input-shape", "1x3x12x12", "--variants", "int8", "--ort-format",
                 "--variant-limit", "int8.snr_db_min=10", "--variant-limit",
                 "int8.top1_agreement_min=none", "--variant-limit", "int8.cosine_min=none",
                 "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["variants"]["int8"]["passed"] is True
    assert (out / "model.int8.onnx").is_file() and (out / "model.int8.ort").is_file()
    assert main(["verify", str(out)]) == 0
    assert "model.int8.ort" in capsys.readouterr().out


def _gate(bundle_dir, variants, **kw):
    from subnet_export.bundle.budget import Budget
    from subnet_export.bundle.gate import gate

    return gate(bundle_dir, Budget.from_dict({"variants": variants}), **kw)


def _recorded(bundle_dir, kind, stat):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    return [s[stat] for s in manifest["variants"][kind]["stats"]]


def test_a_variant_budget_the_bundle_meets_passes(bundle):
    out, _ = bundle
    snr = min(_recorded(out, "int8", "snr_db"))
    report = _gate(out, {
        "int8": {"max_size_ratio": 1.0, "snr_db_min": snr - 1.0, "cosine_min": 0.5,
                 "top1_agreement_min": 0.5, "latency": {"max_ratio": 1e6, "runs": 6}},
        "fp16": {"max_file_bytes": 10**9, "max_abs_error_max": 1.0},
    })
    assert report.passed, report.format_table()
    names = {c.name for c in report.checks}
    assert names == {"parity", "variants.int8.passed", "variants.int8.max_size_ratio",
                     "variants.int8.snr_db_min", "variants.int8.cosine_min",
                     "variants.int8.top1_agreement_min", "variants.int8.latency_ratio",
                     "variants.fp16.passed", "variants.fp16.max_file_bytes",
                     "variants.fp16.max_abs_error_max"}
    lat = report.variant_latency["int8"]
    assert 0 < lat.ratio < float("inf") and lat.runs == 6
    assert "latency int8:" in report.format_table()
    assert json.loads(json.dumps(report.to_json()))["variant_latency"]["int8"]["runs"] == 6


def test_each_variant_violation_is_measured_and_named(bundle):
    out, _ = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    size, float32 = (manifest["files"][f]["size"] for f in ("model.int8.onnx", "model.onnx"))
    report = _gate(out, {"int8": {"max_size_ratio": 0.01, "snr_db_min": 500.0,
                                  "max_abs_error_max": 0.0, "max_file_bytes": 1},
                         "fp16": {"top5_agreement_min": 0.5}})
    failed = {c.name: c for c in report.violations}
    assert set(failed) == {"variants.int8.max_size_ratio", "variants.int8.snr_db_min",
                           "variants.int8.max_abs_error_max", "variants.int8.max_file_bytes",
                           "variants.fp16.top5_agreement_min"}
    assert failed["variants.int8.max_size_ratio"].measured == pytest.approx(size / float32)
    assert failed["variants.int8.max_file_bytes"].measured == size
    assert failed["variants.int8.snr_db_min"].measured == min(_recorded(out, "int8", "snr_db"))
    assert failed["variants.int8.max_abs_error_max"].measured == max(
        _recorded(out, "int8", "max_abs_error"))
    # the tiny net has under six classes: no top-5 statistic, so a top-5 budget cannot pass
    assert failed["variants.fp16.top5_agreement_min"].measured is None
    assert "top5_agreement" in failed["variants.fp16.top5_agreement_min"].message
    assert report.exit_code == 1 and "variants.int8.snr_db_min" in report.format_table()


def _rewritten(bundle_dir, tmp_path, edit):
    from subnet_export.bundle.manifest import BundleManifest

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    data = json.loads((copy / "manifest.json").read_text())
    edit(data)
    (copy / "manifest.json").write_text(BundleManifest.from_json(data).dumps())
    return copy


def test_a_failed_variant_fails_its_gate_unless_allowed(bundle, tmp_path):
    def fail_int8(data):
        data["variants"]["int8"].update(passed=False, failures=["y: snr_db 9 < 10"])

    copy = _rewritten(bundle[0], tmp_path, fail_int8)
    (check,) = _gate(copy, {"int8": {}}).violations
    assert check.name == "variants.int8.passed" and "snr_db 9 < 10" in check.message
    assert _gate(copy, {"int8": {"require_passed": False}}).passed


def test_a_budget_naming_a_missing_variant_is_a_violation(bundle, tmp_path):
    def drop_fp16(data):
        del data["variants"]["fp16"]

    copy = _rewritten(bundle[0], tmp_path, drop_fp16)
    (check,) = _gate(copy, {"fp16": {"max_size_ratio": 1.0}, "int8": {}}).violations
    assert check.name == "variants.fp16" and "--variants fp16" in check.message


def test_cli_gate_reports_variant_violations(bundle, tmp_path, capsys):
    budget = tmp_path / "budget.toml"
    budget.write_text("[variants.int8]\nmax_size_ratio = 0.01\n")
    code = main(["gate", str(bundle[0]), "--budget", str(budget)])
    out = capsys.readouterr().out
    assert code == 1 and "variants.int8.max_size_ratio" in out and "FAIL" in out


def _int8_with_data(tmp_path, data: str, count: int, seed: int) -> dict:
    """Export the tiny net with an INT8 variant and ``count`` random samples given as ``data``
    (``samples`` or ``calib_data``); the INT8 entry of its manifest."""
    from subnet_export.pipeline import export_subnet

    net, path = _tiny(), tmp_path / f"{data}.npz"
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.standard_normal((count, 3, 12, 12), dtype=np.float32))
    run = export_subnet(net, tmp_path / "b", input_shapes=[net.input_shape], arch=ARCH, batch=2,
                        providers=["CPUExecutionProvider"], **{data: path},
                        variants=VariantOptions(kinds=("int8",), limits=LIMITS,
                                                sensitivity="never"))
    assert run.exit_code == 0, [v.failures for v in run.variants]
    return json.loads((tmp_path / "b" / "manifest.json").read_text())["variants"]["int8"]


def test_without_calibration_data_int8_is_judged_on_the_samples(tmp_path):
    entry = _int8_with_data(tmp_path, "samples", 6, seed=1)
    assert entry["judged_set"] == "samples" and entry["stats"][0]["samples"] == 6


def test_int8_is_judged_on_calibration_data_it_was_not_calibrated_on(tmp_path):
    entry = _int8_with_data(tmp_path, "calib_data", 160, seed=0)
    assert entry["judged_set"] == "held-out"
    assert entry["stats"][0]["samples"] == 40  # a quarter of 160
    with np.load(tmp_path / "b" / "variants.npz") as judged:
        assert next(v for k, v in judged.items() if k.startswith("input:")).shape[0] == 40


def test_a_model_with_external_data_gets_its_variants_with_external_data(tmp_path, monkeypatch):
    from subnet_export.pipeline import export_subnet

    # a model over 2 GiB keeps its weights in model.onnx.data: the same route, made small
    monkeypatch.setattr("subnet_export.export.exporter._EXTERNAL_THRESHOLD", 0)
    net, out = _tiny(), tmp_path / "b"
    run = export_subnet(net, out, input_shapes=[net.input_shape], arch=ARCH, batch=2,
                        providers=["CPUExecutionProvider"],
                        variants=VariantOptions(kinds=("int8",), limits=LIMITS,
                                                sensitivity="never"))
    assert run.exit_code == 0, [v.failures for v in run.variants]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["external_data"] == ["model.onnx.data"]
    assert manifest["variants"]["int8"]["external_data"] == ["model.int8.onnx.data"]
    files = manifest["files"]
    assert {"model.int8.onnx", "model.int8.onnx.data"} <= set(files)
    assert verify_bundle(out).passed
    (check,) = _gate(out, {"int8": {"max_size_ratio": 1e-6}}).violations
    sizes = [files[f]["size"] for f in ("model.int8.onnx", "model.int8.onnx.data",
                                        "model.onnx", "model.onnx.data")]
    assert check.measured == pytest.approx((sizes[0] + sizes[1]) / (sizes[2] + sizes[3]))
    with open(out / "model.int8.onnx.data", "r+b") as f:
        f.write(b"\x7f")
    assert [c.path for c in verify_bundle(out).tampered] == ["model.int8.onnx.data"]
