"""The supernet-module contract (after NNI 2.x's one-shot supermodules) and the tree walkers.

A supernet module owns one or more labels. It can be re-sampled, exported, and frozen into the
plain module of its active path, whose ``state_dict()`` equals what ``_save_to_sub_state_dict``
writes. The walkers below apply that contract to a whole module tree.
"""

from __future__ import annotations

import contextvars
import copy
import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..space.choice import ChoiceExpr, evaluate, leaves
from ..space.spec import ParameterSpec

__all__ = [
    "BaseSuperNetModule",
    "STRATEGIES",
    "choice_attributes",
    "freeze_child",
    "freeze_module",
    "iter_supernet_modules",
    "sub_state_dict",
]

#: sampling: SPOS / OFA style, one path at a time. differentiable: DARTS style, softmax over paths.
STRATEGIES = ("sampling", "differentiable")

# Where freeze_module currently is: (plain module path, labels that led there, trace or None).
_FREEZE_CTX: contextvars.ContextVar[tuple[str, tuple[str, ...], dict | None]] = (
    contextvars.ContextVar("subnet_export_freeze", default=("", (), None))
)


class BaseSuperNetModule(nn.Module):
    """Base class of every supernet module.

    Subclasses implement :meth:`search_space_spec`, :meth:`freeze` and
    :meth:`_save_to_sub_state_dict`; sampling and export come for free from the spec. The current
    architecture of the module lives in ``self._arch`` (``{label: value}`` for its own labels).
    """

    def __init__(self, strategy: str = "sampling") -> None:
        super().__init__()
        self.strategy = strategy
        self._arch: dict[str, Any] = {}
        # Differentiable modules run the mixed (weighted) forward unless an arch is fixed.
        self._fixed = False

    # -- the one-shot contract -----------------------------------------------------------------
    def search_space_spec(self) -> dict[str, ParameterSpec]:
        """``{label: ParameterSpec}`` of the labels this module owns (same keys as export)."""
        raise NotImplementedError

    def resample(self, memo: Mapping[str, Any], rng: random.Random | None = None) -> dict:
        """Pick a new path. Labels already in ``memo`` are honoured; returns what was sampled."""
        rng = rng or random.Random()
        new = {}
        for label, spec in self.search_space_spec().items():
            if label in memo:
                self._arch[label] = memo[label]
            else:
                value = rng.choice(spec.values())
                self._arch[label] = new[label] = value
        return new

    def export(self, memo: Mapping[str, Any]) -> dict:
        """The module's final choice for labels not in ``memo``.

        Sampling: the current sample. Differentiable: the argmax of the architecture weights.
        """
        current = self.current_arch()
        return {lb: current[lb] for lb in self.search_space_spec() if lb not in memo}

    def export_probs(self, memo: Mapping[str, Any]) -> dict:
        """``{label: {candidate: probability}}`` for labels not in ``memo``.

        Sampling modules sample uniformly; differentiable modules report softmax(alpha).
        """
        out = {}
        for label, spec in self.search_space_spec().items():
            if label in memo:
                continue
            probs = self._label_probs(label)
            if probs is None:
                probs = [1.0 / len(spec.candidates)] * len(spec.candidates)
            out[label] = {str(c): float(p) for c, p in zip(spec.candidates, probs)}
        return out

    @classmethod
    def mutate(
        cls, module: nn.Module, name: str, memo: dict, mutate_kwargs: dict
    ) -> nn.Module | None:
        """Return the supernet module replacing ``module`` (a placeholder), or None to pass."""
        return None

    def freeze(self, memo: Mapping[str, Any]) -> nn.Module:
        """The plain module of the active path, on the meta device (no memory allocated)."""
        raise NotImplementedError

    def _save_to_sub_state_dict(self, dest: dict, prefix: str, keep_vars: bool) -> None:
        """Write the active path's tensors, sliced and copied, under the plain module's keys."""
        raise NotImplementedError

    # -- state --------------------------------------------------------------------------------
    def set_arch(self, arch: Mapping[str, Any]) -> None:
        """Make ``arch`` (a complete, validated arch) this module's current path."""
        self._arch = {lb: arch[lb] for lb in self.search_space_spec()}

    def current_arch(self) -> dict[str, Any]:
        """The values the forward uses now: the sample, the fixed arch, or the argmax."""
        if self.strategy == "differentiable" and not self._fixed:
            return {lb: self._argmax(lb) for lb in self.search_space_spec()}
        return dict(self._arch)

    # Differentiable modules override these two; sampling modules have no weights.
    def _label_probs(self, label: str) -> list[float] | None:
        return None

    def _argmax(self, label: str) -> Any:
        return self._arch[label]


# -- tree walkers ------------------------------------------------------------------------------
def iter_supernet_modules(root: nn.Module) -> Iterator[tuple[str, BaseSuperNetModule]]:
    """Every supernet module in ``root`` (also inside unchosen candidates), in module order."""
    for name, module in root.named_modules(remove_duplicate=True):
        if isinstance(module, BaseSuperNetModule):
            yield name, module


def choice_attributes(root: nn.Module) -> Iterator[tuple[str, nn.Module, str, ChoiceExpr]]:
    """``(module path, module, attribute, choice)`` for Choices kept as plain attributes."""
    for path, module in root.named_modules(remove_duplicate=True):
        for attr, expr in module.__dict__.get("_se_choice_attrs", {}).items():
            yield path, module, attr, expr


