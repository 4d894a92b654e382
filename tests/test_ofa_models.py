"""models/ofa.py against Once-for-All itself: its networks, seeded, are the oracle.

OFA's published checkpoints are not needed: ``OFAMobileNetV3`` and ``OFAProxylessNASNets``
with seeded random weights,
random BatchNorm statistics and random kernel transforms has the same state dict format, and
its own ``set_active_subnet`` / ``get_active_subnet`` define what every arch computes.
"""

from __future__ import annotations

import functools
import random
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _noise import assert_within_noise, run_float64
from torch import nn

import subnet_export as se
from models.ofa import (
    MOBILENETV3,
    PROXYLESS,
    OFAMobileNetV3Space,
    OFAProxylessSpace,
    labels_to_ofa_arch,
    mobilenetv3_w10,
    mobilenetv3_w12,
    ofa_arch_to_labels,
    proxyless_w13,
)
from subnet_export.errors import ArchError
from subnet_export.loading import load_checkpoint, read_state_dict

# ofa.utils imports its ImageNet data loaders (torchvision, PIL), which the networks never use.
sys.modules.setdefault("ofa.utils.my_dataloader", types.ModuleType("ofa.utils.my_dataloader"))
try:
    from ofa.imagenet_classification.elastic_nn.networks import (
        OFAMobileNetV3,
        OFAProxylessNASNets,
    )
except ImportError as err:  # a hard requirement of these tests, never a skip
    raise ImportError(f"tests/test_ofa_models.py needs the `ofa` package ({err}); install the "
                      "test extra") from err

ROOT = Path(__file__).resolve().parents[1]
#: name -> (OFA's network class, width_mult, our factory, the block layout)
NETS = {"w10": (OFAMobileNetV3, 1.0, mobilenetv3_w10, MOBILENETV3),
        "w12": (OFAMobileNetV3, 1.2, mobilenetv3_w12, MOBILENETV3),
        "p13": (OFAProxylessNASNets, 1.3, proxyless_w13, PROXYLESS)}
KS, ES, DS = (3, 5, 7), (3, 4, 6), (2, 3, 4)


