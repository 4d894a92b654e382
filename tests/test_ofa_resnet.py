"""models/ofa_resnet.py against Once-for-All's ``OFAResNets`` itself, seeded, as the oracle.

OFA's published ``ofa_resnet50`` checkpoint is not needed: ``OFAResNets`` of the same
configuration with seeded weights and BatchNorm statistics estimated on its own paths has the
same state dict format, and its ``set_active_subnet`` / ``get_active_subnet`` define what every
arch computes. ResNet50 is heavy on a small CPU: few archs run at 224, the others at 128.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _noise import assert_within_noise, run_float64
from torch import nn

import subnet_export as se
from models._ofa_resnet_blocks import BASE_DEPTHS, DEPTHS, EXPAND_RATIOS, STEM_MID_WIDTHS
from models.ofa import resnet50
from models.ofa_resnet import (
    N_BLOCKS,
    OFAResNetSpace,
    config_to_resnet_arch,
    labels_to_resnet_arch,
    resnet_arch_to_labels,
)
from subnet_export.errors import ArchError
from subnet_export.loading import load_checkpoint, read_state_dict

# ofa.utils imports its ImageNet data loaders (torchvision, PIL), which the networks never use.
sys.modules.setdefault("ofa.utils.my_dataloader", types.ModuleType("ofa.utils.my_dataloader"))
try:
    from ofa.imagenet_classification.elastic_nn.networks import OFAResNets
except ImportError as err:  # a hard requirement of these tests, never a skip
    raise ImportError(f"tests/test_ofa_resnet.py needs the `ofa` package ({err}); install the "
                      "test extra") from err

ROOT = Path(__file__).resolve().parents[1]
#: OFA's model zoo ``ofa_resnet50``
CONFIG = {"dropout_rate": 0, "depth_list": [0, 1, 2], "expand_ratio_list": [0.2, 0.25, 0.35],
          "width_mult_list": [0.65, 0.8, 1.0]}
N_DEPTHS, N_WIDTHS = 1 + len(BASE_DEPTHS), 2 + len(BASE_DEPTHS)


def image_like(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images plus noise (noise alone averages out in the global pooling)."""
    gen = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.randn(batch, 3, 4, 4, generator=gen), size=(size, size),
                        mode="bilinear")
    return low + 0.5 * torch.randn(batch, 3, size, size, generator=gen)


def ofa_arch(case: str, ofa: nn.Module) -> dict:
    """OFA's arch dict: the largest, the smallest, or ``randomN`` from its own sampler."""
    if case == "max":
        return {"d": [max(DEPTHS)] * N_DEPTHS, "e": [max(EXPAND_RATIOS)] * N_BLOCKS,
                "w": [2] * N_WIDTHS}
    if case == "min":
        return {"d": [min(DEPTHS)] * N_DEPTHS, "e": [min(EXPAND_RATIOS)] * N_BLOCKS,
                "w": [0] * N_WIDTHS}
    state = random.getstate()
    random.seed(int(case[6:]))
    try:
        return ofa.sample_active_subnet()
    finally:
        random.setstate(state)


def randomise(ofa: nn.Module, seed: int) -> None:
    """Seeded BatchNorm affine parameters and statistics estimated on a few of OFA's own paths,
    then perturbed per channel (made-up statistics would make the output ignore the input)."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in ofa.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration paths
        ofa.train()
        for case in ("max", "min", "random0"):
            ofa.set_active_subnet(**ofa_arch(case, ofa))
            ofa(image_like(4, 64, seed))
        ofa.eval()
        for bn in bns:
            bn.momentum = 0.1
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=gen))
            bn.running_var.mul_(0.7 + 0.7 * torch.rand(std.shape, generator=gen))


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    """(OFA's supernet, ours with OFA's state dict loaded strictly), both in eval mode."""
    torch.manual_seed(0)
    ofa = OFAResNets(**CONFIG)
    randomise(ofa, seed=1)
    ours = resnet50()
    ours.load_state_dict(ofa.state_dict(), strict=True)
    return ofa.eval(), ours.eval()


def ofa_subnet(ofa: nn.Module, arch: dict) -> nn.Module:
    ofa.set_active_subnet(**arch)
    return ofa.get_active_subnet(preserve_weight=True).eval()


def canonical(labels: dict) -> dict:
    """``labels`` with the ratios of inactive blocks at 0.2 and ``w.0`` at the first index of
    its width: what a ``net.config``, which has neither, translates to."""
    arch = labels_to_resnet_arch(labels)
    j = 0
    for s, base in enumerate(BASE_DEPTHS):
        for i in range(base + max(DEPTHS)):
            arch["e"][j] = arch["e"][j] if i < base + arch["d"][s + 1] else EXPAND_RATIOS[0]
            j += 1
    arch["w"][0] = STEM_MID_WIDTHS.index(STEM_MID_WIDTHS[arch["w"][0]])
    return resnet_arch_to_labels(arch)


def flat(state: dict) -> dict:
    """Keys without OFA's dynamic wrappers' nesting (the subnet's plain layers have none)."""
    return {k.replace(".conv.conv.", ".conv.").replace(".bn.bn.", ".bn.")
            .replace(".linear.linear.", ".linear."): v for k, v in state.items()}


# -- the state dict -------------------------------------------------------------------------------
def test_ofa_state_dict_loads_strictly(pair, tmp_path):
    ofa, ours = pair
    theirs, mine = ofa.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs)
    assert all(mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k])
               for k in theirs)
    torch.save({"state_dict": theirs}, tmp_path / "ofa.pth")  # OFA's checkpoint format
    fresh = resnet50(seed=3)
    fresh.load_state_dict(read_state_dict(tmp_path / "ofa.pth"), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], theirs[k]) for k in theirs)


