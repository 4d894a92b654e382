"""Float tolerances in tests: the verdict's own rule, the float32 noise floor (``rule.py``).

Two float32 computations of the same thing are judged by how far the one under test is from a
float64 run of the reference, in units of the reference's own distance to it, never by a bare
``atol``: that holds on every CPU's kernels, and still catches an error of a few roundings.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import subnet_export as se
from subnet_export.parity.rule import DEFAULT_NOISE_FACTOR, noise_check

__all__ = ["NOISE_FACTOR", "assert_within_noise", "float64_path", "run_float64"]

#: The verdict's default CPU factor.
NOISE_FACTOR = DEFAULT_NOISE_FACTOR


def _numpy(value: Any) -> list[np.ndarray]:
    items = value if isinstance(value, (tuple, list)) else [value]
    return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            for t in items]


def run_float64(module: nn.Module, *inputs: torch.Tensor) -> Any:
    """``module`` (a float64 copy of it, in its current mode) on float64 copies of ``inputs``."""
    model = copy.deepcopy(module).double()
    with torch.no_grad():
        return model(*(t.double() if t.is_floating_point() else t for t in inputs))


def float64_path(supernet: nn.Module, arch: Mapping[str, Any], *inputs: torch.Tensor) -> Any:
    """The supernet path of ``arch`` run in float64: the oracle of the supernet's float32 run."""
    model = copy.deepcopy(supernet).double()
    with torch.no_grad(), se.fixed_arch(model, arch):
        return model(*(t.double() if t.is_floating_point() else t for t in inputs))


def assert_within_noise(got: Any, reference: Any, oracle: Any, *, factor: float = NOISE_FACTOR,
                        what: str = "output") -> float:
    """Assert ``got`` is within ``factor`` noise floors of ``oracle``; return the worst ratio.

    Args:
        got: the float32 result under test (a tensor or a tuple of them).
        reference: the float32 reference it should equal.
        oracle: ``reference`` computed in float64.
        factor: the largest ratio allowed.
        what: named in the failure message.
    """
    mine, ref, orc = _numpy(got), _numpy(reference), _numpy(oracle)
    assert len(mine) == len(ref) == len(orc), f"{what}: {len(mine)} outputs, expected {len(ref)}"
    worst = 0.0
    for k, (m, r, o) in enumerate(zip(mine, ref, orc)):
        assert m.shape == r.shape, f"{what}[{k}]: shape {m.shape} != {r.shape}"
        check = noise_check(what, [m], [r], [o], factor)
        assert check.passed, (f"{what}[{k}]: error {check.ratio:.3g}x the float32 noise floor "
                              f"(> x{factor:g}; {check.error:.3g} against {check.floor:.3g})")
        worst = max(worst, check.ratio)
    return worst
