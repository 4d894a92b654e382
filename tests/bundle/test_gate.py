"""gate and Budget: every violation type, a passing budget, latency ratio, budget file errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from _onnx_fixtures import PARITY_OK, make_bundle
from onnx import TensorProto, helper

from subnet_export.bundle.budget import Budget, LatencyBudget, VariantBudget
from subnet_export.bundle.gate import gate
from subnet_export.bundle.integrity import load_manifest
from subnet_export.bundle.latency import bundle_feed
from subnet_export.errors import InputError, TamperError
from subnet_export.export.graph import op_types
from subnet_export.parity.record import RecordedParity

REPO = Path(__file__).resolve().parents[2]

# The tiny Gemm bundle: 15 parameters, opset 17, ops Gemm/Relu/Identity, max abs error 2.5e-7.
PASSING = """
require_parity = true
max_abs_error = 1e-6
max_params = 15
max_file_bytes = 100_000
max_opset = 17
allowed_ops = ["Gemm", "Relu", "Identity"]
"""


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budget.toml"
    path.write_text(text)
    return path


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path)[0]


def test_a_budget_the_bundle_meets_passes(tmp_path, bundle):
    report = gate(bundle, Budget.from_toml(_toml(tmp_path, PASSING)))
    assert report.passed and report.exit_code == 0 and report.violations == []
    assert [c.name for c in report.checks] == [
        "parity", "max_abs_error", "max_params", "max_file_bytes", "max_opset", "allowed_ops"]
    measured = {c.name: c.measured for c in report.checks}
    assert measured["max_params"] == 15 and measured["max_opset"] == 17
    assert measured["max_abs_error"] == 2.5e-7  # read back exactly from parity.json
    assert json.loads(json.dumps(report.to_json()))["violations"] == []
    assert "gate: PASSED" in report.format_table()


@pytest.mark.parametrize("budget, name, measured", [
    ({"max_abs_error": 1e-8}, "max_abs_error", 2.5e-7),
    ({"max_params": 14}, "max_params", 15),
    ({"max_file_bytes": 10}, "max_file_bytes", None),
    ({"max_opset": 13}, "max_opset", 17),
    ({"allowed_ops": ["Gemm"]}, "allowed_ops", ["Identity", "Relu"]),
])
def test_each_violation_is_detected(bundle, budget, name, measured):
    report = gate(bundle, Budget.from_dict(budget))
    assert report.exit_code == 1
    assert [v.name for v in report.violations] == [name]
    if measured is not None:
        assert report.violations[0].measured == measured
    assert "FAIL" in report.format_table()


def test_every_violation_is_listed_not_just_the_first(tmp_path):
    bundle, manifest = make_bundle(tmp_path, parity={**PARITY_OK, "passed": False})
    budget = Budget.from_dict({"max_abs_error": 1e-9, "max_params": 1, "max_file_bytes": 1,
                               "max_opset": 1, "allowed_ops": ["Conv"]})
    report = gate(bundle, budget)
    assert sorted(v.name for v in report.violations) == sorted(
        ["parity", "max_abs_error", "max_params", "max_file_bytes", "max_opset", "allowed_ops"])
    size = next(v for v in report.violations if v.name == "max_file_bytes").measured
    assert size == manifest.files["model.onnx"]["size"]


def test_file_size_counts_external_data(tmp_path):
    bundle, manifest = make_bundle(tmp_path, external=True)
    report = gate(bundle, Budget.from_dict({"max_file_bytes": 10**6}))
    total = manifest.files["model.onnx"]["size"] + manifest.files["net.onnx.data"]["size"]
    assert report.checks[-1].measured == total


def test_parity_without_an_error_figure_fails_the_error_budget(tmp_path):
    bundle, _ = make_bundle(tmp_path, parity={"passed": True})
    report = gate(bundle, Budget.from_dict({"max_abs_error": 1.0}))
    assert [v.name for v in report.violations] == ["max_abs_error"]
    assert "records no max_abs_error" in report.violations[0].message


def test_recorded_max_abs_error_is_the_worst_output_comparison():
    def worst(parity):
        return RecordedParity.from_json({"passed": True, **parity}).max_abs_error

    parity = {"backends": [{"comparisons": [{"max_abs_error": 1e-6, "noise": 5.0}]},
                           {"comparisons": [{"max_abs_error": "inf"}]}]}
    assert worst(parity) == math.inf
    assert worst({"backends": [{"comparisons": [{"max_abs_error": "nan"}]}]}) == math.inf
    assert worst({}) is None
    assert RecordedParity.from_json(PARITY_OK).max_abs_error == 2.5e-7
    # a divergence names one module's error, not an output's: it is not the figure gated
    located = {"backends": [{"comparisons": [{"max_abs_error": 1e-6}]}],
               "divergence": {"module": "blocks.1", "max_abs_error": 3.0}}
    assert worst(located) == 1e-6
    with pytest.raises(ValueError, match="boolean 'passed'"):
        RecordedParity.from_json({"backends": []})


def test_a_tampered_bundle_never_passes_a_gate(bundle):
    (bundle / "parity.json").write_text(json.dumps({**PARITY_OK, "passed": True}))
    with pytest.raises(TamperError, match="parity.json"):
        gate(bundle, Budget())


def test_latency_against_a_baseline_is_a_finite_positive_ratio(tmp_path):
    small, _ = make_bundle(tmp_path, "small")
    big, _ = make_bundle(tmp_path, "big", hidden=64)
    budget = Budget.from_dict({"latency": {"max_ratio": 1e9, "batch_size": 8, "runs": 7,
                                           "warmup": 1}})
    report = gate(big, budget, baseline=small)
    lat = report.latency
    assert lat is not None and lat.runs == 7 and lat.batch_size == 8
    assert math.isfinite(lat.ratio) and lat.ratio > 0
    assert lat.ratio == pytest.approx(lat.median_ms / lat.baseline_median_ms, rel=1e-12)
    check = report.checks[-1]
    assert check.name == "latency_ratio" and check.measured == lat.ratio
    assert check.passed == (lat.ratio <= 1e9)
    assert json.loads(json.dumps(report.to_json()))["latency"]["runs"] == 7


def test_a_latency_budget_without_a_baseline_is_a_violation(bundle):
    report = gate(bundle, Budget.from_dict({"latency": {"max_ratio": 1.1}}))
    assert [v.name for v in report.violations] == ["latency_ratio"]
    assert "baseline" in report.violations[0].message


def test_a_tampered_baseline_is_refused(tmp_path):
    bundle, _ = make_bundle(tmp_path, "a")
    baseline, _ = make_bundle(tmp_path, "b")
    (baseline / "extra.bin").write_bytes(b"x")
    with pytest.raises(TamperError, match="extra.bin"):
        gate(bundle, Budget.from_dict({"latency": {"max_ratio": 2.0}}), baseline=baseline)


def test_latency_feed_resizes_the_dynamic_batch(bundle):
    manifest, _ = load_manifest(bundle)
    feed = bundle_feed(bundle, manifest, batch_size=7)
    assert feed["x"].shape == (7, 4) and feed["x"].dtype == np.float32
    np.testing.assert_array_equal(feed["x"][2], feed["x"][0])  # rows cycle through the sample


def test_budget_file_round_trip(tmp_path):
    budget = Budget.from_toml(_toml(tmp_path, PASSING + """
