"""The export's graph clean-up: bias-less Convs carry no run-time zero bias."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch
from _noise import assert_within_noise, run_float64
from torch import nn

import subnet_export as se
from subnet_export.export.passes import strip_zero_conv_bias


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.head = nn.Conv2d(8, 4, 1, bias=True)

    def forward(self, x):
        return self.head(self.dw(torch.relu(self.bn(self.conv(x)))))


def _model() -> ConvBN:
    torch.manual_seed(0)
    m = ConvBN().eval()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def test_export_has_no_runtime_conv_bias_and_keeps_parity(tmp_path):
    model = _model()
    x = torch.randn(2, 3, 10, 10)
    result = se.export_onnx(model, x, tmp_path / "m.onnx")
    graph = onnx.load(str(result.path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    inits = {t.name for t in graph.initializer}
    # bias-less convs have two inputs; the one with a bias reads it from an initializer
    assert sorted(len(n.input) for n in convs) == [2, 2, 3]
    assert all(n.input[2] in inits for n in convs if len(n.input) == 3)
    assert not any(n.op_type == "CastLike" for n in graph.node)
    assert result.initializer_bytes == result.state_bytes
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert_within_noise(got, model(x), run_float64(model, x))


def test_pass_leaves_a_nonzero_bias_alone(tmp_path):
    model = _model()
    result = se.export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(result.path))
    assert strip_zero_conv_bias(proto) == 0  # already clean, and the real bias is kept
    assert sum(len(n.input) == 3 for n in proto.graph.node if n.op_type == "Conv") == 1


def test_a_pass_that_breaks_its_contract_is_an_export_error(tmp_path):
    from subnet_export.errors import ExportError
    from subnet_export.export.passes import GraphPass, PassResult, StripZeroConvBias

    model = ConvBN().eval()
    result = se.export_onnx(model, torch.randn(1, 3, 10, 10), tmp_path / "m.onnx")
    proto = onnx.load(str(result.path))

    class DropsAnOutput(GraphPass):
        name = "drops_an_output"

        def call(self, m):
            m.graph.output.pop()
            return PassResult(True, 1)

    class NeverRuns(GraphPass):
        name = "never_runs"

        def requires(self, m):
            return "it wants a graph it does not have"

    with pytest.raises(ExportError, match="drops_an_output broke its contract: it changed"):
        DropsAnOutput()(onnx.ModelProto.FromString(proto.SerializeToString()))
    with pytest.raises(ExportError, match="never_runs cannot run: it wants"):
        NeverRuns()(proto)
    # the shipped pass holds its own contract on a fresh export
    assert StripZeroConvBias()(proto) == PassResult(False, 0)
