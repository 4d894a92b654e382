"""trace: refused and honoured opsets, symbolic axes beyond the batch, nothing printed on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _noise import assert_within_noise, run_float64
from torch import nn

import subnet_export.export.trace as trace_module
from subnet_export.errors import ExportError, InputError
from subnet_export.export.capture import CapturedOutput
from subnet_export.export.diagnose import check_opset, default_opset, supported_opsets
from subnet_export.export.dynamic import resolve_axes
from subnet_export.export.trace import trace


class ConvBnLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class WithAttention(ConvBnLinear):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        y = self.bn(self.conv(x)).flatten(2).transpose(1, 2)
        return self.fc(self.attn(y, y, y, need_weights=False)[0])


class TokenModel(nn.Module):
    """Embedding + Linear + mean over the sequence, with a float mask sharing the ``seq`` dim."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.proj = nn.Linear(8, 3)

    def forward(self, ids, mask):
        hidden = self.proj(self.embed(ids)) * mask.unsqueeze(-1)
        return hidden.mean(1), hidden


def _opset(path) -> int:
    return next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx"))


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _trace(tmp_path, model, inputs, exporter, opset=None, axes=None, ins=("input",),
           outs=("output",)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = tmp_path / "raw.onnx"
    trace(model.eval(), inputs, raw, exporter, opset, axes, ins, outs)
    return raw


# -- opsets --------------------------------------------------------------------------------------

def test_supported_opsets_come_from_the_libraries():
    from onnxscript.version_converter import _version_converter as vc
    from torch.onnx import _constants as tc

    assert supported_opsets("dynamo") == range(18, vc.SUPPORTED_MAX_ONNX_OPSET + 1)
    assert supported_opsets("torchscript") == range(
        tc.ONNX_MIN_OPSET, tc.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET + 1)
    for exporter in ("dynamo", "torchscript"):
        assert default_opset(exporter) in supported_opsets(exporter)
    with pytest.raises(InputError, match="unknown exporter"):
        supported_opsets("tflite")


@pytest.mark.parametrize(("exporter", "opset"), [
    ("dynamo", 7), ("dynamo", 16), ("dynamo", 17), ("dynamo", 99), ("dynamo", 26),
    ("torchscript", 6), ("torchscript", 21), ("torchscript", 99),
])
def test_an_opset_the_exporter_cannot_write_is_refused(exporter, opset, tmp_path):
    with pytest.raises(InputError) as err:
        check_opset(exporter, opset)
    span = supported_opsets(exporter)
    assert f"it writes opsets {span.start}..{span.stop - 1}" in str(err.value)
    assert f"opset {opset} cannot be produced by the {exporter} exporter" in str(err.value)
    # trace refuses it before tracing: nothing is written
    with pytest.raises(InputError):
        _trace(tmp_path, nn.Linear(2, 2), (torch.randn(2, 2),), exporter, opset)
    assert not (tmp_path / "raw.onnx").exists()


def test_the_refusal_names_the_other_exporter_when_it_can():
    with pytest.raises(InputError, match=r"or use exporter 'torchscript' for 7\.\.20"):
        check_opset("dynamo", 16)
    with pytest.raises(InputError, match=r"or use exporter 'dynamo' for 18\.\.25"):
        check_opset("torchscript", 23)
    with pytest.raises(InputError) as err:
        check_opset("dynamo", 99)
    assert "or use" not in str(err.value)


@pytest.mark.parametrize(("exporter", "model", "opsets"), [
    ("dynamo", WithAttention, (18, 25)),
    ("torchscript", ConvBnLinear, (7, 20)),
    ("torchscript", WithAttention, (14,)),
])
def test_accepted_opsets_are_the_ones_written(exporter, model, opsets, tmp_path):
    for opset in opsets:
        raw = _trace(tmp_path / str(opset), model(), (torch.randn(2, 3, 6, 6),), exporter, opset)
        assert _opset(raw) == opset


def test_outside_the_range_torch_writes_another_opset_and_trace_says_so(tmp_path, monkeypatch):
    # why 16/17 and 26 are refused: torch.onnx converts them with onnx's C converter, which fails
    # silently on some models (which ones differs per opset) and leaves opset 18
    x = torch.randn(2, 3, 6, 6)
    program = torch.onnx.export(WithAttention().eval(), (x,), dynamo=True, optimize=False,
                                opset_version=26, verbose=False)
    assert next(o.version for o in program.model_proto.opset_import if o.domain == "") == 18
    monkeypatch.setattr(trace_module, "check_opset", lambda exporter, opset: None)
    with pytest.raises(ExportError, match="wrote opset 18, not the requested 17") as err:
        _trace(tmp_path, ConvBnLinear(), (x,), "dynamo", 17)
    assert err.value.category == "other"


def test_torch_itself_declares_torchscript_above_20_unsupported(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with CapturedOutput():
            torch.onnx.export(ConvBnLinear().eval(), (torch.randn(1, 3, 6, 6),),
                              str(tmp_path / "m.onnx"), dynamo=False, opset_version=21)
    assert any("highest opset version supported is 20" in str(w.message) for w in caught)


# -- dynamic axes --------------------------------------------------------------------------------

TOKEN_AXES = {"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}}


@pytest.fixture(scope="module", params=["dynamo", "torchscript"])
def token_export(request, tmp_path_factory):
    model = TokenModel().eval()
    # size 1 on both symbolic axes: traced at 2, ids repeated so they stay valid token ids
    ids, mask = torch.tensor([[7]]), torch.ones(1, 1)
    raw = tmp_path_factory.mktemp(request.param) / "raw.onnx"
    trace(model, (ids, mask), raw, request.param, None, TOKEN_AXES, ("ids", "mask"),
          ("pooled", "hidden"))
    return request.param, model, raw


def test_dynamic_dims_are_symbolic_and_shared(token_export):
    exporter, _, raw = token_export
    graph = onnx.load(str(raw), load_external_data=False).graph
    assert {i.name: _dims(i) for i in graph.input} == {"ids": ["batch", "seq"],
                                                       "mask": ["batch", "seq"]}
    outputs = {o.name: _dims(o) for o in graph.output}
    assert outputs["pooled"] == ["batch", 3]
    assert outputs["hidden"][0] == "batch" and outputs["hidden"][2] == 3
    if exporter == "dynamo":  # the dynamo exporter names output dims after the Dims
        assert outputs["hidden"] == ["batch", "seq", 3]


@pytest.mark.parametrize(("batch", "seq"), [(1, 5), (3, 17)])
def test_a_dynamic_seq_runs_in_onnxruntime_and_matches_torch(token_export, batch, seq):
    _, model, raw = token_export
    gen = torch.Generator().manual_seed(seq)
    ids = torch.randint(0, 50, (batch, seq), generator=gen)
    mask = (torch.rand(batch, seq, generator=gen) > 0.2).float()
    session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
    got = session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})
    assert got[1].shape == (batch, seq, 3) and got[0].dtype == np.float32
    with torch.no_grad():
        want = model(ids, mask)
    assert_within_noise(got, want, run_float64(model, ids, mask))


def test_true_means_the_batch_of_every_input():
    inputs = (torch.randn(2, 3), torch.tensor(1.0))
    assert resolve_axes(True, inputs, ("a", "b")) == {"a": {0: "batch"}}
    assert resolve_axes(False, inputs, ("a", "b")) == {} == resolve_axes(None, inputs, ("a", "b"))
    assert resolve_axes({"a": {-1: "seq"}}, inputs, ("a", "b")) == {"a": {1: "seq"}}


def test_a_bool_still_works_for_trace(tmp_path):
    raw = _trace(tmp_path, nn.Linear(4, 2), (torch.randn(1, 4),), "torchscript", None, True)
    graph = onnx.load(str(raw)).graph
    assert _dims(graph.input[0]) == ["batch", 4] and _dims(graph.output[0]) == ["batch", 2]


@pytest.mark.parametrize(("axes", "match"), [
    ({"idz": {1: "seq"}}, r"dynamic axes name 'idz', which is not an input; the inputs are "
                          r"'ids', 'mask'"),
    ({"ids": {2: "seq"}}, r"dynamic axis 2 of input 'ids' is out of range: the input has shape "
                          r"\(2, 5\), so axes 0\.\.1"),
    ({"ids": {1: "my seq"}}, r"is named 'my seq'; a dim name must be an identifier"),
    ({"ids": {1: "seq"}, "mask": {1: "seq"}}, r"dim 'seq' names axes of different sizes"),
])
def test_axes_that_do_not_fit_the_inputs_are_input_errors(axes, match, tmp_path):
    inputs = (torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 6))
    with pytest.raises(InputError, match=match):
        trace(TokenModel(), inputs, tmp_path / "raw.onnx", "dynamo", None, axes,
              ("ids", "mask"), ("pooled", "hidden"))


