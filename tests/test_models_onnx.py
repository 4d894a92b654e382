"""Every shipped space exports (dynamo) and validates on onnxruntime CPU, arch by arch.

The smallest arch of each space runs in the fast suite; the largest and seeded random archs
are marked ``slow`` (CI runs them). Exports are shared between tests through a module cache.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import subnet_export as se
from models import extreme_arch, get_space, list_spaces


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test of this module runs with one torch thread (see conftest.py)."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(name, case) -> (supernet, arch, plain, ExportResult)``, each exported once."""
    root = tmp_path_factory.mktemp("zoo-onnx")

    @functools.cache
    def supernet(name):
        return get_space(name).build(seed=0)

    @functools.cache
    def get(name: str, case: str):
        net = supernet(name)
        if case in ("smallest", "largest"):
            arch = se.freeze(net, extreme_arch(net, "min" if case == "smallest" else "max"))
        else:
            arch = se.sample_arch(net, int(case.removeprefix("random")))
        plain = se.materialize(net, arch)
        example = torch.randn(*get_space(name).input_shape)
        result = se.export_onnx(plain, example, Path(root) / f"{name}-{case}.onnx", arch=arch)
        return net, arch, plain, result

    return get


def check_export(exported, name: str, case: str) -> None:
    net, arch, plain, result = exported(name, case)
    assert result.exporter == "dynamo" and result.path.is_file()
    # the graph holds exactly the plain model's weights: no dead branch on either side
    assert result.unused == ()
    assert result.initializer_bytes == result.state_bytes
    example = torch.randn(*get_space(name).input_shape)
    report = se.validate(net, arch, plain, result.path, example_inputs=example,
                         batch_sizes=(1, 4), providers=["CPUExecutionProvider"], locate=False)
    assert report.oracle == "supernet-float64"
    torch_cpu = report.backend("torch-cpu")
    assert torch_cpu.status == "passed", report.format_table()
    ort = report.backend("ort-cpu")
    assert ort.status == "passed", f"{name}/{case}:\n{report.format_table()}"
    assert report.passed


@pytest.mark.parametrize("name", list_spaces())
def test_smallest_arch_exports_and_validates(exported, name):
    check_export(exported, name, "smallest")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["largest", "random0", "random1"])
@pytest.mark.parametrize("name", list_spaces())
def test_arch_exports_and_validates(exported, name, case):
    check_export(exported, name, case)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_spaces())
def test_export_is_deterministic(exported, name, tmp_path):
    _, arch, plain, first = exported(name, "smallest")
    again = se.export_onnx(plain, torch.randn(*get_space(name).input_shape),
                           tmp_path / "again.onnx", arch=arch)
    assert again.path.read_bytes() == first.path.read_bytes()