def image_like(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images plus noise (noise alone averages out in the global pooling)."""
    gen = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.randn(batch, 3, 4, 4, generator=gen), size=(size, size),
                        mode="bilinear")
    return low + 0.5 * torch.randn(batch, 3, size, size, generator=gen)


def randomise(ofa: nn.Module, seed: int, layout=MOBILENETV3) -> None:
    """Seeded BatchNorm affine parameters, kernel transforms away from identity, and BatchNorm
    statistics estimated on a few of OFA's own paths, then perturbed per channel.

    Made-up statistics alone do not fit the activations of a 20-block net: its outputs would
    not depend on the input, and any parity check would pass on them. The statistics are taken
    at the resolution the tests run at: taken at 64 pixels, they let the widest path's
    activations grow to 1e7 by the last block, where two float32 runs that differ only in
    summation order (one thread or two) drift apart by 1e4 noise floors on one image.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in ofa.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, t in ofa.state_dict(keep_vars=True).items():
            if name.endswith("_matrix"):
                t.add_(0.1 * torch.randn(t.shape, generator=gen))
        for bn in bns:
            bn.weight.copy_(0.5 + torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration paths
        ofa.train()
        for case in ("max", "min", "mixed"):
            arch = ofa_arch(case, layout)
            ofa.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
            ofa(image_like(4, 224, seed))
        ofa.eval()
        for bn in bns:
            bn.momentum = 0.1
            std = bn.running_var.sqrt()
            bn.running_mean.add_(0.1 * std * torch.randn(std.shape, generator=gen))
            bn.running_var.mul_(0.7 + 0.7 * torch.rand(std.shape, generator=gen))


@functools.cache
def pair(net: str) -> tuple[nn.Module, nn.Module]:
    """(OFA's supernet, ours with OFA's state dict loaded strictly), both in eval mode."""
    cls, mult, factory, layout = NETS[net]
    torch.manual_seed(0)
    ofa = cls(ks_list=list(KS), expand_ratio_list=list(ES), depth_list=list(DS),
              width_mult=mult)
    randomise(ofa, seed=1, layout=layout)
    ours = factory()
    ours.load_state_dict(ofa.state_dict(), strict=True)
    return ofa.eval(), ours.eval()


def ofa_arch(case: str, layout=MOBILENETV3) -> dict:
    """An OFA arch dict for ``layout``; a fixed stage's depth is its length, as OFA samples it."""
    n, rng = layout.n_slots, random.Random(int(case[6:]) if case.startswith("random") else 0)
    mixed = {KS: (3, 5, 7, 5), ES: (6, 3, 4, 6), DS: (2, 3, 4, 3, 4)}  # all, in every stage
    pick = {"max": lambda c, i: max(c), "min": lambda c, i: min(c),
            "mixed": lambda c, i: mixed[c][i % len(mixed[c])]}.get(
                case, lambda c, i: rng.choice(c))
    ks, es = [pick(KS, j) for j in range(n)], [pick(ES, j) for j in range(n)]
    return {"ks": ks, "e": es, "d": [pick(DS, s) if layout.elastic(s) else slots
                                     for s, slots in enumerate(layout.stages)]}


def labels(net: str, case: str) -> dict:
    """Our labels of ``ofa_arch(case)`` for the network ``net`` (a key of NETS)."""
    return ofa_arch_to_labels(ofa_arch(case, NETS[net][3]), NETS[net][3])


def ofa_outputs(ofa: nn.Module, arch: dict, x: torch.Tensor):
    """(OFA's supernet path, its float64 run, OFA's extracted subnet, its float64 run)."""
    ofa.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
    sub = ofa.get_active_subnet(preserve_weight=True).eval()
    with torch.no_grad():
        return ofa(x), run_float64(ofa, x), sub(x), run_float64(sub, x), sub


# -- the state dict -------------------------------------------------------------------------------
@pytest.mark.parametrize("net", sorted(NETS))
def test_ofa_state_dict_loads_strictly(net, tmp_path):
    ofa, ours = pair(net)
    theirs, mine = ofa.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs)
    assert all(mine[k].shape == theirs[k].shape for k in theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # OFA's published checkpoint format, read as the CLI reads --weights
    torch.save({"state_dict": theirs}, tmp_path / "ofa.pth")
    fresh = NETS[net][2](seed=3)
    fresh.load_state_dict(read_state_dict(tmp_path / "ofa.pth"), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("net, n_bns, eps", [("w10", 2 + 2 + 20 * 3, 1e-5),
                                              ("p13", 2 + 2 + 21 * 3, 1e-3)])
def test_batchnorm_settings_are_ofas(net, n_bns, eps):
    ofa, ours = pair(net)
    ofa_bns = [m for m in ofa.modules() if isinstance(m, nn.BatchNorm2d)]
    plain = se.materialize(ours, se.freeze(ours, labels(net, "max")))
    bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(ofa_bns) == n_bns
    assert {(m.eps, m.momentum) for m in bns} == {(m.eps, m.momentum) for m in ofa_bns}
    assert {m.eps for m in bns} == {eps}


# -- parity ---------------------------------------------------------------------------------------
CASES = ["max", "min", "mixed", "random0", "random1", "random2"]
#: (network, arch, resolution): every arch kind at 224, some at 160 (a full-size forward in
#: float64 takes a while on a small CPU).
PARITY = [*(("w10", case, 224) for case in CASES[:5]), ("w10", "mixed", 160),
          ("w10", "random2", 160), ("w12", "max", 224), ("w12", "random0", 224),
          ("w12", "min", 160), ("w12", "random1", 160), ("p13", "max", 224),
          ("p13", "random0", 224), ("p13", "min", 160), ("p13", "mixed", 160)]


@pytest.mark.parametrize("net, case, resolution", PARITY)
def test_subnet_matches_ofa(net, case, resolution):
    ofa, ours = pair(net)
    arch = se.freeze(ours, labels(net, case))
    x = image_like(2, resolution, seed=resolution)
    path, path64, sub_out, sub64, sub = ofa_outputs(ofa, ofa_arch(case, NETS[net][3]), x)
    # the bar of test_models.py: the input reaches the logits (far above the noise floor)
    assert float(sub_out.std(dim=0).max()) > 2e-5, "the output ignores the input"
    plain = se.materialize(ours, arch)
    with torch.no_grad(), se.fixed_arch(ours, arch):
        mine = {"supernet path": ours(x), "plain model": plain(x)}
    for what, out in mine.items():
        assert_within_noise(out, path, path64, what=f"{what} vs OFA's supernet")
        assert_within_noise(out, sub_out, sub64, what=f"{what} vs OFA's subnet")
    # The plain model is OFA's subnet tensor for tensor (up to the dynamic wrappers' nesting).
    flat = {k.replace(".conv.conv.", ".conv.").replace(".bn.bn.", ".bn."): tuple(v.shape)
            for k, v in plain.state_dict().items()}
    assert flat == {k: tuple(v.shape) for k, v in sub.state_dict().items()}


def test_onnx_export_matches_ofa(tmp_path):
    import onnxruntime as ort

    ofa, ours = pair("w10")
    arch = se.freeze(ours, ofa_arch_to_labels(ofa_arch("mixed")))
    plain = se.materialize(ours, arch)
    result = se.export_onnx(plain, image_like(1, 224), tmp_path / "ofa.onnx", arch=arch)
    assert result.unused == () and result.initializer_bytes == result.state_bytes
    x = image_like(2, 224, seed=5)
    _, _, sub_out, sub64, _ = ofa_outputs(ofa, ofa_arch("mixed"), x)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {result.input_names[0]: x.numpy()})
    assert_within_noise(torch.from_numpy(out), sub_out, sub64, what="onnxruntime vs OFA")


# -- arch translation -----------------------------------------------------------------------------
@pytest.mark.parametrize("net, n_labels, n_depths", [("w10", 45, 5), ("p13", 47, 5)])
def test_arch_round_trips(net, n_labels, n_depths):
    _, ours = pair(net)
    layout = NETS[net][3]
    specs = se.search_space(ours)
    depths = {lb: s.kind for lb, s in specs.items() if lb.startswith("d.")}
    assert len(specs) == n_labels and len(depths) == n_depths
    assert set(depths.values()) == {"depth"}
    for case in CASES:
        ours_ = ofa_arch_to_labels(ofa_arch(case, layout), layout)
        assert set(ours_) == set(specs)
        se.freeze(ours, ours_)  # valid
        assert labels_to_ofa_arch(ours_, layout) == ofa_arch(case, layout)
        assert ofa_arch_to_labels(labels_to_ofa_arch(ours_, layout), layout) == ours_


@pytest.mark.parametrize("layout", [MOBILENETV3, PROXYLESS], ids=["mbv3", "proxyless"])
def test_arch_slots_beyond_depth_are_ignored(layout):
    arch = ofa_arch("min", layout)  # depth 2: slots 2, 3 of every elastic stage are inactive
    arch["ks"][3], arch["e"][2] = 9, None
    got = ofa_arch_to_labels(arch, layout)
    assert got["ks.3"] == 3 and got["e.2"] == 3
    n, n_stages = layout.n_slots, len(layout.stages)
    assert ofa_arch_to_labels({"ks": 5, "e": 4, "d": 3}, layout) == ofa_arch_to_labels(
        {"ks": [5] * n, "e": [4] * n, "d": [3] * n_stages}, layout)  # OFA's val2list


def test_proxyless_last_stage_is_fixed():
    """OFA clips the depth of the one-block last stage (``min(1, d)``): any depth gives it."""
    arch = ofa_arch("max", PROXYLESS)
    assert arch["d"][-1] == 1 and len(arch["ks"]) == 21
    got = ofa_arch_to_labels(arch, PROXYLESS)
    assert "d.5" not in got and got["ks.20"] == 7
    for d in DS:
        assert ofa_arch_to_labels({**arch, "d": [4] * 5 + [d]}, PROXYLESS) == got
    arch["ks"][20] = 4  # the last block is always active
    with pytest.raises(ArchError) as info:
        ofa_arch_to_labels(arch, PROXYLESS)
    assert info.value.label == "ks.20"


@pytest.mark.parametrize("layout, change, label", [
    *((MOBILENETV3, change, label) for change, label in [
        ({"ks": [3] * 19}, "ks"), ({"e": [3] * 21}, "e"), ({"d": [2] * 4}, "d"),
        ({"d": "2"}, "d"), ({"ks": [9] + [3] * 19}, "ks.0"), ({"e": [3] * 19 + [5]}, "e.19"),
        ({"d": [2, 2, 2, 2, 5]}, "d.4"), ({"d": [2, 2, 2, 2, True]}, "d.4")]),
    *((PROXYLESS, change, label) for change, label in [  # 21, 21 and 6 values
        ({"ks": [3] * 20}, "ks"), ({"e": [3] * 22}, "e"), ({"d": [2] * 5}, "d"),
        ({"ks": [3] * 20 + [9]}, "ks.20"), ({"d": [2] * 5 + [5]}, "d.5"),
        ({"d": [2] * 5 + [0]}, "d.5"), ({"d": [2] * 4 + [1, 1]}, "d.4")]),
])
def test_arch_translation_rejects(layout, change, label):
    arch = {**ofa_arch("max", layout), **change}
    with pytest.raises(ArchError) as info:
        ofa_arch_to_labels(arch, layout)
    assert info.value.label == label
    with pytest.raises(ArchError, match="'d'"):
        ofa_arch_to_labels({"ks": 3, "e": 3})
    with pytest.raises(ArchError, match="missing"):
        labels_to_ofa_arch({"ks.0": 3})


def canonical(arch: dict, layout) -> dict:
    """``arch`` with the slots beyond each stage's depth at the smallest candidates: what a
    ``net.config``, which has no such slots, translates to."""
    ofa = labels_to_ofa_arch(arch, layout)
    start = 0
    for d, slots in zip(ofa["d"], layout.stages):
        for j in range(start + min(d, slots), start + slots):
            ofa["ks"][j], ofa["e"][j] = KS[0], ES[0]
        start += slots
    return ofa_arch_to_labels(ofa, layout)


@pytest.mark.parametrize("net", sorted(NETS))
def test_net_config_translates_like_the_arch_dict(net):
    ofa, ours = pair(net)
    layout = NETS[net][3]
    for case in ["max", "min", "mixed", "random0", "random1"]:
        given = ofa_arch(case, layout)
        ofa.set_active_subnet(**given)
        config = ofa.get_active_subnet(preserve_weight=True).config
        got = ours.translate_arch(config)
        assert got == canonical(ofa_arch_to_labels(given, layout), layout)
        frozen = se.freeze(ours, config)
        assert dict(frozen) == got and frozen.source == config


def test_net_config_of_another_network_is_refused():
    configs = {}
    for net in ("w12", "p13"):
        ofa, _ = pair(net)
        ofa.set_active_subnet(**ofa_arch("max", NETS[net][3]))
        configs[net] = ofa.get_active_subnet(preserve_weight=True).config
    _, w10 = pair("w10")
    with pytest.raises(ArchError, match="channels"):
        se.freeze(w10, configs["w12"])  # OFA's MobileNetV3 at width 1.2
    with pytest.raises(ArchError, match="'ProxylessNASNets' network"):
        se.freeze(w10, configs["p13"])
    deeper = {**configs["p13"], "blocks": configs["p13"]["blocks"] + configs["p13"]["blocks"][-1:]}
    with pytest.raises(ArchError, match="stage 5 of the net.config has 2 blocks"):
        se.freeze(pair("p13")[1], deeper)


def old_ofa_keys(state: dict) -> dict:
    """The keys of OFA's older releases: ``MobileInvertedResidualBlock.mobile_inverted_conv``."""
    return {re.sub(r"^(blocks\.\d+)\.conv\.", r"\1.mobile_inverted_conv.", k): v
            for k, v in state.items()}


@pytest.mark.parametrize("net", ["w10", "p13"])
def test_translate_state_dict_renames_older_checkpoints(net, tmp_path):
    ofa, ours = pair(net)
    theirs = ofa.state_dict()
    assert ours.translate_state_dict(theirs) is None  # a current checkpoint: nothing to do
    old = old_ofa_keys(theirs)
    assert sum(".mobile_inverted_conv." in k for k in old) > len(old) // 2
    state, note = ours.translate_state_dict(old)
    assert list(state) == list(theirs) and all(state[k] is theirs[k] for k in theirs)
    assert "'.mobile_inverted_conv.' to '.conv.'" in note and "\n" not in note
    assert ours.translate_state_dict({"head.weight": theirs["first_conv.conv.weight"]}) is None
    # end to end, as --weights reads an older OFA checkpoint
    torch.save({"state_dict": old}, tmp_path / "old.pth")
    fresh = NETS[net][2](seed=3)
    loaded = load_checkpoint(fresh, tmp_path / "old.pth")
    assert loaded.note is not None and "mobile_inverted_conv" in loaded.note
    assert all(torch.equal(fresh.state_dict()[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("space, n_blocks", [(OFAMobileNetV3Space, 21), (OFAProxylessSpace, 22)])
def test_space_is_plain_placeholders_until_converted(space, n_blocks):
    net = se.to_supernet(space())
    assert isinstance(net.blocks, se.supernet.choices.MixedRepeat)
    assert len(net.blocks._modules) == n_blocks


@pytest.mark.parametrize("net", ["w10", "p13"])
def test_freeze_takes_ofa_arch_dicts_and_keeps_them(net):
    _, ours = pair(net)
    layout = NETS[net][3]
    given = {**ofa_arch("mixed", layout), "r": 160}
    frozen = se.freeze(ours, given)
    assert dict(frozen) == dict(se.freeze(ours, labels(net, "mixed")))
    assert frozen.source == given
    assert se.freeze(ours, labels(net, "min")).source is None  # our labels
    with pytest.raises(ArchError, match="unknown key 'kss'"):
        se.freeze(ours, {**ofa_arch("min", layout), "kss": [3]})
    with pytest.raises(ArchError, match="e.*valid values"):
        se.freeze(ours, {**ofa_arch("min", layout), "e": [5] * layout.n_slots})
    with pytest.raises(ArchError, match="list of"):  # the other network's arch
        se.freeze(ours, ofa_arch("min", PROXYLESS if layout is MOBILENETV3 else MOBILENETV3))


def test_cli_exports_an_ofa_checkpoint_and_arch_unchanged(tmp_path):
    import json
    import subprocess

    import onnxruntime as ort

    ofa, _ = pair("w10")
    torch.save({"state_dict": ofa.state_dict()}, tmp_path / "ofa.pth")
    given = ofa_arch("random3")
    (tmp_path / "arch.json").write_text(json.dumps(given))
    script = Path(sys.executable).with_name("subnet-export")
    out = tmp_path / "b"
    proc = subprocess.run(
        [str(script), "onnx", f"{ROOT / 'models' / 'ofa.py'}:mobilenetv3_w10", "--weights",
         str(tmp_path / "ofa.pth"), "--arch", str(tmp_path / "arch.json"), "--out", str(out),
         "--input-shape", "1x3x160x160", "--batch", "2", "--providers", "CPU", "--json"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["arch_as_given"] == given
    assert json.loads((out / "arch.json").read_text()) == ofa_arch_to_labels(given)
    # the bundle computes what OFA's own subnet computes
    x = image_like(2, 160, seed=7)
    _, _, sub_out, sub64, _ = ofa_outputs(ofa, given, x)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert_within_noise(torch.from_numpy(got), sub_out, sub64, what="bundle vs OFA")


# -- OFA's recorded outputs as the reference (--reference-outputs) ------------------------------
def test_ofa_recorded_outputs_pass_as_external_and_a_changed_ofa_fails(tmp_path):
    import numpy as np

    ofa, ours = pair("w10")
    given = ofa_arch("mixed")
    arch = se.freeze(ours, ofa_arch_to_labels(given))
    plain = se.materialize(ours, arch).eval()
    result = se.export_onnx(plain, image_like(1, 96), tmp_path / "ofa.onnx",
                            exporter="torchscript", arch=arch)
    x = image_like(2, 96, seed=9)
    ofa.set_active_subnet(**given)
    with torch.no_grad():
        np.savez(tmp_path / "ref.npz", input=x.numpy(), output=ofa(x).numpy())
        bn = next(m for m in ofa.modules() if isinstance(m, nn.BatchNorm2d))
        bn.eps, eps = 1e-3, bn.eps  # a slightly different framework
        changed = {"input": x.numpy(), "output": ofa(x).numpy()}
        bn.eps = eps
    kw = dict(example_inputs=image_like(1, 96), batch_sizes=(1,),
              providers=["CPUExecutionProvider"], locate=False)
    report = se.validate(ours, arch, plain, result, reference_outputs=tmp_path / "ref.npz", **kw)
    assert report.passed and report.backend("external").status == "passed", report.format_table()
    report = se.validate(ours, arch, plain, result, reference_outputs=changed, **kw)
    assert report.backend("external").status == "failed" and not report.passed
    assert report.backend("ort-cpu").status == "passed"
