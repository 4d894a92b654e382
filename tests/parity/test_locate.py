"""locate_divergence: a planted error in the ONNX file is found and named by module path."""

from __future__ import annotations

import onnx
import pytest
from _parity_models import composite, exported
from onnx import numpy_helper

import subnet_export as se
from subnet_export.parity.locate import module_scopes

TOL = se.Tolerance()  # the default rule: the float32 noise floor


def _plant(src, dst, initializer: str, delta: float = 0.5):
    """Copy an ONNX file with one weight tensor shifted by ``delta`` (all elements)."""
    model = onnx.load(str(src))
    (init,) = [t for t in model.graph.initializer if t.name == initializer]
    array = numpy_helper.to_array(init).copy()
    array += delta
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("param", ["blocks.1.conv.weight", "blocks.0.bn.bias", "head.weight"])
def test_planted_error_is_named(tmp_path, exporter, param):
    model, inputs, result = exported("convnet", exporter)
    layer = param.rsplit(".", 1)[0]
    # the test model's tensors are all distinct, so even torchscript keeps each one by name
    assert param in {t.name for t in onnx.load(str(result.path)).graph.initializer}
    bad = _plant(result.path, tmp_path / "bad.onnx", param)
    report = se.validate(None, None, model, bad, example_inputs=inputs, tolerances=TOL,
                         module_labels={"blocks.1": ["depth"], "blocks.1.conv": ["k1", "w1"]})
    assert not report.passed
    assert report.backend("ort-cpu").status == "failed"
    assert report.backend("torch-cpu").status == "passed"
    div = report.divergence
    assert div is not None and div.module == layer, report.format_table()
    assert layer in report.format_table()
    expected_labels = {"blocks.1.conv": ["k1", "w1"], "blocks.0.bn": [], "head": []}[layer]
    assert div.labels == expected_labels


def test_labels_fall_back_to_nearest_ancestor(tmp_path):
    model, inputs, result = exported("convnet")
    bad = _plant(result.path, tmp_path / "bad.onnx", "blocks.1.bn.bias")
    div = se.locate_divergence(model, bad, inputs, tolerance=TOL,
                               module_labels={"blocks.1": ["depth"]})
    assert div is not None and div.module == "blocks.1.bn" and div.labels == ["depth"]
    assert div.checked > 1 and div.max_abs_error > 0.1


@pytest.mark.parametrize("name", ["convnet", "attention", "two_in_two_out"])
def test_clean_model_has_no_divergence(name):
    model, inputs, result = exported(name)
    assert se.locate_divergence(model, result.path, inputs, tolerance=TOL) is None


def test_scopes_are_module_paths():
    for exporter in ("dynamo", "torchscript"):
        _, _, result = exported("convnet", exporter)
        nodes = onnx.load(str(result.path)).graph.node
        conv = [n for n in nodes if n.op_type == "Conv" and "blocks.1.conv.weight" in n.input]
        assert len(conv) == 1
        assert module_scopes(conv[0]) == ["blocks", "blocks.1", "blocks.1.conv"]


def test_unmappable_model_says_why(tmp_path):
    model, inputs, result = exported("mlp")
    stripped = onnx.load(str(result.path))
    for node in stripped.graph.node:
        del node.metadata_props[:]
        node.name = ""
    onnx.save(stripped, str(tmp_path / "anon.onnx"))
    div = se.locate_divergence(model, tmp_path / "anon.onnx", inputs, tolerance=TOL)
    assert div is not None and div.module is None
    assert "no module output" in div.reason and set(div.unmapped) == {"fc1", "act", "fc2"}


def test_planted_error_in_supernet_export_names_layer_and_labels(tmp_path):
    net, arch, plain, inputs, result = composite("sampling")
    bad = _plant(result.path, tmp_path / "bad.onnx", "attn.fc1.weight", delta=0.2)
    report = se.validate(net, arch, plain, bad, example_inputs=inputs, tolerances=TOL)
    assert not report.passed and report.backend("torch-cpu").status == "passed"
    div = report.divergence
    assert div is not None and div.module == "attn.fc1", report.format_table()
    # labels come from the core's module_labels: the width and the MLP ratio shaped this layer
    assert set(div.labels) == set(se.module_labels(net, arch)["attn.fc1"]) == {"ratio", "w"}