[latency]
max_ratio = 1.25
batch_size = 4
runs = 30
warmup = 3
threads = 2
"""))
    assert budget.max_abs_error == 1e-6 and budget.max_params == 15
    assert budget.allowed_ops == ("Gemm", "Relu", "Identity")
    assert budget.latency == LatencyBudget(max_ratio=1.25, batch_size=4, runs=30, warmup=3,
                                           threads=2)


def test_variant_budget_round_trip(tmp_path):
    budget = Budget.from_toml(_toml(tmp_path, """
[variants.int8]
max_size_ratio = 0.3
top1_agreement_min = 0.99
[variants.int8.latency]
max_ratio = 0.9
batch_size = 8
[variants.fp16]
require_passed = false
"""))
    int8 = budget.variants["int8"]
    assert int8 == VariantBudget(max_size_ratio=0.3, top1_agreement_min=0.99,
                                 latency=LatencyBudget(max_ratio=0.9, batch_size=8))
    assert budget.variants["fp16"] == VariantBudget(require_passed=False)


def test_a_variant_budget_on_a_bundle_without_variants_is_a_violation(bundle):
    report = gate(bundle, Budget.from_dict({"variants": {"int8": {"snr_db_min": 20}}}))
    assert [c.name for c in report.violations] == ["variants.int8"]
    assert "--variants int8" in report.violations[0].message


def test_the_documented_example_budget_parses():
    text = (REPO / "docs" / "gates.md").read_text()
    example = text.split("```toml", 1)[1].split("```", 1)[0]
    budget = Budget.from_dict(__import__("tomllib").loads(example), source="docs/gates.md")
    assert budget.latency is not None and budget.allowed_ops
    assert budget.variants["int8"].latency is not None


@pytest.mark.parametrize("text, message", [
    ("max_parms = 10\n", "unknown key 'max_parms'"),
    ("[latency]\nmax_ratio = 1.1\nrepeats = 5\n", "unknown key 'latency.repeats'"),
    ("[latency]\nruns = 5\n", "needs 'max_ratio'"),
    ("max_params = \"ten\"\n", "'max_params' must be int"),
    ("max_params = true\n", "'max_params' must be int"),
    ("max_opset = 0\n", "'max_opset' must be > 0"),
    ("max_abs_error = -1.0\n", "'max_abs_error' must be >= 0"),
    ("max_abs_error = nan\n", "'max_abs_error' must be >= 0"),
    ("allowed_ops = [\"Conv\", 3]\n", "list of operator names"),
    ("max_params = = 3\n", "not valid TOML"),
    ("variants = 3\n", "'variants' must be dict"),
    ("[variants.int4]\n", r"unknown variant kind \[variants.int4\]"),
    ("[variants]\nint8 = 3\n", "'variants.int8' must be a table"),
    ("[variants.int8]\nmax_size = 1\n", "unknown key 'variants.int8.max_size'"),
    ("[variants.int8]\ntop1_agreement_min = 1.5\n", "must be <= 1"),
    ("[variants.int8]\nmax_size_ratio = 0\n", "'variants.int8.max_size_ratio' must be > 0"),
    ("[variants.int8]\nrequire_passed = 1\n", "'variants.int8.require_passed' must be bool"),
    ("[variants.int8.latency]\nruns = 3\n", r"\[variants.int8.latency\] needs 'max_ratio'"),
])
def test_bad_budget_files_are_input_errors_naming_the_key(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        Budget.from_toml(_toml(tmp_path, text))


def test_missing_budget_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read budget file"):
        Budget.from_toml(tmp_path / "nope.toml")


def test_op_types_see_subgraphs_functions_and_domains():
    then = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    other = helper.make_graph([helper.make_node("Tanh", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1])])
    fn = helper.make_function("local", "Swish", ["a"], ["b"],
                              [helper.make_node("Sigmoid", ["a"], ["s"]),
                               helper.make_node("Mul", ["a", "s"], ["b"])],
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["i"], then_branch=then, else_branch=other),
         helper.make_node("Swish", ["i"], ["w"], domain="local"),
         helper.make_node("FusedMatMul", ["w", "w"], ["y"], domain="com.microsoft")],
        "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("local", 1),
        helper.make_opsetid("com.microsoft", 1)])
    assert op_types(model) == ["If", "Mul", "Sigmoid", "Tanh", "com.microsoft::FusedMatMul"]
    assert isinstance(model, onnx.ModelProto)