def test_batchnorm_settings_are_ofas(pair):
    ofa, ours = pair
    ofa_bns = [m for m in ofa.modules() if isinstance(m, nn.BatchNorm2d)]
    plain = se.materialize(ours, se.freeze(ours, ofa_arch("max", ofa)))
    bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(ofa_bns) == 3 + 3 * N_BLOCKS + len(BASE_DEPTHS)
    assert {(m.eps, m.momentum) for m in bns} == {(m.eps, m.momentum) for m in ofa_bns}
    assert {m.eps for m in bns} == {1e-5}


# -- parity ---------------------------------------------------------------------------------------
#: every arch kind; the full resolution (about 40 s each here) in the slow sweep
PARITY = [pytest.param("max", 224, marks=pytest.mark.slow),
          pytest.param("random0", 224, marks=pytest.mark.slow), ("min", 224), ("min", 128),
          ("random1", 128)]


@pytest.mark.parametrize("case, resolution", PARITY)
def test_subnet_matches_ofa(pair, case, resolution):
    ofa, ours = pair
    given = ofa_arch(case, ofa)
    arch = se.freeze(ours, given)
    sub = ofa_subnet(ofa, given)
    x = image_like(2, resolution, seed=resolution)
    with torch.no_grad():
        sub_out = sub(x)
    sub64 = run_float64(sub, x)
    assert float(sub_out.std(dim=0).max()) > 2e-5, "the output ignores the input"
    plain = se.materialize(ours, arch)
    with torch.no_grad(), se.fixed_arch(ours, arch):
        mine = {"supernet path": ours(x), "plain model": plain(x)}
    for what, out in mine.items():
        assert_within_noise(out, sub_out, sub64, what=f"{what} vs OFA's subnet")
    # The plain model is OFA's subnet tensor for tensor (up to the dynamic wrappers' nesting).
    assert {k: v.shape for k, v in flat(plain.state_dict()).items()} == {
        k: v.shape for k, v in sub.state_dict().items()}


def test_cli_exports_from_an_ofa_checkpoint_and_net_config(pair, tmp_path):
    import onnxruntime as ort

    ofa, ours = pair
    torch.save({"state_dict": ofa.state_dict()}, tmp_path / "ofa.pth")
    sub = ofa_subnet(ofa, ofa_arch("random3", ofa))
    config = json.loads(json.dumps(sub.config))
    (tmp_path / "arch.json").write_text(json.dumps(config))
    out = tmp_path / "b"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("subnet-export")), "onnx",
         f"{ROOT / 'models' / 'ofa.py'}:resnet50", "--weights", str(tmp_path / "ofa.pth"),
         "--arch", str(tmp_path / "arch.json"), "--out", str(out), "--input-shape",
         "1x3x128x128", "--batch", "2", "--providers", "CPU", "--json"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["arch_as_given"] == config
    assert json.loads((out / "arch.json").read_text()) == ours.translate_arch(config)
    x = image_like(2, 128, seed=7)
    with torch.no_grad():
        sub_out = sub(x)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert_within_noise(torch.from_numpy(got), sub_out, run_float64(sub, x),
                        what="bundle vs OFA")


# -- arch translation -----------------------------------------------------------------------------
CASES = ["max", "min", *(f"random{i}" for i in range(6))]


def test_arch_round_trips(pair):
    ofa, ours = pair
    specs = se.search_space(ours)
    assert len(specs) == N_DEPTHS + N_BLOCKS + N_WIDTHS
    assert {lb for lb, s in specs.items() if s.kind == "depth"} == {
        f"d.{s}" for s in range(N_DEPTHS)}
    for case in CASES:
        given = ofa_arch(case, ofa)
        labels = resnet_arch_to_labels(given)
        assert set(labels) == set(specs)
        assert dict(se.freeze(ours, given)) == dict(se.freeze(ours, labels))
        assert se.freeze(ours, given).source == given
        assert labels_to_resnet_arch(labels) == given  # OFA samples d[0] in {0, 2}
    # d[0] below the largest depth skips the stem's residual layer, as in OFA
    skip = {**ofa_arch("max", ofa), "d": [1] + [2] * 4}
    assert resnet_arch_to_labels(skip)["d.0"] == 0
    assert len(ofa_subnet(ofa, skip).input_stem) == 2
    assert resnet_arch_to_labels({"d": 1, "e": 0.25, "w": 2}) == resnet_arch_to_labels(
        {"d": [1] * N_DEPTHS, "e": [0.25] * N_BLOCKS, "w": [2] * N_WIDTHS})  # OFA's val2list


