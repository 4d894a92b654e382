"""inspect_bundle: the facts of a real bundle, read back without running it, and its errors.

That ``bundle.inspect`` imports no torch is checked by tests/test_layout.py, which covers every
module of ``subnet_export/bundle``.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from _onnx_fixtures import PARITY_OK, make_bundle
from onnx import TensorProto, helper, numpy_helper

from subnet_export.bundle.inspect import BundleInspection, inspect_bundle, op_histogram
from subnet_export.errors import BundleError
from subnet_export.export.graph import op_types

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCH = {"width": 12, "block.k": 5, "depth": 2, "op": "conv"}
SECTIONS = ["Model", "Arch", "Inputs/Outputs", "Operators", "Parity", "Provenance"]

PARITY_FAILED = {
    "passed": False, "reference": "supernet", "oracle": "supernet-float64",
    "backends": [
        {"name": "torch-cpu", "status": "passed",
         "tolerance": {"atol": None, "rtol": None, "noise_factor": 4.0},
         "comparisons": [{"output": "y", "max_abs_error": 0.0, "passed": True}]},
        {"name": "ort-cpu", "status": "failed", "reason": "y on random-b1: 2 NaN",
         "providers": ["CPUExecutionProvider"],
         "tolerance": {"atol": None, "rtol": None, "noise_factor": 4.0},
         "comparisons": [
             {"output": "y", "max_abs_error": "nan", "max_rel_error": 0.5, "passed": False},
             {"output": "y", "max_abs_error": 0.25, "max_rel_error": 2.0, "passed": True}],
         "noise": [{"output": "y", "ratio": "inf", "factor": 4.0, "passed": False}]},
    ],
    "divergence": {"module": "blocks.1.conv", "reason": "max abs error 0.3", "labels": ["k"]},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One bundle written by the real pipeline from the tiny space."""
    from subnet_export.pipeline import export_subnet

    sys.path.insert(0, str(FIXTURES))
    try:
        import tiny_space
    finally:
        sys.path.remove(str(FIXTURES))
    net = tiny_space.supernet()
    out = tmp_path_factory.mktemp("inspect") / "bundle"
    run = export_subnet(net, out, input_shapes=[net.input_shape], arch=ARCH, batch=2,
                        providers=["CPUExecutionProvider"])
    assert run.report.passed, run.report.format_table()
    return out, run


@pytest.fixture(scope="module")
def inspected(exported) -> BundleInspection:
    return inspect_bundle(exported[0])


