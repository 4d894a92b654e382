"""subnet_export.variants.build: make_variants on small CNNs exported here with torch.

The models are exported once per module (torchscript exporter, fastest) and their nodes renamed
``<module path>/<op type>`` as subnet-export's exporter names them (``export/naming.py``), which
is how variants map nodes to modules. Verdicts are asserted with wide margins, never a machine's
exact numbers: the good model's INT8 SNR is some 15 dB above its bound, the planted one's far
below it (checked over 16 seeds of this file's model and data; seed 0 is the one kept).
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from subnet_export.errors import InputError
from subnet_export.variants.build import JudgedSet, VariantOptions, make_variants, variant_file
from subnet_export.variants.convert import (
    Fp16Settings,
    Int8Settings,
    module_of,
    weighted_modules,
)
from subnet_export.variants.run import run_set
from subnet_export.variants.sensitivity import SensitivityRow
from subnet_export.variants.stats import DEFAULT_LIMITS, parse_limits

SAMPLES = 64
A, B = "features.2", "features.4"  # the planted pair: conv, ReLU, conv
MODULES = ["features.0", A, B, "classifier"]  # the weighted modules, in graph order


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    # uniform [0, 1) pixels times a uniform [0, 1) gain per sample and channel: without the
    # gain, the pooled features of i.i.d. noise are nearly the same for every sample and the
    # outputs nearly constant, which hides what quantization does to the features
    return (rng.random((n, 3, 16, 16), dtype=np.float32)
            * rng.random((n, 3, 1, 1), dtype=np.float32))


def _export(net: nn.Module, path: Path, *, batch: int = 1, dynamic: bool = True) -> Path:
    """Export ``net`` and rename its nodes ``<module path>/<op type>`` (``_2``... if repeated)."""
    torch.onnx.export(
        net, torch.zeros(batch, 3, 16, 16), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None)
    model = onnx.load(str(path))
    seen: collections.Counter[str] = collections.Counter()
    for node in model.graph.node:
        # "/features/features.0/Conv" -> "features.0"; "/Flatten" -> "" (the root)
        scope = node.name.rpartition("/")[0]
        base = f"{scope.rpartition('/')[2]}/{node.op_type}"
        seen[base] += 1
        node.name = base if seen[base] == 1 else f"{base}_{seen[base]}"
    onnx.save(model, str(path))
    return path


@dataclass(frozen=True)
class Models:
    good: Path
    planted: Path
    channel: int
    calibration: dict[str, np.ndarray]
    judged: JudgedSet
    planted_judged: JudgedSet


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread) -> Models:
    root = tmp_path_factory.mktemp("variant-models")
    torch.manual_seed(0)
    net = SmallCNN().eval()
    rng = np.random.default_rng(0)
    calibration = {"input": _inputs(rng, SAMPLES)}
    pool = _inputs(rng, 4 * SAMPLES)
    with torch.no_grad():
        # no classifier bias: a constant offset would dominate the outputs' power, so the SNR
        # would mostly measure the bias and barely see the features
        net.classifier.bias.zero_()
        # judge on samples the float model classifies decisively (top-2 gap >= 10% of the
        # logits' RMS, several times INT8's noise): a near tie flips on any machine's rounding,
        # which would make the top-1 verdict a coin toss rather than a test
        logits = net(torch.from_numpy(pool)).numpy()
        top2 = np.sort(logits, axis=1)[:, -2:]
        decisive = top2[:, 1] - top2[:, 0] >= 0.1 * np.sqrt(np.mean(logits ** 2))
        assert decisive.sum() >= SAMPLES
        judged_inputs = {"input": pool[decisive][:SAMPLES]}
        # the planted channel: A's most active output channel, so zeroing the others matters
        act = net.features[:4](torch.from_numpy(calibration["input"])).mean(dim=(0, 2, 3))
        channel = int(act.argmax())
    good = _export(net, root / "good.onnx")

    planted = SmallCNN()
    planted.load_state_dict(net.state_dict())
    planted.eval()
    conv_a, conv_b = planted.features[2], planted.features[4]
    with torch.no_grad():
        # function-preserving in float32 (ReLU is positively homogeneous), but channel c of A's
        # output is 1000x the others: one per-tensor uint8 scale for that activation rounds
        # every other channel to zero
        conv_a.weight[channel] *= 1000
        conv_a.bias[channel] *= 1000
        conv_b.weight[:, channel] /= 1000
    planted_path = _export(planted, root / "planted.onnx")

    reference = run_set(good, judged_inputs, ["output"])
    planted_reference = run_set(planted_path, judged_inputs, ["output"])
    return Models(good, planted_path, channel, calibration,
                  JudgedSet("judged", judged_inputs, reference),
                  JudgedSet("judged", judged_inputs, planted_reference))


def _make(models: Models, out: Path, *, planted: bool = False, calibration: object = "default",
          **options) -> list:
    return make_variants(
        models.planted if planted else models.good, out,
        judged=models.planted_judged if planted else models.judged,
        calibration=models.calibration if calibration == "default" else calibration,
        options=VariantOptions(**options))


def _quantized_modules(path: Path) -> set[str]:
    """Modules whose weighted op takes its weight from a DequantizeLinear (QDQ)."""
    model = onnx.load(str(path))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear"
                   for o in n.output}
    return {module_of(n) for n in model.graph.node
            if n.op_type in ("Conv", "Gemm") and n.input[1] in dequantized}


# ---------------------------------------------------------------------------------------------
# the fixtures themselves


def test_fixture_models_are_named_by_module(models):
    model = onnx.load(str(models.good))
    assert weighted_modules(model) == MODULES
    names = [n.name for n in model.graph.node]
    assert "features.0/Conv" in names and "classifier/Gemm" in names
    assert len(set(names)) == len(names)


def test_planted_model_computes_the_same_in_float32(models):
    good, planted = models.judged.reference["output"], models.planted_judged.reference["output"]
    assert np.abs(good).max() > 0.01  # not a degenerate all-zero model
    np.testing.assert_allclose(planted, good, rtol=1e-4, atol=1e-4 * np.abs(good).max())
    # while the planted channel's weights really are 1000x (and B's inputs from it 1/1000)
    def weights(path):
        return {i.name: onnx.numpy_helper.to_array(i)
                for i in onnx.load(str(path)).graph.initializer}
    before, after = weights(models.good), weights(models.planted)
    c = models.channel
    np.testing.assert_allclose(after[f"{A}.weight"][c], 1000 * before[f"{A}.weight"][c],
                               rtol=1e-5)
    np.testing.assert_allclose(after[f"{B}.weight"][:, c], before[f"{B}.weight"][:, c] / 1000,
                               rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# the good model


def test_good_model_passes_fp16_and_int8(models, tmp_path):
    results = _make(models, tmp_path)
    assert [r.kind for r in results] == ["fp16", "int8"]
    for r in results:
        assert r.passed, (r.kind, r.failures)
        assert r.failures == [] and r.auto_excluded == []
        assert r.path == tmp_path / variant_file(r.kind) and r.path.is_file()
        assert r.limits == DEFAULT_LIMITS[r.kind]
        assert [s.output for s in r.stats] == ["output"] and r.stats[0].samples == SAMPLES
        assert r.stats[0].snr_db > DEFAULT_LIMITS[r.kind].snr_db_min + 6
        # a comfortable pass: no sensitivity in auto mode
        assert r.sensitivity == []
        json.dumps(r.to_manifest(), allow_nan=False)
    # the scratch directory (a temporary one in out_dir) is gone
    assert sorted(os.listdir(tmp_path)) == ["model.fp16.onnx", "model.int8.onnx"]
    size = models.good.stat().st_size
    assert (tmp_path / "model.int8.onnx").stat().st_size < 0.6 * size
    assert (tmp_path / "model.fp16.onnx").stat().st_size < 0.75 * size
    # fp16 keeps float32 inputs and outputs
    half = onnx.load(str(tmp_path / "model.fp16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _quantized_modules(tmp_path / "model.int8.onnx") == set(MODULES)


def test_manifest_entry(models, tmp_path):
    (result,) = _make(models, tmp_path, kinds=("int8",))
    entry = json.loads(json.dumps(result.to_manifest(), allow_nan=False))
    assert entry["file"] == "model.int8.onnx" and entry["passed"] is True
    assert entry["judged_set"] == "judged" and entry["failures"] == []
    assert entry["limits"] == DEFAULT_LIMITS["int8"].to_json()
    assert entry["settings"] == Int8Settings().to_json()
    assert entry["stats"][0]["output"] == "output"


def test_limits_override_fails_the_good_int8(models, tmp_path):
    limits = parse_limits(["int8.snr_db_min=200"], ["int8"])
    (result,) = _make(models, tmp_path, kinds=("int8",), limits=limits, sensitivity="never")
    assert not result.passed
    assert len(result.failures) == 1 and "snr_db" in result.failures[0]
    assert "< 200" in result.failures[0]
    assert result.limits.snr_db_min == 200
    assert result.path.is_file()  # a failed verdict is a result, not an error


def test_sensitivity_always(models, tmp_path):
    (result,) = _make(models, tmp_path, kinds=("int8",), sensitivity="always")
    assert result.passed
    rows = result.sensitivity
    assert all(isinstance(r, SensitivityRow) for r in rows)
    assert sorted(r.module for r in rows) == sorted(MODULES)
    snrs = [r.snr_db for r in rows]
    assert snrs == sorted(snrs)
    assert all(r.output == "output" and r.top1_agreement is not None for r in rows)
    # one module quantized alone loses less than all of them together
    assert min(snrs) >= result.stats[0].snr_db - 1.0
    json.dumps([r.to_json() for r in rows], allow_nan=False)
    assert sorted(os.listdir(tmp_path)) == ["model.int8.onnx"]


def test_fp16_sensitivity_always(models, tmp_path):
    (result,) = _make(models, tmp_path, kinds=("fp16",), sensitivity="always")
    assert result.passed
    assert sorted(r.module for r in result.sensitivity) == sorted(MODULES)


def test_sensitivity_never(models, tmp_path):
    (result,) = _make(models, tmp_path, planted=True, kinds=("int8",), sensitivity="never")
    assert not result.passed and result.sensitivity == [] and result.auto_excluded == []


def test_dynamic_int8_needs_no_calibration(models, tmp_path):
    (result,) = _make(models, tmp_path, calibration=None, kinds=("int8",),
                      int8=Int8Settings(dynamic=True))
    assert result.path.is_file()
    assert result.stats[0].finite
    assert result.settings["dynamic"] is True
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    assert sorted(os.listdir(tmp_path)) == ["model.int8.onnx"]


def test_static_int8_without_calibration_is_an_input_error(models, tmp_path):
    with pytest.raises(InputError, match="calibration"):
        _make(models, tmp_path, calibration=None, kinds=("int8",))


def test_exclude_a_parent_module(models, tmp_path):
    (result,) = _make(models, tmp_path, kinds=("int8",), int8=Int8Settings(exclude=("features",)))
    assert result.passed
    assert _quantized_modules(result.path) == {"classifier"}
    assert result.settings["exclude"] == ["features"]


# ---------------------------------------------------------------------------------------------
# a deliberately bad quantization, caught and named


def test_planted_outlier_fails_int8_and_sensitivity_names_it(models, tmp_path):
    (result,) = _make(models, tmp_path, planted=True, kinds=("int8",))
    assert not result.passed and result.failures
    assert any("snr_db" in f for f in result.failures)
    assert result.stats[0].snr_db < DEFAULT_LIMITS["int8"].snr_db_min - 6
    # auto mode ran sensitivity on the failure: the planted pair are the two worst modules
    rows = result.sensitivity
    assert sorted(r.module for r in rows) == sorted(MODULES)
    assert rows[0].module in (A, B)
    assert {r.module for r in rows[:2]} == {A, B}
    assert rows[1].snr_db < DEFAULT_LIMITS["int8"].snr_db_min < rows[2].snr_db
    entry = json.loads(json.dumps(result.to_manifest(), allow_nan=False))
    assert entry["passed"] is False and entry["failures"] == result.failures
    assert [r["module"] for r in entry["sensitivity"]] == [r.module for r in rows]
    assert any("FAILED" in line for line in result.format_lines())


def test_planted_outlier_passes_fp16(models, tmp_path):
    # FP16 has range enough for a 1000x channel: the plant is an INT8 problem only
    (result,) = _make(models, tmp_path, planted=True, kinds=("fp16",))
    assert result.passed, result.failures


def test_auto_exclude_fixes_the_planted_outlier(models, tmp_path):
    (result,) = _make(models, tmp_path, planted=True, kinds=("int8",), auto_exclude=3)
    assert result.passed, result.failures
    assert result.auto_excluded and set(result.auto_excluded) <= {A, B}
    assert result.auto_excluded == [r.module for r in result.sensitivity[:len(
        result.auto_excluded)]]
    assert result.settings["exclude"] == result.auto_excluded
    assert result.stats[0].snr_db > DEFAULT_LIMITS["int8"].snr_db_min + 6
    # the file written is the final one: the excluded modules are float32 in it
    assert _quantized_modules(result.path) == set(MODULES) - set(result.auto_excluded)
    entry = json.loads(json.dumps(result.to_manifest(), allow_nan=False))
    assert entry["passed"] is True and entry["auto_excluded"] == result.auto_excluded
    assert any("kept float32 (auto)" in line for line in result.format_lines())
    assert sorted(os.listdir(tmp_path)) == ["model.int8.onnx"]


def test_auto_exclude_stops_at_its_budget(models, tmp_path):
    (result,) = _make(models, tmp_path, planted=True, kinds=("int8",), auto_exclude=1)
    assert len(result.auto_excluded) == 1 and result.auto_excluded[0] in (A, B)
    assert result.settings["exclude"] == result.auto_excluded
    assert _quantized_modules(result.path) == set(MODULES) - set(result.auto_excluded)
    json.dumps(result.to_manifest(), allow_nan=False)


def test_explicit_exclude_fixes_the_planted_outlier(models, tmp_path):
    (result,) = _make(models, tmp_path, planted=True, kinds=("int8",),
                      int8=Int8Settings(exclude=(A, B)))
    assert result.passed, result.failures
    assert result.auto_excluded == []
    assert _quantized_modules(result.path) == {"features.0", "classifier"}


# ---------------------------------------------------------------------------------------------
# bad options


@pytest.mark.parametrize("kind, options", [
    ("int8", {"int8": Int8Settings(exclude=("nope",))}),
    ("int8", {"int8": Int8Settings(exclude=("features.2", "nope"))}),
    ("fp16", {"fp16": Fp16Settings(exclude=("nope",))}),
])
def test_unknown_excluded_module_is_named(models, tmp_path, kind, options):
    with pytest.raises(InputError, match="'nope'") as info:
        _make(models, tmp_path, kinds=(kind,), **options)
    assert "features.2" not in str(info.value).split("in the model")[0]
    assert not (tmp_path / variant_file(kind)).exists()


def test_excluded_module_must_be_a_whole_path_component(models, tmp_path):
    # "feat" is a prefix of "features" but names no module
    with pytest.raises(InputError, match="'feat'"):
        _make(models, tmp_path, kinds=("int8",), int8=Int8Settings(exclude=("feat",)))


@pytest.mark.parametrize("options", [
    {"kinds": ("int4",)},
    {"kinds": ("fp16", "int4")},
    {"kinds": ("int8", "int8")},
    {"kinds": ()},
    {"sensitivity": "sometimes"},
    {"int8": Int8Settings(calibration="mse")},
])
def test_bad_variant_options(options):
    with pytest.raises(InputError):
        VariantOptions(**options)


# ---------------------------------------------------------------------------------------------
# a model whose batch dimension is fixed


def test_fixed_batch_model_with_a_set_not_a_multiple_of_its_batch(models, tmp_path):
    torch.manual_seed(0)
    net = SmallCNN().eval()
    path = _export(net, tmp_path / "fixed.onnx", batch=4, dynamic=False)
    inputs = {"input": models.judged.inputs["input"][:6]}
    with torch.no_grad():
        reference = {"output": net(torch.from_numpy(inputs["input"])).numpy()}
    judged = JudgedSet("judged", inputs, reference)
    out = tmp_path / "out"
    out.mkdir()
    (result,) = make_variants(path, out, judged=judged, options=VariantOptions(kinds=("fp16",)))
    assert result.passed and result.stats[0].samples == 6


def _external_copy(path: Path, folder: Path) -> Path:
    """``path`` saved again with every tensor in ``model.onnx.data``, as a >2 GiB model is."""
    folder.mkdir()
    target = folder / "model.onnx"
    onnx.save_model(onnx.load(str(path)), str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    return target


@pytest.mark.parametrize("sensitivity", ["never", "always"])
def test_a_model_with_external_data_gets_variants_with_external_data(models, tmp_path,
                                                                     sensitivity):
    from subnet_export.variants.convert import data_file, has_external_data

    source = _external_copy(models.good, tmp_path / "src")
    assert has_external_data(source) and not has_external_data(models.good)
    out = tmp_path / "out"
    out.mkdir()
    results = make_variants(source, out, judged=models.judged, calibration=models.calibration,
                            options=VariantOptions(sensitivity=sensitivity))
    assert sorted(os.listdir(out)) == ["model.fp16.onnx", "model.fp16.onnx.data",
                                       "model.int8.onnx", "model.int8.onnx.data"]
    (tmp_path / "single").mkdir()
    single = {r.kind: r for r in _make(models, tmp_path / "single", sensitivity="never")}
    for r in results:
        assert r.passed, (r.kind, r.failures)
        assert has_external_data(r.path)
        # the same model as the one-file route writes, its weights moved to the data file
        one_file = single[r.kind]
        assert data_file(r.path).stat().st_size <= one_file.path.stat().st_size
        np.testing.assert_allclose(r.stats[0].snr_db, one_file.stats[0].snr_db, rtol=1e-6)
        if sensitivity == "always":
            # rebuilt module by module into scratch files, the variant's data is written afresh
            assert data_file(r.path).stat().st_size < 1.05 * one_file.path.stat().st_size
