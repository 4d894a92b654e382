"""validate / make_inputs / ParityReport: verdicts, skipped backends, NaN, JSON round trip, GPU."""

from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import onnx
import pytest
import torch
from _parity_models import MODELS, build, composite, exported
from torch import nn

import subnet_export as se
from subnet_export.export.exporter import state_bytes
from subnet_export.parity.report import SCHEMA_VERSION
from subnet_export.parity.rule import DEFAULT_NOISE_FACTOR

#: None: the default rule (the noise floor, see test_parity_rule.py); explicit ones are elementwise
TOL = None


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(MODELS))
def test_plain_models_pass(name, exporter):
    model, inputs, result = exported(name, exporter)
    report = se.validate(None, None, model, result.path, example_inputs=inputs,
                         batch_sizes=(1, 4), tolerances=TOL)
    assert report.passed and report.exit_code == 0, report.format_table()
    cpu = report.backend("ort-cpu")
    assert cpu.providers == ["CPUExecutionProvider"]
    assert {c.inputs for c in cpu.comparisons} == {"random-b1", "random-b4"}
    assert all(c.shape[0] in (1, 4) for c in cpu.comparisons)
    # the oracle is the plain model in float64; every output is judged on the pooled sets
    assert report.oracle == "plain-float64"
    assert all(c.noise is not None and c.noise_ratio is not None for c in cpu.comparisons)
    assert [n.output for n in cpu.noise] == list(dict.fromkeys(c.output for c in cpu.comparisons))
    assert all(n.passed and n.factor == DEFAULT_NOISE_FACTOR and n.floor > 0
               for n in cpu.noise)


def test_tolerance_is_a_real_parameter():
    model, inputs, result = exported("convnet")
    strict = se.validate(None, None, model, result.path, example_inputs=inputs,
                         tolerances={"ort-cpu": se.Tolerance(atol=0.0, rtol=0.0)}, locate=False)
    loose = se.validate(None, None, model, result.path, example_inputs=inputs,
                        tolerances=se.Tolerance(atol=1e-5, rtol=1e-4))
    default = se.validate(None, None, model, result.path, example_inputs=inputs)
    worst = max(c.max_abs_error for c in loose.backend("ort-cpu").comparisons)
    # onnxruntime does not reproduce torch's float32 bits, so a zero tolerance must fail
    assert worst > 0 and not strict.passed and loose.passed and default.passed
    assert strict.backend("ort-cpu").status == "failed"
    assert strict.backend("torch-cpu").status == "passed"  # same model, same bits
    assert loose.backend("ort-cpu").noise == []  # an explicit atol/rtol is the whole rule
    # torch-cpu is the reference bit for bit: its error is the reference's own, ratio 1 (or
    # below, where the one-rounding floor is larger); a factor under that fails even it
    assert all(n.ratio <= 1.0 + 1e-12 for n in default.backend("torch-cpu").noise)
    below = se.validate(None, None, model, result.path, example_inputs=inputs, locate=False,
                        tolerances=se.Tolerance(noise_factor=0.25))
    assert below.backend("torch-cpu").status == "failed"


def test_unavailable_backends_are_skipped_with_reason():
    model, inputs, result = exported("mlp")
    report = se.validate(None, None, model, result.path, example_inputs=inputs,
                         providers=["CPUExecutionProvider", "NoSuchExecutionProvider"],
                         tolerances=TOL)
    skipped = report.backend("ort-nosuch")
    assert skipped.status == "skipped" and "NoSuchExecutionProvider" in skipped.reason
    if not torch.cuda.is_available():
        assert report.backend("torch-cuda").status == "skipped"
        assert "cuda" in report.backend("torch-cuda").reason.lower()
    assert report.passed  # skipped is not failed
    assert "skipped" in report.format_table()


def test_nothing_onnx_ran_is_not_a_pass():
    model, inputs, result = exported("mlp")
    report = se.validate(None, None, model, result.path, example_inputs=inputs,
                         providers=["NoSuchExecutionProvider"], tolerances=TOL)
    assert not report.passed and report.exit_code == 1