@pytest.fixture(scope="module")
def onnx_model(exported) -> onnx.ModelProto:
    return onnx.load(str(exported[0] / "model.onnx"))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A torch-free Gemm bundle to copy and break."""
    return make_bundle(tmp_path_factory.mktemp("small"))[0]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_parameters_are_what_the_graph_holds(inspected, onnx_model, exported):
    inits = onnx_model.graph.initializer
    assert inspected.model["parameter_count"] == sum(math.prod(t.dims) for t in inits)
    assert inspected.model["initializer_bytes"] == sum(numpy_helper.to_array(t).nbytes
                                                       for t in inits)
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    assert inspected.model["manifest_parameter_count"] == manifest["parameter_count"]
    assert manifest["parameter_count"] == exported[1].parameter_count
    # the graph also carries the BatchNorm statistics, which are no torch parameters
    assert inspected.model["parameter_count"] > inspected.model["manifest_parameter_count"]
    assert inspected.model["unused_parameters"] == manifest["extra"]["unused_parameters"]


def test_model_file_and_opsets(inspected, onnx_model, exported):
    assert inspected.model["file"] == "model.onnx" and inspected.model["external_data"] == []
    assert inspected.model["file_bytes"] == (exported[0] / "model.onnx").stat().st_size
    assert inspected.model["ir_version"] == onnx_model.ir_version
    imports = {op.domain: op.version for op in onnx_model.opset_import}
    assert inspected.model["opset_imports"] == imports
    assert inspected.model["opset"] == imports[""]


def test_operator_histogram_counts_every_node(inspected, onnx_model):
    assert inspected.operators == Counter(n.op_type for n in onnx_model.graph.node)
    assert set(inspected.operators) == set(op_types(onnx_model))
    counts = list(inspected.operators.items())
    assert counts == sorted(counts, key=lambda kv: (-kv[1], kv[0]))


def test_io_signature_matches_the_graph(inspected, onnx_model):
    for got, vis in ((inspected.inputs, onnx_model.graph.input),
                     (inspected.outputs, onnx_model.graph.output)):
        assert [io["name"] for io in got] == [vi.name for vi in vis]
        for io, vi in zip(got, vis):
            tt = vi.type.tensor_type
            assert io["dtype"] == np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
            assert io["shape"] == [d.dim_param or d.dim_value for d in tt.shape.dim]
    assert inspected.inputs[0]["shape"][0] == "batch"  # a symbolic dim stays its name


def test_arch_and_verdict_are_the_bundles(inspected, exported):
    out = exported[0]
    assert dict(inspected.arch) == json.loads((out / "arch.json").read_text()) == ARCH
    parity = json.loads((out / "parity.json").read_text())
    assert inspected.passed is parity["passed"] is True and not inspected.failed
    assert [(b.name, b.status) for b in inspected.backends] == [
        (b["name"], b["status"]) for b in parity["backends"]]
    ort = next(b for b in parity["backends"] if b["name"] == "ort-cpu")
    got = next(b for b in inspected.backends if b.name == "ort-cpu")
    assert got.comparisons == len(ort["comparisons"]) and got.failed_comparisons == 0
    assert got.max_abs_error == max(c["max_abs_error"] for c in ort["comparisons"])
    assert got.noise_ratio == max(n["ratio"] for n in ort["noise"])
    assert got.providers == tuple(ort["providers"])
    assert inspected.parity["reference"] == parity["reference"]
    assert inspected.parity["oracle"] == parity["oracle"]
    assert inspected.notes == ()


def test_provenance_is_the_manifests(inspected, exported, onnx_model):
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    prov = inspected.provenance
    assert prov["tool_version"] == manifest["tool_version"]
    assert prov["versions"] == manifest["versions"]
    assert prov["exporter"] == manifest["extra"]["exporter"] == "dynamo"
    assert prov["source_checkpoint_sha256"] is None and prov["bn_recalibration"] is None
    assert prov["manifest_sha256"] == manifest["manifest_sha256"]
    assert prov["producer"].startswith(onnx_model.producer_name)
    assert json.loads(prov["model_metadata"]["subnet_export.arch"]) == ARCH


def test_to_json_is_strict_json_in_a_fixed_order(inspected):
    data = inspected.to_json()
    text = json.dumps(data, allow_nan=False)
    assert json.dumps(inspect_bundle(inspected.bundle).to_json(), allow_nan=False) == text
    assert list(data) == ["bundle", "passed", "failed", "hashes_checked", "model", "arch",
                          "inputs", "outputs", "operators", "parity", "backends", "provenance",
                          "notes"]
    assert data["operators"] == dict(inspected.operators) and data["hashes_checked"] is False
    assert data["backends"][0]["name"] == inspected.backends[0].name


def test_format_text_has_every_section_label_and_operator(inspected):
    text = inspected.format_text()
    lines = text.splitlines()
    for title in SECTIONS:
        assert any(line.startswith(title) for line in lines), title
    for label, value in ARCH.items():
        assert any(line.split() == [label, str(value)] for line in lines), label
    for op in inspected.operators:
        assert op in text
    assert "Parity: PASSED" in text and "marked FAILED" not in text
    assert f"subnet-export verify {inspected.bundle}" in text
    # the counts of the operator table start in one column
    start = next(i for i, line in enumerate(lines) if line.startswith("Operators"))
    rows = lines[start + 1:start + 1 + len(inspected.operators)]
    assert len({len(r) - len(r.rsplit(" ", 1)[1]) for r in rows}) == 1, rows


def test_a_failed_bundle_is_marked_and_its_figures_kept(tmp_path):
    out, _ = make_bundle(tmp_path, parity=PARITY_FAILED)
    got = inspect_bundle(out)
    assert got.failed and not got.passed
    ort = got.backends[1]
    assert (ort.status, ort.reason, ort.failed_comparisons) == ("failed", PARITY_FAILED[
        "backends"][1]["reason"], 1)
    assert ort.max_abs_error == math.inf and ort.max_rel_error == 2.0
    assert ort.noise_ratio == math.inf and ort.noise_factor == 4.0
    assert got.parity["divergence"] == "blocks.1.conv: max abs error 0.3"
    data = json.loads(json.dumps(got.to_json(), allow_nan=False))
    assert data["failed"] is True and data["backends"][1]["max_abs_error"] == "inf"
    text = got.format_text()
    assert "marked FAILED" in text and "Parity: FAILED" in text and "blocks.1.conv" in text


def test_external_data_counts_in_the_file_size(tmp_path):
    out, manifest = make_bundle(tmp_path, external=True)
    got = inspect_bundle(out)
    assert got.model["external_data"] == ["net.onnx.data"]
    assert got.model["file_bytes"] == sum(manifest.files[f]["size"]
                                          for f in ("model.onnx", "net.onnx.data"))
    assert "net.onnx.data" in got.format_text()


def test_verdicts_that_disagree_are_noted_not_checked(small, tmp_path):
    out = _copy(small, tmp_path)
    (out / "parity.json").write_text(json.dumps({**PARITY_OK, "passed": False}))
    got = inspect_bundle(out)  # a tampered file is verify's to reject
    assert not got.passed and not got.failed
    assert len(got.notes) == 1 and "the manifest says passed" in got.notes[0]
    assert f"note: {got.notes[0]}" in got.format_text()


def _break(out: Path, name: str, content: str | bytes | None) -> None:
    path = out / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.mark.parametrize(("name", "content", "match"), [
    ("manifest.json", None, r"has no manifest\.json; it is not a subnet-export bundle"),
    ("manifest.json", "{not json", r"manifest\.json is not valid JSON .*the bundle is corrupt"),
    ("arch.json", None, r"has no arch\.json; the bundle is corrupt or incomplete: fetch it"),
    ("arch.json", "[1, ", r"arch\.json is not valid JSON .*fetch it again or re-export it"),
    ("arch.json", "[1, 2]", r"arch\.json is not a JSON object; the bundle is corrupt"),
    ("parity.json", None, r"has no parity\.json; the bundle is corrupt"),
    ("parity.json", '{"passed": "yes"}', r"parity\.json is not a parity report"),
    ("model.onnx", None, r"has no model\.onnx; the bundle is corrupt"),
    ("model.onnx", b"\xff\x00 not a model", r"model\.onnx is not an ONNX model .*re-export"),
])
def test_a_malformed_bundle_is_a_bundle_error(small, tmp_path, name, content, match):
    out = _copy(small, tmp_path)
    _break(out, name, content)
    with pytest.raises(BundleError, match=match):
        inspect_bundle(out)


def test_a_path_that_is_no_bundle_directory_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match=r"does not exist; pass the directory"):
        inspect_bundle(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match=r"is not a directory; pass the bundle directory"):
        inspect_bundle(tmp_path / "file")


def test_histogram_names_and_expands_as_op_types_does():
    twice = helper.make_function("local", "Twice", ["a"], ["c"],
                                 [helper.make_node("Neg", ["a"], ["b"]),
                                  helper.make_node("Neg", ["b"], ["c"])],
                                 [helper.make_opsetid("", 17)])
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "branch", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("Twice", ["x"], ["t1"], domain="local"),
             helper.make_node("Twice", ["t1"], ["t2"], domain="local"),
             helper.make_node("Fused", ["t2"], ["f"], domain="com.example"),
             helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)]
    graph = helper.make_graph(nodes, "g", [], [])
    model = helper.make_model(graph, functions=[twice])
    hist = op_histogram(model)
    assert hist == {"Neg": 4, "Identity": 2, "If": 1, "Relu": 1, "com.example::Fused": 1}
    assert list(hist) == ["Neg", "Identity", "If", "Relu", "com.example::Fused"]
    assert set(hist) == set(op_types(model))
