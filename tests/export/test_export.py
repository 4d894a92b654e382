"""export_onnx: names, dynamic batch, metadata, determinism, the active-path byte invariant."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _noise import assert_within_noise, run_float64
from _parity_models import MODELS, build, exported

import subnet_export as se
from subnet_export.export.exporter import (
    ARCH_KEY,
    CHECKPOINT_KEY,
    VERSION_KEY,
    default_names,
    state_bytes,
)


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(MODELS))
def test_export_runs_at_batch_1_and_n(name, exporter):
    model, inputs, result = exported(name, exporter)
    with torch.no_grad():
        out = model(*inputs)
    n_in, n_out = len(inputs), 1 if isinstance(out, torch.Tensor) else len(out)
    assert result.input_names == default_names("input", n_in)
    assert result.output_names == default_names("output", n_out)
    graph = onnx.load(str(result.path)).graph
    assert [i.name for i in graph.input] == list(result.input_names)
    assert [o.name for o in graph.output] == list(result.output_names)
    for batch in (1, 5):
        feeds = {n: torch.randn(batch, *t.shape[1:]).numpy()
                 for n, t in zip(result.input_names, inputs)}
        got = _run(result.path, feeds)
        args = [torch.from_numpy(v) for v in feeds.values()]
        with torch.no_grad():
            want = model(*args)
        assert_within_noise(got, want, run_float64(model, *args))


def test_metadata_and_checker():
    model, inputs, result = exported("convnet")
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[ARCH_KEY]) == {"model": "convnet"}
    assert props[VERSION_KEY] == se.__version__
    assert result.opset == next(o.version for o in proto.opset_import if o.domain == "")


def test_checkpoint_hash_and_user_metadata(tmp_path):
    model, inputs = build("mlp")
    result = se.export_onnx(model, inputs, tmp_path / "m.onnx", checkpoint_sha256="ab" * 32,
                            metadata={"owner": "ci"}, exporter="torchscript", opset=17)
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props[CHECKPOINT_KEY] == "ab" * 32 and props["owner"] == "ci"
    assert result.opset == 17


@pytest.mark.parametrize("name", ["convnet", "attention", "two_in_two_out"])
def test_initializers_are_exactly_the_active_weights(name):
    # dynamo, unoptimised: one initializer per parameter/buffer, same name, same bytes
    model, _, result = exported(name)
    graph = onnx.load(str(result.path)).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert result.initializer_bytes == result.state_bytes == state_bytes(model)
    assert set(inits) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(inits[key], value.numpy())


def test_byte_identical_reexport(tmp_path):
    model, inputs = build("convnet")
    first = se.export_onnx(model, inputs, tmp_path / "a.onnx", arch={"w": 8})
    model2, _ = build("convnet")
    second = se.export_onnx(model2, inputs, tmp_path / "b.onnx", arch={"w": 8})
    assert first.path.read_bytes() == second.path.read_bytes()
    # and a different weight gives different bytes, so the check above can fail
    with torch.no_grad():
        model2.head.bias.add_(1.0)
    third = se.export_onnx(model2, inputs, tmp_path / "c.onnx", arch={"w": 8})
    assert third.path.read_bytes() != first.path.read_bytes()


def test_no_source_paths_in_file():
    _, _, result = exported("convnet")
    assert os.path.dirname(__file__).encode() not in result.path.read_bytes()


def test_external_data(tmp_path):
    model, inputs = build("mlp")
    result = se.export_onnx(model, inputs, tmp_path / "m.onnx", external_data=True)
    assert result.external_data == tmp_path / "m.onnx.data" and result.external_data.is_file()
    feeds = {"input": inputs[0].numpy()}
    assert_within_noise(_run(result.path, feeds)[0], model(*inputs), run_float64(model, *inputs))


def test_failure_is_export_error_and_leaves_nothing(tmp_path):
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x  # data-dependent: torch.export refuses it

    with pytest.raises(se.ExportError, match="step 'trace'"):
        se.export_onnx(Branchy(), torch.randn(2, 3), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    model, inputs = build("mlp")
    with pytest.raises(se.ExportError, match="unknown exporter"):
        se.export_onnx(model, inputs, tmp_path / "m.onnx", exporter="tflite")
    with pytest.raises(se.ExportError, match="does not exist"):
        se.export_onnx(model, inputs, tmp_path / "missing" / "m.onnx")
    with pytest.raises(se.ExportError, match="names given"):
        se.export_onnx(model, inputs, tmp_path / "m.onnx", output_names=["a", "b"])


class _ShapeOnlyBranch(torch.nn.Module):
    """``dead``'s output feeds only a shape, so torch.export drops its computation."""

    def __init__(self):
        super().__init__()
        self.dead = torch.nn.Linear(4, 4)
        self.live = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.live(x) + torch.zeros(self.dead(x).shape)


def test_unused_weights_are_reported(tmp_path):
    model = _ShapeOnlyBranch().eval()
    result = se.export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx")
    assert result.unused == ("dead.bias", "dead.weight")
    state = model.state_dict()
    unused_bytes = sum(state[n].numel() * state[n].element_size() for n in result.unused)
    assert result.initializer_bytes + unused_bytes == result.state_bytes
    assert result.initializer_bytes < result.state_bytes