def test_nan_weight_fails_and_says_nan(tmp_path):
    model, inputs = build("convnet")
    with torch.no_grad():
        model.blocks[1].conv.weight[0, 0, 0, 0] = float("nan")
    result = se.export_onnx(model, inputs, tmp_path / "nan.onnx")
    report = se.validate(None, None, model, result.path, example_inputs=inputs, tolerances=TOL)
    assert not report.passed
    failed = report.backend("ort-cpu")
    assert failed.status == "failed" and "NaN" in failed.reason
    assert any(c.nan_count > 0 for c in failed.comparisons)
    assert "NaN" in report.format_table()
    assert report.divergence is not None and report.divergence.module == "blocks.1.conv"


def test_plain_differs_from_reference_fails_torch_backend(monkeypatch):
    # the supernet is played by a model with the same module paths and one changed statistic;
    # fixed_arch is stubbed so the test does not depend on the supernet core
    model, inputs, result = exported("convnet")
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.blocks[0].bn.running_mean.add_(0.3)
    monkeypatch.setattr(se, "fixed_arch", lambda net, arch: contextlib.nullcontext(arch),
                        raising=False)
    report = se.validate(reference, {}, model, result.path, example_inputs=inputs,
                         tolerances=TOL, module_labels={"blocks.0": ["depth"]})
    assert report.reference == "supernet" and not report.passed
    assert report.backend("torch-cpu").status == "failed"
    assert report.backend("ort-cpu").status == "failed"
    div = report.divergence
    assert div is not None and div.module == "blocks.0.bn" and div.labels == ["depth"]


def test_report_json_round_trip(tmp_path):
    model, inputs = build("two_in_two_out")
    with torch.no_grad():
        model.conv.bias[0] = float("inf")
    result = se.export_onnx(model, inputs, tmp_path / "inf.onnx")
    report = se.validate(None, None, model, result.path, example_inputs=inputs, tolerances=TOL)
    text = report.to_json()
    data = json.loads(text)  # strict JSON: no bare NaN/Infinity
    assert data["schema_version"] == SCHEMA_VERSION and data["passed"] is False
    again = se.ParityReport.from_json(text)
    assert again.to_json() == text
    assert again.passed == report.passed
    assert [b.status for b in again.backends] == [b.status for b in report.backends]
    assert again.divergence == report.divergence
    with pytest.raises(ValueError, match="schema"):
        se.ParityReport.from_json(json.dumps({**data, "schema_version": 99}))


def test_comparison_figures():
    ref = np.array([[1.0, 2.0, 3.0], [0.0, 5.0, -1.0]], dtype=np.float32)
    cand = ref + np.array([[0.0, 0.0, 1e-3], [1e-6, 0.0, 0.0]], dtype=np.float32)
    tol = se.Tolerance(atol=1e-5, rtol=1e-4)
    cmp = se.OutputComparison.from_arrays("logits", "x", cand, ref, tol,
                                          oracle=ref.astype(np.float64))
    assert cmp.noise == 0.0
    assert cmp.oracle_error == pytest.approx(np.linalg.norm(cand - ref.astype(np.float64)))
    assert not cmp.passed
    assert cmp.max_abs_error == pytest.approx(1e-3, rel=1e-3)
    assert cmp.min_passing_atol == pytest.approx(1e-3 - 3 * 1e-4, rel=1e-3)
    assert cmp.argmax_agreement == 1.0 and cmp.nan_count == 0
    passing = se.OutputComparison.from_arrays("logits", "x", cand, ref,
                                              se.Tolerance(cmp.min_passing_atol * 1.01, 1e-4))
    assert passing.passed
    bad_shape = se.OutputComparison.from_arrays("logits", "x", cand[:1], ref, tol)
    assert not bad_shape.passed and "shape" in bad_shape.reason


