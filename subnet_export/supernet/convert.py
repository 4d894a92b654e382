"""``to_supernet``: turn a search space into a supernet through the modules' ``mutate`` hooks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import SearchSpaceError
from ..space import containers
from ..space import placeholders as ph
from .attention import ElasticMultiheadAttention
from .attrs import record_choice_attributes
from .base import STRATEGIES, BaseSuperNetModule
from .choices import MixedEdgeChoice, MixedInputChoice, MixedLayerChoice, MixedRepeat
from .elastic import ElasticConv2d, ElasticLinear, ElasticParameter
from .norm import ElasticBatchNorm2d, ElasticLayerNorm
from .walk import collect_specs

__all__ = ["DEFAULT_HOOKS", "register_hooks", "to_supernet"]

#: The supernet module classes whose ``mutate`` hooks ``to_supernet`` tries, in order.
DEFAULT_HOOKS: tuple[type[BaseSuperNetModule], ...] = (
    MixedLayerChoice, MixedInputChoice, MixedEdgeChoice, MixedRepeat, ElasticConv2d,
    ElasticLinear, ElasticBatchNorm2d, ElasticLayerNorm, ElasticMultiheadAttention,
    ElasticParameter,
)

#: supernet module classes added by front ends (``subnet_export.nni`` registers its cells' on
#: import), tried after a call's own ``hooks`` and before the built-in ones
_REGISTERED: list[type[BaseSuperNetModule]] = []


def register_hooks(*classes: type[BaseSuperNetModule]) -> None:
    """Make every later ``to_supernet`` call try these classes' ``mutate`` hooks too.

    For placeholders defined outside ``subnet_export.supernet`` (a front end's own containers),
    whose package imports this one, so that this module need not import theirs. Registering a
    class twice keeps one entry.
    """
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseSuperNetModule)):
            raise TypeError(f"{cls!r} is not a BaseSuperNetModule subclass")
        if cls not in _REGISTERED:
            _REGISTERED.append(cls)


def to_supernet(space: nn.Module, strategy: str = "sampling", *,
                hooks: Sequence[type[BaseSuperNetModule]] | None = None) -> nn.Module:
    """Replace every placeholder in ``space`` by a supernet module, in place.

    Args:
        space: the search space (a module tree with ``se.*`` placeholders and choices).
        strategy: ``"sampling"`` (SPOS / Once-for-All) or ``"differentiable"`` (DARTS).
        hooks: supernet module classes whose ``mutate`` classmethods are tried in order
            before the registered (register_hooks) and built-in ones (for user-defined supernet
            modules).

    Returns:
        The supernet (``space`` itself, unless ``space`` is a placeholder).

    Raises:
        SearchSpaceError: unknown strategy, a placeholder no hook accepts, one label with two
            candidate lists.
    """
    if strategy not in STRATEGIES:
        raise SearchSpaceError(f"unknown strategy {strategy!r}; use one of {list(STRATEGIES)}")
    if isinstance(space, BaseSuperNetModule) or any(
            isinstance(m, BaseSuperNetModule) for m in space.modules()):
        raise SearchSpaceError("this module is already a supernet; call to_supernet once")
    all_hooks = list(hooks or ()) + _REGISTERED + list(DEFAULT_HOOKS)
    memo: dict = {}
    kwargs = {"strategy": strategy}
    root = _convert(space, "", memo, all_hooks, kwargs)
    record_choice_attributes(root, skip=BaseSuperNetModule)
    collect_specs(root)  # checks label consistency across the tree
    return root


def _convert(module: nn.Module, name: str, memo: dict, hooks, kwargs) -> nn.Module:
    replaced = _mutate(module, name, memo, hooks, kwargs)
    for child_name, child in list(replaced._modules.items()):
        if child is not None:
            path = f"{name}.{child_name}" if name else child_name
            replaced._modules[child_name] = _convert(child, path, memo, hooks, kwargs)
    return replaced


def _mutate(module: nn.Module, name: str, memo: dict, hooks, kwargs) -> nn.Module:
    if not isinstance(module, ph.Placeholder):
        return module
    for hook in hooks:
        new = hook.mutate(module, name, memo, kwargs)
        if new is not None:
            return new
    if module.is_elastic():
        raise SearchSpaceError(
            f"no supernet module accepts {type(module).__name__} at {name or '<root>'!r} "
            f"with arguments {module.extra_repr()}")
    if isinstance(module, containers.Repeat):
        return nn.Sequential(*module.children())
    return module.to_plain()
