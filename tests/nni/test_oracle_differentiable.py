"""NNI 2.10's differentiable one-shot supernets (DARTS) as the oracle of ours.

NNI's ``DartsLightningModule`` checkpoint holds the whole Lightning module: keys prefixed
``model.model.`` and the architecture weights (``..._arch_alpha``). Our supernet, from the same
space file with only its imports changed, loads it as it is, runs NNI's mixture, exports NNI's
argmax, and its subnet for an arch is what NNI computes on that path. NNI's discrete model of a
DARTS supernet is its sampling supernet with the same weights on the arch (``fixed_arch`` has no
loader for ``nn.Cell``); where NNI's mixture under one-hot alphas is exactly that path, NNI's
DARTS output itself is compared too.
"""

from __future__ import annotations

import json

import _oracle as oracle
import numpy as np
import pytest
import torch
from _noise import assert_within_noise

import subnet_export as se

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning:nni.*")]

DIFF = oracle.spaces_for("differentiable")
#: spaces whose NNI mixture under one-hot alphas is the discrete path. Not the transformer: NNI's
#: DARTS runs LayerNorm and MultiheadAttention at their largest width whatever the alphas.
ONE_HOT_EXACT = ["cnn", "darts", "nasbench201"]
#: seeded one-hot archs per space
N_ARCHS = 10


def discrete(name: str, cases, arch, x):
    """NNI's path of ``arch`` with the DARTS supernet's weights: (float32, float64) outputs."""
    twin = cases.twin(name)
    oracle.set_sample(twin, arch)
    return oracle.nni_run(twin, x)


# -- NNI alone: what the comparisons rest on ------------------------------------------------------
@pytest.mark.parametrize("name", ONE_HOT_EXACT)
def test_nni_one_hot_mixture_is_its_discrete_path(name, cases):
    module = cases.nni(name, "differentiable")
    x = oracle.SPACES[name].inputs(4)
    for seed in range(3):
        arch = oracle.as_json(oracle.set_one_hot(module, seed))
        out, out64 = oracle.nni_run(module, x)
        assert float(out.std(dim=0).max()) > 2e-5, "the output ignores the input"
        ref, ref64 = discrete(name, cases, arch, x)
        assert_within_noise(out, ref, ref64, what=f"NNI DARTS one-hot vs NNI's path {arch}")


def test_nni_mixture_of_layernorm_width_is_not_its_path(cases):
    """Why the transformer is compared with NNI's discrete path only (see ONE_HOT_EXACT)."""
    module = cases.nni("transformer-2heads", "differentiable")
    x = oracle.SPACES["transformer-2heads"].inputs(4)
    seed = next(s for s in range(20) if oracle.set_one_hot(module, s)["embed"] == 4)
    arch = oracle.as_json(oracle.set_one_hot(module, seed))
    out, _ = oracle.nni_run(module, x)
    ref, _ = discrete("transformer-2heads", cases, arch, x)
    assert float((out - ref).abs().max()) > 1e-2


# -- the checkpoint, the mixture, the export ------------------------------------------------------
@pytest.mark.parametrize("name", DIFF)
def test_darts_checkpoint_loads_as_saved(name, cases):
    module = cases.nni(name, "differentiable")
    oracle.set_random_alphas(module, 0)
    state = module.state_dict()
    assert any("_arch_alpha" in k for k in state) and all(
        k.startswith("model.model.") for k in state)
    ours = cases.reload(name, "differentiable")  # strict, as --weights loads it
    assert set(oracle.as_json(se.freeze(ours))) == set(module.search_space_spec())


@pytest.mark.parametrize("name", DIFF)
def test_own_export_is_nnis_argmax(name, cases):
    module = cases.nni(name, "differentiable")
    for seed in range(4):
        oracle.set_random_alphas(module, seed)
        ours = cases.reload(name, "differentiable")
        assert oracle.as_json(se.freeze(ours)) == oracle.as_json(module.export()), seed


# Not the factory cell of the DARTS space: NNI ranks its edges by raw alpha across edges, which
# per-edge probabilities do not keep, so export_probs() cannot give its export().
@pytest.mark.parametrize("name", [n for n in DIFF if n != "darts"])
def test_export_probs_form_is_nnis_export(name, cases):
    module = cases.nni(name, "differentiable")
    oracle.set_random_alphas(module, 7)
    ours = cases.reload(name, "differentiable")
    probs = oracle.as_json(module.export_probs())
    assert dict(se.freeze(ours, probs)) == dict(se.freeze(ours, oracle.as_json(module.export())))