def test_make_inputs_seeded_and_samples(tmp_path):
    examples = (torch.randn(2, 3, 8, 8), torch.randint(0, 50, (2, 7)))
    a = se.make_inputs(examples, batch_sizes=(1, 3), seed=5)
    b = se.make_inputs(examples, batch_sizes=(1, 3), seed=5)
    assert [s.label for s in a] == ["random-b1", "random-b3"]
    assert all(torch.equal(x, y) for sa, sb in zip(a, b) for x, y in zip(sa.tensors, sb.tensors))
    assert a[1].tensors[0].shape == (3, 3, 8, 8) and a[1].tensors[1].dtype == torch.int64
    assert int(a[1].tensors[1].max()) <= int(examples[1].max())
    np.savez(tmp_path / "s.npz", input_0=np.ones((4, 3, 8, 8), np.float32),
             input_1=np.zeros((4, 7), np.int64))
    sets = se.make_inputs(examples, samples=tmp_path / "s.npz", input_names=["input_0", "input_1"])
    assert sets[-1].label == "samples" and sets[-1].tensors[0].shape == (4, 3, 8, 8)
    np.savez(tmp_path / "bad.npz", x=np.ones((4, 5), np.float32))
    with pytest.raises(se.InputError):
        se.make_inputs(examples, samples=tmp_path / "bad.npz")


def test_samples_are_validated():
    model, inputs, result = exported("mlp")
    samples = {"input": np.linspace(-3, 3, 48, dtype=np.float32).reshape(3, 16)}
    report = se.validate(None, None, model, result.path, example_inputs=inputs, samples=samples,
                         tolerances=TOL)
    assert report.passed
    assert "samples" in {c.inputs for c in report.backend("ort-cpu").comparisons}


@pytest.mark.gpu
def test_cuda_backends_pass_with_tf32_off():
    ort = pytest.importorskip("onnxruntime")
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    has_ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if not torch.cuda.is_available() or not has_ort_cuda:
        pytest.skip("needs CUDA and onnxruntime-gpu")
    model, inputs, result = exported("attention")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    report = se.validate(None, None, model, result.path, example_inputs=inputs)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    gpu = report.backend("ort-cuda")
    assert gpu.status == "passed", report.format_table()
    assert gpu.providers[0] == "CUDAExecutionProvider" and gpu.tf32 == {"ort_use_tf32": False}
    assert report.backend("torch-cuda").tf32 == {"torch_matmul": False, "torch_cudnn": False}


def test_onnx_outputs_named_in_report():
    model, inputs, result = exported("two_in_two_out")
    report = se.validate(None, None, model, result.path, example_inputs=inputs, tolerances=TOL)
    names = [o.name for o in onnx.load(str(result.path)).graph.output]
    assert {c.output for c in report.backend("ort-cpu").comparisons} == set(names)


# -- real supernets: the reference is the supernet path under fixed_arch ------------------------
@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_composite_supernet_passes(strategy):
    net, arch, plain, inputs, result = composite(strategy)
    report = se.validate(net, arch, plain, result.path, example_inputs=inputs, tolerances=TOL)
    assert report.reference == "supernet"
    assert report.passed, report.format_table()
    assert result.initializer_bytes == result.state_bytes == state_bytes(plain)
    # the supernet holds more than the path: the export must not
    assert state_bytes(net) > result.initializer_bytes


def _single_spaces():
    from spaces import Single

    w = se.Choice([8, 12], label="w")
    return {
        "conv": (lambda: Single(se.Conv2d(3, w, se.Choice([3, 5], label="k"), padding=2)),
                 (2, 3, 8, 8)),
        "conv_bn": (lambda: Single(nn.Sequential(se.Conv2d(3, w, 3, padding=1),
                                                 se.BatchNorm2d(w))), (2, 3, 8, 8)),
        "linear": (lambda: Single(se.Linear(16, w)), (2, 16)),
        "layernorm": (lambda: Single(nn.Sequential(se.Linear(16, w), se.LayerNorm(w))), (2, 5, 16)),
        "attention": (lambda: Single(se.MultiheadAttention(w, se.Choice([2, 4], label="h"),
                                                           batch_first=True), call="attention"),
                      (2, 5, 12)),
    }


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("kind", ["conv", "conv_bn", "linear", "layernorm", "attention"])
def test_each_supernet_module_type(tmp_path, kind, exporter):
    from spaces import randomise

    factory, shape = _single_spaces()[kind]
    net = se.to_supernet(factory(), strategy="sampling")
    randomise(net, seed=1)
    net.eval()
    first = {label: spec.candidates[0] for label, spec in se.search_space(net).items()}
    arch = se.freeze(net, first)
    plain = se.materialize(net, arch).eval()
    x = torch.randn(*shape)
    if kind == "attention":  # embed dim is the first width choice
        x = torch.randn(*shape[:-1], arch["w"])
    result = se.export_onnx(plain, x, tmp_path / "m.onnx", exporter=exporter, arch=arch)
    report = se.validate(net, arch, plain, result.path, example_inputs=x, batch_sizes=(1, 3),
                         tolerances=TOL)
    assert report.passed, report.format_table()
    assert {c.inputs for c in report.backend("ort-cpu").comparisons} == {"random-b1", "random-b3"}


