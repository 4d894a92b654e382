"""The reference and its float64 oracle: computed once per run, without copying the supernet."""

from __future__ import annotations

import copy

import pytest
import torch
from _parity_models import composite
from torch import nn

import subnet_export as se
from subnet_export.arch import fixed_arch
from subnet_export.parity import backends
from subnet_export.parity.backends import Oracle, reference_outputs, reference_runs, run_float64
from subnet_export.parity.inputs import make_inputs


def _sets(inputs):
    return make_inputs(inputs, batch_sizes=(1, 3), seed=0)


@pytest.mark.parametrize("strategy", ["sampling", "differentiable"])
def test_float64_run_equals_a_float64_copy_bit_for_bit(strategy):
    net, arch, _, inputs, _ = composite(strategy)
    sets = _sets(inputs)
    model64 = copy.deepcopy(net).double().eval()
    with torch.no_grad(), fixed_arch(model64, arch):
        expected = [model64(*(t.double() for t in s.tensors)) for s in sets]
    got = run_float64(net, arch, [s.tensors for s in sets])
    assert len(got) == len(sets)
    for out, ref in zip(got, expected):
        assert out[0].dtype.name == "float64"
        assert torch.equal(torch.from_numpy(out[0]), ref)


def test_float64_run_leaves_the_module_as_it_was():
    net, arch, _, inputs, _ = composite("sampling")
    before = {k: (t.dtype, t.data_ptr()) for k, t in net.state_dict(keep_vars=True).items()}
    net.train()
    try:
        run_float64(net, arch, [s.tensors for s in _sets(inputs)])
        assert all(m.training for m in net.modules())  # the caller's flags are restored
    finally:
        net.eval()
    after = {k: (t.dtype, t.data_ptr()) for k, t in net.state_dict(keep_vars=True).items()}
    assert after == before  # same float32 tensors, same storage: nothing was cast in place


def test_the_oracle_copies_no_module_until_locating_needs_one(monkeypatch):
    net, arch, plain, inputs, _ = composite("sampling")
    sets = _sets(inputs)

    def no_copy(*args, **kwargs):
        raise AssertionError("the oracle deep-copied a module")

    monkeypatch.setattr(backends.copy, "deepcopy", no_copy)
    oracle = Oracle.build(net, arch, plain, sets)
    assert oracle.kind == "supernet-float64" and len(oracle.outputs) == len(sets)
    monkeypatch.undo()
    model64 = oracle.model()  # locating a failure asks for a float64 module of its own
    assert model64 is oracle.model() and model64 is not net
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_the_path_is_fixed_once_for_every_input_set(monkeypatch):
    net, arch, plain, inputs, _ = composite("sampling")
    sets = _sets(inputs)
    one_by_one = [reference_outputs(net, arch, plain, s.tensors) for s in sets]
    entered = []
    real = backends.fixed_arch

    def counting(*args, **kwargs):
        entered.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "fixed_arch", counting)
    together = reference_runs(net, arch, plain, [s.tensors for s in sets])
    assert entered == [net]
    assert all(torch.equal(torch.from_numpy(a[0]), torch.from_numpy(b[0]))
               for a, b in zip(together, one_by_one))
    entered.clear()
    Oracle.build(net, arch, plain, sets)
    assert entered == [net]


class _Float64Differs(nn.Module):
    """A forward that computes something else in float64: only a real float64 rerun sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = se.Linear(4, se.Choice([3, 5], label="w"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y * 1.01 if y.dtype == torch.float64 else y


def test_a_reference_that_depends_on_the_dtype_still_fails(tmp_path):
    net = se.to_supernet(_Float64Differs()).eval()
    arch = se.freeze(net, {"w": 5})
    plain = se.materialize(net, arch).eval()
    x = torch.randn(2, 4)
    result = se.export_onnx(plain, x, tmp_path / "m.onnx", arch=arch)
    report = se.validate(net, arch, plain, result.path, example_inputs=x, locate=False)
    assert report.oracle == "supernet-float64"
    assert not report.passed
    assert "from its own float64 run" in report.backend("ort-cpu").reason