def sub_state_dict(module: nn.Module, keep_vars: bool = False) -> OrderedDict[str, torch.Tensor]:
    """The state dict of the active path, keyed as the plain (materialized) module keys it.

    Supernet modules write their sliced tensors; other modules their own persistent parameters
    and buffers. Every tensor is an independent copy, so holding the result never keeps the
    supernet's storage alive. ``keep_vars`` is accepted for signature parity with
    ``nn.Module.state_dict`` and keeps the ``requires_grad`` flag of the copies.
    """
    dest: OrderedDict[str, torch.Tensor] = OrderedDict()
    collect_sub_state(module, dest, "", keep_vars)
    return dest


def collect_sub_state(module: nn.Module, dest: dict, prefix: str, keep_vars: bool) -> None:
    """Add ``module``'s sub state dict to ``dest`` under ``prefix`` (used by containers too)."""
    if isinstance(module, BaseSuperNetModule):
        module._save_to_sub_state_dict(dest, prefix, keep_vars)
        return
    local: OrderedDict[str, Any] = OrderedDict()
    module._save_to_state_dict(local, prefix, True)
    for key, value in local.items():
        dest[key] = _copy_tensor(value, keep_vars)
    for name, child in module._modules.items():
        if child is not None:
            collect_sub_state(child, dest, f"{prefix}{name}.", keep_vars)


def _copy_tensor(value: Any, keep_vars: bool) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    out = value.detach().clone(memory_format=torch.contiguous_format)
    if keep_vars and isinstance(value, nn.Parameter):
        out.requires_grad_(value.requires_grad)
    return out


def copy_slice(value: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of a slice: a view would drag the whole supernet tensor into a save."""
    return value.detach().clone(memory_format=torch.contiguous_format)


def freeze_module(module: nn.Module, memo: Mapping[str, Any],
                  trace: dict | None = None) -> nn.Module:
    """The plain skeleton (meta device) of ``module`` under the complete arch ``memo``.

    User containers are shallow-copied with their class and ``forward`` kept; supernet modules
    are replaced by their :meth:`BaseSuperNetModule.freeze`; Choices kept as attributes become
    their values. ``trace``, when given, receives ``{plain module path: [labels]}``.
    """
    token = _FREEZE_CTX.set(("", (), trace))
    try:
        return _freeze(module, memo)
    finally:
        _FREEZE_CTX.reset(token)


def freeze_child(child: nn.Module, memo: Mapping[str, Any], name: str | None,
                 labels=()) -> nn.Module:
    """Freeze ``child`` of the supernet module being frozen, placed at ``name`` (None: in place).

    ``labels`` are the labels that chose this child (a layer choice's label, a repeat's depth).
    """
    path, outer, trace = _FREEZE_CTX.get()
    sub = path if name is None else (f"{path}.{name}" if path else name)
    token = _FREEZE_CTX.set((sub, outer + tuple(labels), trace))
    try:
        return _freeze(child, memo)
    finally:
        _FREEZE_CTX.reset(token)


def _freeze(module: nn.Module, memo: Mapping[str, Any]) -> nn.Module:
    path, labels, trace = _FREEZE_CTX.get()
    if isinstance(module, BaseSuperNetModule):
        own = tuple(module.search_space_spec())
        if trace is not None:
            trace[path] = sorted(set(labels + own))
        token = _FREEZE_CTX.set((path, labels + own, trace))
        try:
            plain = module.freeze(memo)
        finally:
            _FREEZE_CTX.reset(token)
        return plain
    if trace is not None and labels:
        trace.setdefault(path, sorted(set(labels)))
    new = copy.copy(module)
    new._parameters = {
        k: None if p is None else nn.Parameter(
            torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for k, p in module._parameters.items()
    }
    new._buffers = {
        k: None if b is None else torch.empty_like(b, device="meta")
        for k, b in module._buffers.items()
    }
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                  "_state_dict_hooks", "_load_state_dict_pre_hooks"):
        if hooks in module.__dict__:
            setattr(new, hooks, OrderedDict(getattr(module, hooks)))
    attrs = new.__dict__.pop("_se_choice_attrs", {})
    new.__dict__.pop("_se_choice_leaves", None)
    for attr, expr in attrs.items():
        setattr(new, attr, evaluate(expr, memo))
    if trace is not None and attrs:
        # A module shaped by a Choice attribute (a head count in a reshape) is traced too.
        own = {lb for expr in attrs.values() for lb in leaves(expr)}
        trace[path] = sorted(set(trace.get(path, ())) | set(labels) | own)
    new._modules = {}
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else freeze_child(child, memo, name)
    return new


class DifferentiableMixin:
    """Architecture weights (alpha) for differentiable modules, shared by label through ``memo``.

    Alphas live in a ``ParameterList`` (labels may hold dots, which ``ParameterDict`` refuses);
    modules that share a label share the very same ``nn.Parameter``.
    """

    def init_alphas(self, sizes: Mapping[str, int], memo: dict) -> None:
        """Create (or reuse from ``memo``) one alpha vector per label."""
        shared = memo.setdefault("_alphas", {})
        params = []
        for label, n in sizes.items():
            if label not in shared:
                shared[label] = nn.Parameter(torch.randn(n) * 1e-3)
            params.append(shared[label])
        self._alpha_labels = list(sizes)
        self._arch_alpha = nn.ParameterList(params)

    def alpha(self, label: str) -> nn.Parameter:
        """The alpha vector of ``label``."""
        return self._arch_alpha[self._alpha_labels.index(label)]

    def _label_probs(self, label: str) -> list[float] | None:
        if self.strategy != "differentiable":
            return None
        return torch.softmax(self.alpha(label).detach(), -1).tolist()