# -- faults a few hundred float32 roundings large: the old fixed rtol let them through -----------
def _scaled_initializer(src, dst, name: str, factor: float):
    model = onnx.load(str(src))
    (init,) = [t for t in model.graph.initializer if t.name == name]
    array = onnx.numpy_helper.to_array(init) * np.float32(factor)
    init.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), name))
    onnx.save(model, str(dst))
    return dst


def _composite_tensors():
    net, arch, plain, inputs, result = composite("sampling")
    inits = {t.name for t in onnx.load(str(result.path)).graph.initializer}
    return sorted(k for k in plain.state_dict() if k.endswith("weight") and k in inits)


@pytest.mark.parametrize("tensor", _composite_tensors())
def test_a_scaled_weight_tensor_fails_the_onnx_backend(tmp_path, tensor):
    net, arch, plain, inputs, result = composite("sampling")
    bad = _scaled_initializer(result.path, tmp_path / "bad.onnx", tensor, 1 + 1e-3)
    report = se.validate(net, arch, plain, bad, example_inputs=inputs, locate=False)
    check = report.backend("ort-cpu").noise[0]
    # every weight of this path reaches the output: 1e-3 is far over float32's noise here
    assert check.ratio > 10, f"{tensor}: the fault moved the output by only {check.ratio:.3g}x"
    assert not report.passed and report.backend("ort-cpu").status == "failed"
    assert report.backend("torch-cpu").status == "passed"


def test_a_scaled_weight_in_the_plain_model_fails_torch_and_is_located():
    net, arch, plain, inputs, result = composite("sampling")
    faulty = copy.deepcopy(plain)
    with torch.no_grad():
        faulty.get_parameter("blocks.1.0.weight").mul_(1 + 1e-3)
    report = se.validate(net, arch, faulty, result.path, example_inputs=inputs)
    assert report.backend("torch-cpu").status == "failed", report.format_table()
    assert "noise floor" in report.backend("torch-cpu").reason
    assert report.divergence is not None
    # the supernet holds that conv inside a layer choice: its nearest shared path is blocks.1
    assert report.divergence.module == "blocks.1", report.format_table()


class _Float32Only(nn.Module):
    """Keeps a float32 tensor as a plain attribute: ``.double()`` leaves it, float64 breaks."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = se.Linear(4, se.Choice([3, 5], label="w"))
        self.mix = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y @ self.mix[: y.shape[-1]]


def test_a_model_that_cannot_run_in_float64_has_no_oracle_and_says_so(tmp_path):
    from subnet_export.bundle.verify import verify_bundle
    from subnet_export.pipeline import export_subnet

    net = se.to_supernet(_Float32Only()).eval()
    arch = se.freeze(net, {"w": 3})
    plain = se.materialize(net, arch).eval()
    x = torch.randn(2, 4)
    result = se.export_onnx(plain, x, tmp_path / "m.onnx", arch=arch)
    report = se.validate(net, arch, plain, result.path, example_inputs=x)
    assert report.oracle.startswith("none: the reference does not run in float64")
    assert not report.oracle_ran and report.arrays[0].oracle is None
    # only the one-rounding floor is left: nothing is allowed beyond it
    assert all(n.noise == 0.0 for b in report.backends for n in b.noise)
    # an explicit elementwise tolerance works without an oracle, and so does the bundle
    out = tmp_path / "bundle"
    run = export_subnet(net, out, input_shapes=[(1, 4)], arch=arch, batch=2,
                        tolerance=se.Tolerance(atol=1e-5, rtol=1e-4),
                        providers=["CPUExecutionProvider"])
    assert run.report.passed, run.report.format_table()
    assert run.manifest.tolerance == {"atol": 1e-5, "rtol": 1e-4, "noise_factor": None}
    assert verify_bundle(out).passed