@pytest.mark.parametrize("name", DIFF)
def test_mixture_forward_equals_nnis(name, cases):
    """NNI's DARTS mixture (no arch fixed) under trained-looking alphas."""
    module = cases.nni(name, "differentiable")
    x = oracle.SPACES[name].inputs(4, seed=3)
    for seed in range(3):
        oracle.set_random_alphas(module, 10 + seed)
        ours = cases.reload(name, "differentiable")
        out, out64 = oracle.nni_run(module, x)
        with torch.no_grad():
            got = ours(x)
        assert_within_noise(got, out, out64, what=f"our mixture vs NNI's, seed {seed}")


# -- parity of the subnet over one-hot archs ------------------------------------------------------
@pytest.mark.parametrize("name", DIFF)
def test_one_hot_subnet_equals_nni(name, cases):
    module = cases.nni(name, "differentiable")
    x = oracle.SPACES[name].inputs(4, seed=1)
    for seed in range(N_ARCHS):
        arch = oracle.as_json(oracle.set_one_hot(module, seed))
        ours = cases.reload(name, "differentiable")
        assert oracle.as_json(se.freeze(ours)) == arch, f"own export, seed {seed}"
        refs = {"NNI's path": discrete(name, cases, arch, x)}
        if name in ONE_HOT_EXACT:
            refs["NNI's DARTS"] = oracle.nni_run(module, x)
        for what, got in oracle.ours_run(ours, arch, x).items():
            for ref_name, (ref, ref64) in refs.items():
                assert_within_noise(got, ref, ref64,
                                    what=f"{what} vs {ref_name}, seed {seed}, {arch}")


#: (space, arch seed, arch given, exporter): exports through se.export_subnet (the CLI's
#: pipeline); no arch means the supernet's own export of NNI's alphas
BUNDLES = [("cnn", 3, False, "dynamo"), ("transformer-2heads", 1, True, "torchscript"),
           ("darts", 2, True, "torchscript")]


@pytest.mark.parametrize("name, seed, given, exporter", BUNDLES)
def test_bundle_equals_nni(name, seed, given, exporter, cases, tmp_path):
    module = cases.nni(name, "differentiable")
    arch = oracle.as_json(oracle.set_one_hot(module, seed))
    ours = cases.reload(name, "differentiable")
    if given:
        arch = json.loads(oracle.write_arch(module.export(), tmp_path / "arch.json").read_text())
    space = oracle.SPACES[name]
    x = space.inputs(3, seed=seed)
    ref, ref64 = discrete(name, cases, arch, x)
    np.savez(tmp_path / "ref.npz", input=x.numpy(), output=ref.numpy())
    result = se.export_subnet(ours, tmp_path / "b", input_shapes=[space.input_shape],
                              arch=arch if given else None, batch=2, exporter=exporter,
                              providers=["CPUExecutionProvider"],
                              reference_outputs=tmp_path / "ref.npz")
    assert result.report.passed, result.report.format_table()
    assert result.report.backend("external").status == "passed"
    assert json.loads((tmp_path / "b" / "arch.json").read_text()) == arch
    got = oracle.onnx_run(tmp_path / "b" / "model.onnx", x)
    assert_within_noise(got, ref, ref64, what=f"bundle vs NNI's path, {arch}")


def test_darts_checkpoint_into_a_sampling_supernet(cases, tmp_path):
    """A DARTS checkpoint given to a sampling supernet: the alphas are left out, the weights
    load, and the arch's subnet is NNI's path."""
    name = "cnn"
    module = cases.nni(name, "differentiable")
    arch = oracle.as_json(oracle.set_one_hot(module, 8))
    weights = oracle.save_state_dict(module, tmp_path / "darts.pth")
    ours = oracle.our_supernet(name, tmp_path, "sampling", weights)
    x = oracle.SPACES[name].inputs(4, seed=4)
    ref, ref64 = discrete(name, cases, arch, x)
    for what, got in oracle.ours_run(ours, arch, x).items():
        assert_within_noise(got, ref, ref64, what=f"{what} vs NNI's path, {arch}")
