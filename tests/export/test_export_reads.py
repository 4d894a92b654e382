"""export_onnx reads the traced file once, and every check on it still runs."""

from __future__ import annotations

import onnx
import pytest
from _parity_models import build

import subnet_export as se
from subnet_export.errors import ExportError


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_the_raw_export_is_read_once(tmp_path, monkeypatch, exporter):
    model, inputs = build("convnet")
    reads = []
    real = onnx.load

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", counting)
    result = se.export_onnx(model, inputs, tmp_path / "m.onnx", exporter=exporter)
    assert len(reads) == 1 and reads[0].endswith("raw.onnx"), reads
    monkeypatch.undo()
    assert onnx.load(str(result.path)).graph.node  # the file as saved is complete


def test_an_unreadable_raw_export_is_still_an_error_naming_the_step(tmp_path, monkeypatch):
    model, inputs = build("convnet")

    def broken(*args, **kwargs):
        raise OSError("truncated")

    monkeypatch.setattr(onnx, "load", broken)
    with pytest.raises(ExportError, match="step 'load' failed"):
        se.export_onnx(model, inputs, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_the_checker_still_runs_on_the_saved_file(tmp_path, monkeypatch):
    model, inputs = build("convnet")
    checked = []

    def checking(target, *args, **kwargs):
        checked.append((str(target), kwargs.get("full_check")))
        raise onnx.checker.ValidationError("bad graph")

    monkeypatch.setattr(onnx.checker, "check_model", checking)
    with pytest.raises(ExportError, match="step 'check' failed"):
        se.export_onnx(model, inputs, tmp_path / "m.onnx")
    assert len(checked) == 1 and checked[0][0].endswith("m.onnx") and checked[0][1] is True
    assert not (tmp_path / "m.onnx").exists()

