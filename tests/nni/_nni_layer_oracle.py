"""NNI 2.10's own one-shot layers as the oracle of our ``convention="nni"`` layers.

A case writes one layer twice from the same description: with NNI's ``nn`` and ``ValueChoice``
(mutated by NNI's ``MixedOperation.mutate``, as its one-shot strategies do) and with
``subnet_export.nni`` and ``se.Choice`` (through ``se.to_supernet``). NNI's weights (randomised)
are loaded into ours with a strict load, the architecture weights copied by label.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import subnet_export as se
from subnet_export.nni import layers as our_nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import nni.retiarii.nn.pytorch as nni_nn
    from nni.retiarii.oneshot.pytorch.supermodule.differentiable import (
        MixedOpDifferentiablePolicy,
    )
    from nni.retiarii.oneshot.pytorch.supermodule.operation import NATIVE_MIXED_OPERATIONS
    from nni.retiarii.oneshot.pytorch.supermodule.sampling import MixedOpPathSamplingPolicy

POLICIES = {"sampling": MixedOpPathSamplingPolicy, "differentiable": MixedOpDifferentiablePolicy}


class Single(nn.Module):
    """A space of one layer; attention layers get (query, key, value)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, *xs: torch.Tensor) -> Any:
        out = self.m(*xs)
        return out[0] if isinstance(out, tuple) else out


def nni_choice(candidates: list, label: str):
    """NNI's ValueChoice."""
    return nni_nn.ValueChoice(list(candidates), label=label)


def our_choice(candidates: list, label: str):
    """Our Choice with the same label."""
    return se.Choice(list(candidates), label=label)


def pair(a: Any, b: Any) -> Any:
    """The tuple ``(a, b)`` of two choices, as an expression of NNI's or of ours."""
    if isinstance(a, se.ChoiceExpr):
        return se.compose(lambda x, y: (x, y), a, b)
    from nni.nas.nn.pytorch.choice import ValueChoiceX
    return ValueChoiceX(lambda x, y: (x, y), "({}, {})", [a, b])


@dataclass(frozen=True)
class Case:
    """One layer: ``make(nn, choice)`` writes it; ``inputs(v)`` its input for values ``v``."""

    name: str
    make: Callable[[Any, Callable], nn.Module]
    inputs: Callable[[dict[str, Any]], tuple[torch.Tensor, ...]]
    strategies: tuple[str, ...] = ("sampling", "differentiable")


def nni_mixed(module: nn.Module, strategy: str, memo: dict | None = None) -> nn.Module:
    """NNI's mixed operation of ``module`` (one of its NATIVE_MIXED_OPERATIONS)."""
    for op in NATIVE_MIXED_OPERATIONS:
        if op.bound_type is type(module):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return op.mutate(module, "m", {} if memo is None else memo,
                                 {"mixed_op_sampling": POLICIES[strategy]})
    raise TypeError(type(module))


def randomise_nni(op: nn.Module, seed: int) -> None:
    """Random weights, norm statistics and (not one-hot) architecture weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in op.state_dict(keep_vars=True).items():
            if t.is_floating_point():
                fresh = torch.randn(t.shape, generator=gen)
                if name.endswith("running_var"):
                    fresh = fresh.abs() + 0.25
                t.copy_(fresh if "_arch_alpha" in name else fresh * 0.5)


def load_nni_into(ours: nn.Module, op: nn.Module) -> None:
    """Load NNI's state dict into our supernet module (strict), arch weights by label."""
    state = {k: v for k, v in op.state_dict().items() if not k.startswith("_arch_alpha.")}
    ours.load_state_dict(state, strict=False)
    missing = set(ours.state_dict()) - set(state)
    assert all(k.startswith("_arch_alpha.") for k in missing), missing
    assert list(k for k in ours.state_dict() if not k.startswith("_arch_alpha.")) == list(state)
    for label in getattr(ours, "_alpha_labels", ()):
        with torch.no_grad():
            ours.alpha(label).copy_(op._arch_alpha[label])
    ours.load_state_dict({**state, **{k: v for k, v in ours.state_dict().items()
                                      if k.startswith("_arch_alpha.")}}, strict=True)


def build_pair(case: Case, strategy: str, seed: int = 0):
    """(NNI's path-sampling op, NNI's op of ``strategy``, our supernet ``Single``), in eval mode.

    All three hold the same weights; NNI's differentiable op has no path of its own, so the
    path-sampling op is the reference of every path.
    """
    torch.manual_seed(seed)
    op = nni_mixed(case.make(nni_nn, nni_choice), strategy)
    randomise_nni(op, seed)
    path_op = nni_mixed(case.make(nni_nn, nni_choice), "sampling")
    path_op.load_state_dict({k: v for k, v in op.state_dict().items()
                             if not k.startswith("_arch_alpha.")}, strict=True)
    net = se.to_supernet(Single(case.make(our_nn, our_choice)), strategy=strategy)
    load_nni_into(net.m, op)
    return path_op.eval(), op.eval(), net.eval()


def nni_forward(op: nn.Module, arch: dict | None, *xs: torch.Tensor, double: bool = False):
    """NNI's forward on ``arch`` (None: the differentiable mixture); its float64 run too."""
    model = copy.deepcopy(op).double() if double else op
    if arch is not None:
        model.resample(memo=dict(arch))
    xs = tuple(x.double() for x in xs) if double else xs
    with torch.no_grad():
        out = model(*xs)
    return out[0] if isinstance(out, tuple) else out
