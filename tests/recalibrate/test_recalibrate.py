"""BatchNorm recalibration: exact statistics, supernet path == plain model, state restored."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from _noise import assert_within_noise, float64_path
from spaces import STRATEGIES, randomise
from torch import nn

import subnet_export as se
from subnet_export.errors import InputError
from subnet_export.recalibrate.bn import CalibrationInfo, recalibrate_bn
from subnet_export.supernet.norm import ElasticBatchNorm2d

#: Recalibrated statistics vs statistics computed here (float32 activations, float64 sums).
STAT_TOL = {"rtol": 1e-5, "atol": 1e-5}

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, ElasticBatchNorm2d)


class Plain(nn.Module):
    """Conv-BN-ReLU twice, dropout, a BatchNorm1d head: every BN kind a plain model has."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.b2 = nn.BatchNorm2d(8, momentum=None)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 5)
        self.b3 = nn.BatchNorm1d(5, momentum=0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(self.b2(self.c2(y)))
        return self.b3(self.fc(self.drop(y.mean((2, 3)))))


class TwoInputs(nn.Module):
    """Two inputs, one BN each, to check the sequence form of ``data``."""

    def __init__(self) -> None:
        super().__init__()
        self.bx = nn.BatchNorm2d(3)
        self.by = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bx(x).mean((1, 2, 3)) + self.by(y).sum(1)


class Unused(nn.Module):
    """Holds a BN that its forward never calls (like an off-path candidate)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class CalibSpace(nn.Module):
    """Elastic-width stem + BN, a layer choice whose conv candidate has its own BN, a head."""

    def __init__(self) -> None:
        super().__init__()
        w = se.Choice([4, 8], label="w")
        self.stem = se.Conv2d(3, w, 3, padding=1, bias=False)
        self.bn = se.BatchNorm2d(w)
        self.op = se.LayerChoice({
            "conv": nn.Sequential(se.Conv2d(w, w, 3, padding=1), se.BatchNorm2d(w, momentum=None)),
            "skip": nn.Identity(),
        }, label="op")
        self.head = se.Linear(w, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        return self.head(torch.relu(self.op(y)).mean((2, 3)))


def _data(n: int = 40, seed: int = 1, shape=(3, 8, 8)) -> torch.Tensor:
    # Shifted and scaled, so fresh (0, 1) statistics would be visibly wrong.
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)) * 2.0 + 0.5


def _plain(seed: int = 0) -> Plain:
    torch.manual_seed(seed)
    model = Plain()
    randomise(model, seed)
    return model


def _supernet(strategy: str = "sampling", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = se.to_supernet(CalibSpace(), strategy)
    randomise(net, seed)
    return net


def _bn_inputs(model: nn.Module, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every BN's input in one forward of the model as it is, captured by hooks."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=name: seen.__setitem__(name, args[0].detach().clone()))
        for name, m in model.named_modules() if isinstance(m, BN_TYPES)]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return seen


def _mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.mean(1), flat.var(1, unbiased=True)


def _assert_stats_are_inference_stats(model: nn.Module, *inputs: torch.Tensor) -> None:
    model.eval()
    captured = _bn_inputs(model, *inputs)
    assert captured, "no BN ran"
    modules = dict(model.named_modules())
    for name, x in captured.items():
        mean, var = _mean_var(x)
        c = mean.shape[0]
        bn = modules[name]
        torch.testing.assert_close(bn.running_mean[:c].double(), mean, **STAT_TOL, msg=name)
        torch.testing.assert_close(bn.running_var[:c].double(), var, **STAT_TOL, msg=name)


def _stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


# -- the statistics ------------------------------------------------------------------------------
def test_exact_statistics_equal_those_of_the_bn_inputs_at_inference():
    model, x = _plain(), _data()
    before = _stats(model)
    info = recalibrate_bn(model, x, batch_size=7)
    assert info.num_bn_layers == 3 and info.num_samples == 40 and info.method == "exact"
    assert not torch.allclose(before["b1.running_mean"], model.b1.running_mean)
    # Fixed point: with the new statistics in place, each BN's input over the calibration set
    # has exactly the mean and unbiased variance it now stores.
    _assert_stats_are_inference_stats(model, x)


def test_exact_is_independent_of_the_batch_size():
    a, b = _plain(), _plain()
    x = _data(50)
    recalibrate_bn(a, x, batch_size=3)
    recalibrate_bn(b, x, batch_size=64)
    for (key, sa), sb in zip(_stats(a).items(), _stats(b).values()):
        torch.testing.assert_close(sa, sb, **STAT_TOL, msg=key)


def test_one_pass_equals_training_batch_statistics_of_one_full_batch():
    model, x = _plain(), _data(30)
    reference = copy.deepcopy(model).eval()
    for m in reference.modules():  # BNs on batch statistics, dropout still off
        if isinstance(m, BN_TYPES):
            m.train()
    captured = _bn_inputs(reference, x)
    info = recalibrate_bn(model, x, batch_size=64, method="one-pass")
    assert info.method == "one-pass" and info.num_bn_layers == 3
    modules = dict(model.named_modules())
    for name, inp in captured.items():
        mean, var = _mean_var(inp)
        torch.testing.assert_close(modules[name].running_mean.double(), mean, **STAT_TOL)
        torch.testing.assert_close(modules[name].running_var.double(), var, **STAT_TOL)


def test_multi_input_data_as_a_sequence():
    model = TwoInputs()
    x, y = _data(20), torch.randn(20, 4) * 3 + 1
    info = recalibrate_bn(model, [x, y.numpy()], batch_size=6)
    assert info.num_bn_layers == 2
    _assert_stats_are_inference_stats(model, x, y)


# -- supernet path ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", [{"w": 4, "op": "conv"}, {"w": 8, "op": "skip"}])
def test_supernet_path_then_materialize_equals_recalibrating_the_plain_model(strategy, arch):
    net, x, probe = _supernet(strategy), _data(), _data(6, seed=9)
    plain_direct = se.materialize(copy.deepcopy(net), arch)
    recalibrate_bn(plain_direct, x, batch_size=8)

    with se.fixed_arch(net, arch):
        info = recalibrate_bn(net, x, batch_size=8)
    assert info.num_bn_layers == (2 if arch["op"] == "conv" else 1)
    plain = se.materialize(net, arch).eval()
    with torch.no_grad():
        with se.fixed_arch(net, arch):
            path = net.eval()(probe)
        out, direct = plain(probe), plain_direct.eval()(probe)
    oracle = float64_path(net, arch, probe)
    assert_within_noise(out, path, oracle, what="plain after recalibrating the supernet path")
    assert_within_noise(direct, path, oracle, what="plain recalibrated directly")
    _assert_stats_are_inference_stats(plain, x)


def test_only_the_active_channels_of_the_supernet_change():
    net, arch = _supernet(), {"w": 4, "op": "skip"}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with se.fixed_arch(net, arch):
        recalibrate_bn(net, _data())
    after = net.state_dict()
    for key in ("bn.running_mean", "bn.running_var"):
        assert not torch.equal(after[key][:4], state[key][:4]), f"{key}: active part unchanged"
        assert torch.equal(after[key][4:], state[key][4:]), f"{key}: inactive channels changed"
    changed = [k for k in state if k not in ("bn.running_mean", "bn.running_var")
               and not torch.equal(after[k], state[k])]
    assert not changed, f"statistics or weights off the active path changed: {changed}"


# -- state restored ----------------------------------------------------------------------------
def test_modes_momentum_and_counters_are_restored_and_dropout_is_off():
    model = _plain().train()
    model.b2.eval()  # a mixed state must come back as it was
    modes = {n: m.training for n, m in model.named_modules()}
    momenta = [model.b1.momentum, model.b2.momentum, model.b3.momentum]
    counters = {k: v.clone() for k, v in _stats(model).items() if "num_batches" in k}
    params = {k: v.clone() for k, v in model.named_parameters()}
    x = _data()
    recalibrate_bn(model, x)
    first = _stats(model)
    recalibrate_bn(model, x)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert [model.b1.momentum, model.b2.momentum, model.b3.momentum] == [0.1, None, 0.3]
    assert momenta == [0.1, None, 0.3]
    for key, value in counters.items():
        assert torch.equal(model.state_dict()[key], value), key
    for key, value in params.items():
        assert torch.equal(dict(model.named_parameters())[key], value), key
    # Dropout(0.5) on would make two runs differ and the fixed point fail.
    for key, value in _stats(model).items():
        torch.testing.assert_close(value, first[key], **STAT_TOL, msg=key)
    _assert_stats_are_inference_stats(copy.deepcopy(model), x)


def test_supernet_counter_and_elastic_momentum_untouched():
    net = _supernet()
    conv_bn = net.op.conv[1]
    nbt = conv_bn.num_batches_tracked.clone()
    with se.fixed_arch(net, {"w": 8, "op": "conv"}):
        recalibrate_bn(net, _data())
    assert torch.equal(conv_bn.num_batches_tracked, nbt)
    assert conv_bn.args["momentum"] is None


# -- sampling ------------------------------------------------------------------------------------
def test_seeded_subsampling_is_deterministic():
    x = _data(60)
    runs = []
    for seed in (3, 3, 4):
        model = _plain()
        info = recalibrate_bn(model, x, num_samples=20, seed=seed, batch_size=8)
        assert info.num_samples == 20 and info.seed == seed
        runs.append(_stats(model))
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    assert not torch.equal(runs[0]["b1.running_mean"], runs[2]["b1.running_mean"])
    more = recalibrate_bn(_plain(), x, num_samples=500)
    assert more.num_samples == 60


def test_info_to_json():
    info = recalibrate_bn(_plain(), _data(10), batch_size=4, seed=2)
    data = json.loads(json.dumps(info.to_json()))
    assert data == {"method": "exact", "num_samples": 10, "batch_size": 4, "seed": 2,
                    "num_bn_layers": 3}
    assert isinstance(info, CalibrationInfo)


# -- npz -----------------------------------------------------------------------------------------
def test_npz_prefers_the_array_named_input(tmp_path):
    x = _data(12)
    named, first = tmp_path / "named.npz", tmp_path / "first.npz"
    np.savez(named, labels=np.zeros((12, 99)), input=x.numpy())
    np.savez(first, x.numpy().astype(np.float64))
    a, b, c = _plain(), _plain(), _plain()
    recalibrate_bn(a, str(named))
    recalibrate_bn(b, first)
    recalibrate_bn(c, x)
    for key, value in _stats(c).items():
        torch.testing.assert_close(_stats(a)[key], value, **STAT_TOL, msg=key)
        torch.testing.assert_close(_stats(b)[key], value, **STAT_TOL, msg=key)


# -- user errors ---------------------------------------------------------------------------------
def _garbage(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip archive")
    return path


def _empty_npz(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    return path


def _npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, _data(4).numpy())
    return path


@pytest.mark.parametrize("model, data, kwargs, match", [
    (lambda: nn.Sequential(nn.Linear(4, 2)), lambda p: torch.randn(3, 4), {}, "no BatchNorm"),
    (_plain, lambda p: torch.zeros(0, 3, 8, 8), {}, "no samples"),
    (_plain, lambda p: [], {}, "empty"),
    (_plain, lambda p: torch.tensor(1.0), {}, "no samples"),
    (_plain, lambda p: _data(5, shape=(4, 8, 8)), {}, "cannot run"),
    (_plain, lambda p: {"x": _data(5)}, {}, "numpy array"),
    (_plain, lambda p: _garbage(p), {}, "not an .npz archive"),
    (_plain, lambda p: p / "missing.npz", {}, "does not exist"),
    (_plain, lambda p: _empty_npz(p), {}, "holds no array"),
    (_plain, lambda p: _npy(p), {}, "not an .npz"),
    (_plain, lambda p: _data(5).index_fill(0, torch.tensor([2]), float("nan")), {}, "NaN"),
    (TwoInputs, lambda p: [_data(5), torch.randn(4, 4)], {}, "disagree"),
    (_plain, lambda p: _data(5), {"batch_size": 0}, "batch_size"),
    (_plain, lambda p: _data(5), {"num_samples": 0}, "num_samples"),
    (_plain, lambda p: _data(5), {"method": "ema"}, "unknown recalibration method"),
    (Unused, lambda p: _data(5), {}, "none ran"),
])
def test_user_errors_raise_input_error(tmp_path, model, data, kwargs, match):
    with pytest.raises(InputError, match=match):
        recalibrate_bn(model(), data(tmp_path), **kwargs)


def test_a_failure_part_way_leaves_every_statistic_as_it_was():
    model = _plain()
    before = _stats(model)
    # One sample: b1 and b2 see 64 and 16 values per channel, then b3 sees one and cannot
    # have an unbiased variance, after b1 and b2 were already written.
    with pytest.raises(InputError, match="at least 2"):
        recalibrate_bn(model, _data(1))
    for key, value in _stats(model).items():
        assert torch.equal(value, before[key]), key
