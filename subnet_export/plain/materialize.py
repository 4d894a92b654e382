"""Stage 2, materialize: the plain ``nn.Module`` of one arch, weights from ``sub_state_dict``.

The skeleton is built on the meta device (nothing allocated), then the sub state dict is
assigned into it with ``strict=True``: the extra memory is the subnet's size, not a second
supernet. Postconditions are checked every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..arch import fixed_arch
from ..errors import MaterializeError
from ..space.placeholders import Placeholder
from ..supernet.base import BaseSuperNetModule
from ..supernet.walk import freeze_module, sub_state_dict

__all__ = ["Materialized", "materialize", "materialize_with_labels", "module_labels"]


@dataclass(frozen=True)
class Materialized:
    """A materialized subnet and what its one skeleton build also told.

    Attributes:
        model: the plain module (see :func:`materialize`).
        labels: ``{plain module path: [labels]}``, which labels chose or shaped each module
            (see :func:`module_labels`).
        arch: the validated arch it was built from.
    """

    model: nn.Module
    labels: dict[str, list[str]]
    arch: Mapping[str, Any]


def materialize(supernet: nn.Module, arch: Mapping[str, Any] | None = None) -> nn.Module:
    """Return the plain module of ``arch``, holding copies of the supernet's weights on it.

    Args:
        supernet: a module tree made by ``se.to_supernet``.
        arch: ``{label: value}``; None uses the supernet's own export (see ``se.freeze``).

    Returns:
        A module of the user's container classes and plain ``torch.nn`` layers, in the
        supernet's training mode, sharing no storage with the supernet.

    Raises:
        ArchError: the arch is not valid for this supernet.
        MaterializeError: a supernet module's ``freeze`` and ``_save_to_sub_state_dict``
            disagree (keys or shapes), which is a bug in that module.
    """
    return materialize_with_labels(supernet, arch).model


def materialize_with_labels(supernet: nn.Module,
                            arch: Mapping[str, Any] | None = None) -> Materialized:
    """:func:`materialize`, with the module labels traced during the same skeleton build.

    Raises:
        ArchError, MaterializeError: as :func:`materialize`.
    """
    trace: dict[str, list[str]] = {}
    with fixed_arch(supernet, arch) as frozen:
        skeleton = freeze_module(supernet, frozen, trace)
        state = sub_state_dict(supernet)
    try:
        skeleton.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise MaterializeError(
            f"the plain model does not fit the supernet's sub state dict: {err}") from err
    _fill_non_persistent(skeleton, supernet)
    skeleton.train(supernet.training)
    _check(skeleton, supernet)
    return Materialized(skeleton, trace, frozen)


def module_labels(supernet: nn.Module,
                  arch: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """``{plain module path: [labels]}``: which labels chose or shaped each plain module.

    Used to map a diverging layer of the exported model back to the supernet's choices. It
    builds a skeleton for the trace alone; :func:`materialize_with_labels` gives both at once.
    """
    trace: dict[str, list[str]] = {}
    with fixed_arch(supernet, arch) as frozen:
        freeze_module(supernet, frozen, trace)
    return trace


def _fill_non_persistent(plain: nn.Module, supernet: nn.Module) -> None:
    # Non-persistent buffers are not in any state dict; user containers copy theirs over.
    source = dict(supernet.named_buffers(remove_duplicate=False))
    for name, module in plain.named_modules():
        for key in list(module._non_persistent_buffers_set):
            buf = module._buffers.get(key)
            if buf is not None and buf.is_meta:
                full = f"{name}.{key}" if name else key
                if full not in source:
                    raise MaterializeError(f"non-persistent buffer {full!r} has no source")
                module._buffers[key] = source[full].detach().clone()


def _check(plain: nn.Module, supernet: nn.Module) -> None:
    for name, module in plain.named_modules():
        if isinstance(module, (BaseSuperNetModule, Placeholder)):
            raise MaterializeError(f"supernet class {type(module).__name__} left at {name!r}")
    tensors = list(plain.parameters()) + list(plain.buffers())
    if any(t.is_meta for t in tensors):
        raise MaterializeError("some tensors of the plain model were never loaded (meta)")
    theirs = {t.untyped_storage().data_ptr()
              for t in list(supernet.parameters()) + list(supernet.buffers())}
    shared = [n for n, t in list(plain.named_parameters()) + list(plain.named_buffers())
              if t.untyped_storage().data_ptr() in theirs and t.numel()]
    if shared:
        raise MaterializeError(f"plain tensors share storage with the supernet: {shared[:5]}")
