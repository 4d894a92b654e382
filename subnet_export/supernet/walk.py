"""Walking a supernet tree: its modules, its search space, its sub state dict, its plain skeleton.

Each walker applies the contract of ``base.py`` to every supernet module of a tree and treats
every other module as a container of the user's, kept with its class and ``forward``.
"""

from __future__ import annotations

import contextvars
import copy
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import SearchSpaceError
from ..space.choice import leaves
from ..space.placeholders import Placeholder
from ..space.spec import ParameterSpec
from .attrs import choice_attributes, freeze_attributes
from .base import BaseSuperNetModule

__all__ = [
    "collect_specs",
    "collect_sub_state",
    "copy_slice",
    "freeze_child",
    "freeze_module",
    "iter_supernet_modules",
    "label_modules",
    "slicing_conventions",
    "sub_state_dict",
]

# Where freeze_module currently is: (plain module path, labels that led there, trace or None).
_FREEZE_CTX: contextvars.ContextVar[tuple[str, tuple[str, ...], dict | None]] = (
    contextvars.ContextVar("subnet_export_freeze", default=("", (), None))
)


def iter_supernet_modules(root: nn.Module) -> Iterator[tuple[str, BaseSuperNetModule]]:
    """Every supernet module in ``root`` (also inside unchosen candidates), in module order."""
    for name, module in root.named_modules(remove_duplicate=True):
        if isinstance(module, BaseSuperNetModule):
            yield name, module


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
    own = freeze_attributes(new, memo)
    if trace is not None and own:
        # A module shaped by a Choice attribute (a head count in a reshape) is traced too.
        trace[path] = sorted(set(trace.get(path, ())) | set(labels) | own)
    new._modules = {}
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else freeze_child(child, memo, name)
    return new


def collect_specs(supernet: nn.Module) -> dict[str, ParameterSpec]:
    """``{label: ParameterSpec}`` of every label in the supernet, in module order.

    A repeat's depth label may also be read in an expression (the next stage's input width
    depends on whether a stage exists): a ``depth`` spec and a ``value`` spec with the same
    candidates are one label, reported as ``depth``.

    Raises:
        SearchSpaceError: placeholders are left (``to_supernet`` was not called), or one label
            has two different specs.
    """
    specs: dict[str, ParameterSpec] = {}

    def add(spec: ParameterSpec, where: str) -> None:
        prev = specs.get(spec.label)
        if prev is not None and _depth_read_as_value(prev, spec):
            if spec.kind == "depth":  # keep the label's place in module order
                specs[spec.label] = spec
            return
        if prev is not None and prev != spec:
            raise SearchSpaceError(
                f"label {spec.label!r} at {where!r} is {spec.kind} {list(spec.candidates)}, "
                f"but elsewhere {prev.kind} {list(prev.candidates)}; "
                "one label must mean one choice everywhere")
        specs.setdefault(spec.label, spec)

    for path, module in supernet.named_modules():
        if isinstance(module, Placeholder):
            raise SearchSpaceError(
                f"{type(module).__name__} at {path or '<root>'!r} is still a placeholder; "
                "call se.to_supernet(space) first")
        if isinstance(module, BaseSuperNetModule):
            for spec in module.search_space_spec().values():
                add(spec, path)
    for path, _, attr, expr in choice_attributes(supernet):
        for label, choice in leaves(expr).items():
            add(ParameterSpec(label, "value", choice.candidates), f"{path}.{attr}")
    return specs


def _depth_read_as_value(a: ParameterSpec, b: ParameterSpec) -> bool:
    # Same candidates with the same types: a depth 2 and a value 2.0 are different labels.
    return ({a.kind, b.kind} == {"depth", "value"}
            and [(type(c), c) for c in a.candidates] == [(type(c), c) for c in b.candidates])


def label_modules(root: nn.Module) -> dict[str, list[str]]:
    """``{label: [paths of the supernet modules it shapes]}``, labels in module order."""
    out: dict[str, list[str]] = {}
    for name, module in iter_supernet_modules(root):
        for label in module.search_space_spec():
            paths = out.setdefault(label, [])
            if name not in paths:
                paths.append(name)
    return out


def slicing_conventions(root: nn.Module) -> dict[str, list[str]]:
    """``{convention: module paths}`` of the elastic layers: which rules sliced the weights.

    ``"native"`` is this project's (attention heads never split), ``"nni"`` NNI 2.10's (the
    first rows of q, k and v; per-dimension DARTS mixing), set by ``subnet_export.nni`` layers.
    """
    out: dict[str, list[str]] = {}
    for name, module in root.named_modules():
        convention = getattr(module, "convention", None)
        if isinstance(module, BaseSuperNetModule) and isinstance(convention, str):
            out.setdefault(convention, []).append(name or "<root>")
    return out
