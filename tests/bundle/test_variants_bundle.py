"""Edge variants through the pipeline, the bundle, ``verify`` and the CLI (docs/edge.md)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

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