def test_net_config_translates_like_the_arch_dict(pair):
    ofa, ours = pair
    for case in ["max", "min", "random4", "random5"]:
        given = ofa_arch(case, ofa)
        config = ofa_subnet(ofa, given).config
        got = ours.translate_arch(config)
        assert got == canonical(resnet_arch_to_labels(given))
        assert dict(se.freeze(ours, config)) == got
        # the arch of the config is the same subnet
        plain = se.materialize(ours, se.freeze(ours, got))
        assert len(plain.blocks) == len(config["blocks"])


@pytest.mark.parametrize("change, label", [
    ({"d": [2] * 4}, "d"), ({"e": [0.2] * 17}, "e"), ({"w": [0] * 7}, "w"),
    ({"d": [2, 2, 2, 3, 2]}, "d.3"), ({"w": [0, 0, 3, 0, 0, 0]}, "w.2"),
    ({"e": [0.3] + [0.2] * 17}, "e.0"), ({"e": [0.2] * 17 + [1]}, "e.17"),
    ({"d": [2, 2, 2, 2, True]}, "d.4"),
])
def test_arch_translation_rejects(pair, change, label):
    arch = {**ofa_arch("max", pair[0]), **change}
    with pytest.raises(ArchError) as info:
        resnet_arch_to_labels(arch)
    assert info.value.label == label
    inactive = {**ofa_arch("min", pair[0])}
    inactive["e"] = [0.2, 0.2, None, 9] + [0.2] * (N_BLOCKS - 4)  # block 2, 3: beyond depth
    assert resnet_arch_to_labels(inactive)["e.3"] == 0.2
    with pytest.raises(ArchError, match="unknown key 'ks'"):
        se.freeze(pair[1], {**ofa_arch("min", pair[0]), "ks": [3]})
    with pytest.raises(ArchError, match="missing"):
        labels_to_resnet_arch({"d.0": 1})


def test_net_config_rejects_other_networks(pair):
    ofa = pair[0]
    config = ofa_subnet(ofa, ofa_arch("random1", ofa)).config
    with pytest.raises(ArchError, match="not the net.config"):
        config_to_resnet_arch({**config, "name": "MobileNetV3"})
    with pytest.raises(ArchError, match="not the net.config"):  # another network's config
        pair[1].translate_arch({"name": "MobileNetV3", "blocks": config["blocks"]})
    wider = json.loads(json.dumps(config))
    wider["blocks"][0]["out_channels"] = 300
    with pytest.raises(ArchError, match="300 channels"):
        config_to_resnet_arch(wider)
    largest = ofa_subnet(ofa, ofa_arch("max", ofa)).config
    deeper = {**largest, "blocks": largest["blocks"] + largest["blocks"][-1:]}
    with pytest.raises(ArchError, match="stage 3 of the net.config has 5 blocks") as info:
        config_to_resnet_arch(deeper)
    assert info.value.label == "d.4"


def test_translate_state_dict_renames_plain_resnet_keys(pair, tmp_path):
    ofa, ours = pair
    theirs = ofa.state_dict()
    assert ours.translate_state_dict(theirs) is None  # nothing to do
    plain_keys = flat(theirs)  # the keys of OFA's static ResNets, which OFA's loader takes
    assert set(plain_keys).isdisjoint(theirs)
    state, note = ours.translate_state_dict(plain_keys)
    assert list(state) == list(theirs) and "wrappers" in note
    assert all(state[k] is theirs[k] for k in theirs)
    assert ours.translate_state_dict({"fc.weight": theirs[next(iter(theirs))]}) is None
    # end to end, as --weights reads it
    torch.save({"state_dict": plain_keys}, tmp_path / "plain.pth")
    fresh = resnet50(seed=3)
    loaded = load_checkpoint(fresh, tmp_path / "plain.pth")
    assert loaded.note is not None and loaded.note.startswith(note)
    assert all(torch.equal(fresh.state_dict()[k], theirs[k]) for k in theirs)


def test_space_is_plain_placeholders_until_converted():
    net = se.to_supernet(OFAResNetSpace())
    assert isinstance(net.blocks, se.supernet.choices.MixedRepeat)
    assert len(net.blocks._modules) == N_BLOCKS and len(net.input_stem._modules) == 3