class FixedPositions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 6, 4))

    def forward(self, x):
        return x + self.pos


def test_an_axis_the_model_fixes_is_an_error_not_a_silent_fixed_size(tmp_path):
    # torch.onnx re-exports with torch.export's suggested fix (seq == 6) without a word
    with pytest.raises(ExportError) as err:
        _trace(tmp_path, FixedPositions(), (torch.randn(2, 6, 4),), "dynamo", None,
               {"input": {0: "batch", 1: "seq"}})
    message = str(err.value)
    assert "the model fixes dynamic axis 1 ('seq') of input 'input' to 6" in message
    assert "drop 'seq' from the dynamic axes" in message and "\n" not in message
    assert err.value.category == "dynamic_shape"


# -- nothing on stdout ---------------------------------------------------------------------------

def test_captured_output_takes_fds_and_python_streams_and_restores_them():
    before = [os.fstat(fd) for fd in (1, 2)]
    captured = CapturedOutput()
    with pytest.raises(KeyboardInterrupt), captured:
        os.write(1, b"fd one\n")
        os.write(2, b"fd two\n")
        print("python out")
        print("python err", file=sys.stderr)
        raise KeyboardInterrupt
    after = [os.fstat(fd) for fd in (1, 2)]
    assert [(s.st_dev, s.st_ino) for s in after] == [(s.st_dev, s.st_ino) for s in before]
    for text in ("fd one", "fd two", "python out", "python err"):
        assert text in captured.text


