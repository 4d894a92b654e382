"""One model space built twice: with NNI 2.10's ``nn`` and with ``subnet_export.nni``.

A test writes its space once as ``make(nn, model_wrapper)``; :func:`build` calls it with NNI's
modules and with ours from the same seed, and wraps NNI's model the way NNI's one-shot
strategies do (``ClassificationModule`` inside ``RandomSamplingLightningModule`` or
``DartsLightningModule``). :func:`load_nni_weights` copies NNI's supernet weights into ours
(the architecture weights by label), so both compute the same thing.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from _noise import assert_within_noise
from torch import nn

import subnet_export as se
import subnet_export.nni as our_nn
from subnet_export.nni import _labels
from subnet_export.nni import model_wrapper as our_wrapper

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import nni.retiarii.nn.pytorch as nni_nn
    from nni.nas.utils import misc as nni_misc
    from nni.retiarii import model_wrapper as nni_wrapper
    from nni.retiarii.evaluator.pytorch.lightning import ClassificationModule
    from nni.retiarii.oneshot.pytorch.differentiable import DartsLightningModule
    from nni.retiarii.oneshot.pytorch.sampling import RandomSamplingLightningModule

STRATEGIES = {"sampling": RandomSamplingLightningModule, "differentiable": DartsLightningModule}
Make = Callable[[Any, Callable], nn.Module]


def reset_default_labels() -> None:
    """Restart both frameworks' ``default_N`` counters (process-wide in each)."""
    nni_misc.reset_uid("default")
    _labels.reset_uid("default")


def nni_space(make: Make, seed: int = 0) -> nn.Module:
    """NNI's model space of ``make``, weights drawn with ``seed``."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(nni_nn, nni_wrapper)


def our_space(make: Make, seed: int = 0) -> nn.Module:
    """Our model space of ``make``, weights drawn with ``seed``."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(our_nn, our_wrapper)


def nni_oneshot(space: nn.Module, strategy: str) -> Any:
    """NNI's one-shot Lightning module of ``space``, as NNI's strategies build it."""
    logging.getLogger("nni").setLevel(logging.WARNING)
    evaluator = ClassificationModule()
    evaluator.running_mode = "oneshot"
    evaluator.set_model(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return STRATEGIES[strategy](evaluator).eval()


@dataclass
class Twin:
    """NNI's one-shot module and our supernet of one space and strategy."""

    nni: Any
    ours: nn.Module
    strategy: str

    @property
    def nni_model(self) -> nn.Module:
        return self.nni.model.model

    def nni_keys(self) -> list[str]:
        """NNI's supernet state dict keys (the model's), architecture weights left out."""
        return [k for k in self.nni_model.state_dict() if "_arch_alpha" not in k]

    def our_keys(self) -> list[str]:
        return [k for k in self.ours.state_dict() if "_arch_alpha" not in k]


def build(make: Make, strategy: str = "sampling", seed: int = 0) -> Twin:
    """Both supernets of ``make`` (``default_N`` counters reset first), NNI's weights in ours."""
    reset_default_labels()
    theirs = nni_oneshot(nni_space(make, seed), strategy)
    reset_default_labels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = se.to_supernet(our_space(make, seed), strategy).eval()
    twin = Twin(theirs, ours, strategy)
    load_nni_weights(twin)
    return twin


def nni_alphas(module: Any) -> dict[str, torch.Tensor]:
    """``{label: alpha}`` of NNI's differentiable supernet modules."""
    out: dict[str, torch.Tensor] = {}
    for m in module.nas_modules:
        alpha = getattr(m, "_arch_alpha", None)
        if isinstance(alpha, nn.ParameterDict):
            out.update(alpha.items())
        elif alpha is not None:
            out[m.label] = alpha
    return out


def load_nni_weights(twin: Twin) -> None:
    """NNI's weights into ours: every non-alpha key as it is, the alphas by label."""
    state = {k: v for k, v in twin.nni_model.state_dict().items() if "_arch_alpha" not in k}
    own = {k: v for k, v in twin.ours.state_dict().items() if "_arch_alpha" in k}
    twin.ours.load_state_dict({**own, **state}, strict=True)
    alphas = nni_alphas(twin.nni)
    with torch.no_grad():
        for m in twin.ours.modules():
            for label in getattr(m, "_alpha_labels", ()):
                m.alpha(label).copy_(alphas[label])


def set_alphas(twin: Twin, seed: int, scale: float = 1.0) -> None:
    """Seeded normal architecture weights in NNI's supernet, copied into ours."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, alpha in sorted(nni_alphas(twin.nni).items()):
            alpha.copy_(scale * torch.randn(alpha.shape, generator=gen))
    load_nni_weights(twin)


def as_json(arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` as an arch file holds it."""
    return json.loads(json.dumps(dict(arch)))


def spec_list(twin: Twin) -> tuple[list[tuple[str, list]], list[tuple[str, list]]]:
    """(NNI's, ours): ``[(label, candidates)]`` in search-space order."""
    theirs = [(lb, list(s.values)) for lb, s in twin.nni.search_space_spec().items()]
    ours = [(lb, list(s.candidates)) for lb, s in se.search_space(twin.ours).items()]
    return theirs, ours


def nni_run(module: nn.Module, *x: Any) -> tuple[Any, Any]:
    """(float32 output, float64 output) of NNI's module."""
    with torch.no_grad():
        out = module(*x)
        out64 = copy.deepcopy(module).double()(*(t.double() for t in x))
    return out, out64


def assert_path_equals_nni(twin: Twin, arch: Mapping[str, Any], *x: torch.Tensor) -> None:
    """Our supernet path and plain model of ``arch`` compute NNI's supernet on ``x``."""
    out, out64 = nni_run(twin.nni, *x)
    frozen = se.freeze(twin.ours, as_json(arch))
    plain = se.materialize(twin.ours, frozen).eval()
    with torch.no_grad(), se.fixed_arch(twin.ours, frozen):
        path = twin.ours(*x)
    with torch.no_grad():
        flat = plain(*x)
    assert_within_noise(path, out, out64, what=f"supernet path {dict(arch)}")
    assert_within_noise(flat, out, out64, what=f"plain model {dict(arch)}")
