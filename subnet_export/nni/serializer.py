"""NNI 2.x's class decorators: ``model_wrapper`` (labels numbered per model), ``basic_unit``.

``@model_wrapper`` makes a subclass whose ``__init__`` runs inside a fresh
:class:`~subnet_export.nni._labels.ModelNamespace`, as NNI's does, so automatic labels restart at
``model_1`` for every model built and a wrapped model built inside another is numbered in its
parent's namespace (``model_3_1``). The result is an ordinary ``nn.Module`` subclass of the
decorated class (same name, module and docstring), picklable by reference.
"""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

from ..errors import SearchSpaceError
from ._labels import ModelNamespace

__all__ = ["basic_unit", "is_basic_unit", "is_model_wrapped", "model_wrapper"]

T = TypeVar("T")


def is_model_wrapped(cls_or_instance: Any) -> bool:
    """Whether a class (or the class of an instance) went through :func:`model_wrapper`."""
    cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
    return getattr(cls, "_nni_model_wrapper", False)


def is_basic_unit(cls_or_instance: Any) -> bool:
    """Whether a class (or the class of an instance) went through :func:`basic_unit`."""
    cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
    return getattr(cls, "_nni_basic_unit", False)


def _check_wrapped(cls: type, rewrap: str) -> bool:
    wrapped = ("model_wrapper" if is_model_wrapped(cls)
               else "basic_unit" if is_basic_unit(cls) else None)
    if wrapped and wrapped != rewrap:
        raise SearchSpaceError(f"{cls} is already wrapped with {wrapped}. Cannot rewrap with "
                               f"{rewrap}.")
    return wrapped is not None


def model_wrapper(cls: T) -> T:
    """Decorate the model space class: each construction numbers its labels afresh.

    A class that is already model-wrapped (or inherits from one) is returned as it is, as NNI
    does: its own ``__init__`` then runs outside the namespace its base opens.

    Raises:
        SearchSpaceError: ``cls`` is not an ``nn.Module`` subclass, or is a ``basic_unit``.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise SearchSpaceError(f"@model_wrapper decorates nn.Module subclasses, not {cls!r}")
    if _check_wrapped(cls, "model_wrapper"):
        return cls

    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        with ModelNamespace():
            super(wrapper, self).__init__(*args, **kwargs)

    wrapper = type(cls)(cls.__name__, (cls,), {
        "__init__": __init__, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__, "__wrapped__": cls, "_nni_model_wrapper": True})
    return wrapper  # type: ignore[return-value]


def basic_unit(cls: T, basic_unit_tag: bool = True) -> T:
    """Mark a module class as a primitive (NNI's ``basic_unit``); nothing else changes here.

    Raises:
        SearchSpaceError: ``cls`` is not an ``nn.Module`` subclass, or is model-wrapped.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise SearchSpaceError(f"@basic_unit decorates nn.Module subclasses, not {cls!r}")
    if _check_wrapped(cls, "basic_unit"):
        return cls
    cls._nni_basic_unit = basic_unit_tag  # type: ignore[attr-defined]
    return cls