_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path
    import torch
    from subnet_export.errors import ExportError
    from subnet_export.export.trace import trace

    class Kth(torch.nn.Module):
        def forward(self, x):
            return torch.kthvalue(x, 2, dim=-1)[0]

    warnings.simplefilter("ignore")
    out = Path(sys.argv[1])
    if sys.argv[2] == "raw":
        try:
            torch.onnx.export(Kth(), (torch.randn(2, 4),), str(out / "a.onnx"), dynamo=False)
        except Exception:
            pass
    else:
        try:
            trace(Kth(), (torch.randn(2, 4),), out / "b.onnx", "torchscript", None, True,
                  ("input",), ("output",))
        except ExportError as err:
            print(json.dumps({"message": str(err), "details": err.details}))
""")


@pytest.mark.parametrize("how", ["raw", "trace"])
def test_a_failing_torchscript_export_prints_nothing_on_stdout(how, tmp_path):
    # stdout is a pipe, so C stdio buffers it: a missed flush would still leak the dump
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), how],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    if how == "raw":  # torch's C++ side dumps the IR on fd 1, past sys.stdout
        assert "Torch IR graph at exception" in proc.stdout
        return
    result = json.loads(proc.stdout)  # stdout holds our one JSON line and nothing else
    assert "Torch IR graph at exception" in result["details"]
    assert "Torch IR graph" not in result["message"] and "\n" not in result["message"]
    assert "Torch IR graph" not in proc.stderr
