"""torch.nn's names for NNI 2.x model spaces: the layers NNI's one-shot supernets take choices in.

``nn.Conv2d(3, nn.ValueChoice([16, 32]), 3)`` is the placeholder :class:`~subnet_export.space.
placeholders.Conv2d` with ``convention="nni"`` (NNI 2.10's slicing, mixture and errors); without
a choice it is the plain ``torch.nn.Conv2d`` itself, so ``isinstance(m, torch.nn.Conv2d)`` holds.
Conv2d, Linear, BatchNorm2d, LayerNorm and MultiheadAttention take choices (NNI's
``NATIVE_MIXED_OPERATIONS``); a choice given to any other layer is a SearchSpaceError.
Every other name (``Module``, ``Parameter``, ``functional``, ...) is torch.nn's own.

The public names of this module are exactly torch.nn's (what ``from torch.nn import *`` gives),
so ``from .layers import *`` exports them all: every helper here starts with an underscore, and
there is no ``__all__``, which would have to list torch's own classes as if defined here.
"""

# No ``from __future__ import annotations``: it would leave a public name ``annotations``.
import inspect as _inspect
import warnings as _warnings
from typing import Any as _Any

import torch.nn as _tnn

from ..errors import SearchSpaceError as _SearchSpaceError
from ..space import placeholders as _ph
from ..space.choice import leaves as _leaves

#: torch.nn layer -> the placeholder that takes its choices.
_SUPPORTED: dict[type[_tnn.Module], type[_ph.Placeholder]] = {
    _tnn.Conv2d: _ph.Conv2d,
    _tnn.Linear: _ph.Linear,
    _tnn.BatchNorm2d: _ph.BatchNorm2d,
    _tnn.LayerNorm: _ph.LayerNorm,
    _tnn.MultiheadAttention: _ph.MultiheadAttention,
}

# Containers and bases: no argument of theirs is a hyper-parameter, and users subclass Module.
_AS_IS = {"Module", "Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict",
          "Container", "DataParallel"}


class _FrontMeta(type):
    """Metaclass of the front classes: calling one builds a torch layer or a placeholder.

    ``isinstance(m, nn.Conv2d)`` is ``isinstance(m, torch.nn.Conv2d)``; a user subclass of a
    front class is an ordinary torch subclass.
    """

    def __call__(cls, *args: _Any, **kwargs: _Any) -> _Any:
        torch_cls = cls.__dict__.get("_torch_class")
        if torch_cls is None:  # a user's subclass
            return super().__call__(*args, **kwargs)
        return _build(torch_cls, args, kwargs)

    def __instancecheck__(cls, obj: _Any) -> bool:
        torch_cls = cls.__dict__.get("_torch_class")
        return isinstance(obj, torch_cls) if torch_cls else super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        torch_cls = cls.__dict__.get("_torch_class")
        return issubclass(sub, torch_cls) if torch_cls else super().__subclasscheck__(sub)


def _build(torch_cls: type[_tnn.Module], args: tuple, kwargs: dict) -> _Any:
    """``torch_cls(*args, **kwargs)``, or its NNI-convention placeholder when a choice is given.

    Raises:
        SearchSpaceError: a choice in a layer NNI's one-shot supernets do not support, or in an
            argument of a supported layer they do not support.
    """
    if not _leaves([list(args), list(kwargs.values())]):
        return torch_cls(*args, **kwargs)
    try:
        bound = _inspect.signature(torch_cls.__init__).bind(None, *args, **kwargs)
    except TypeError as err:
        raise _SearchSpaceError(f"{torch_cls.__name__}: {err}") from None
    given = dict(list(bound.arguments.items())[1:])
    placeholder = _SUPPORTED.get(torch_cls)
    if placeholder is None:
        names = [k for k, v in given.items() if _leaves(v)]
        raise _SearchSpaceError(
            f"{torch_cls.__name__}: argument {names[0]!r} is a choice; NNI's one-shot supernets "
            f"take choices in {', '.join(c.__name__ for c in _SUPPORTED)} only")
    for key in ("device", "dtype"):
        if given.pop(key, None) is not None:
            raise _SearchSpaceError(f"{torch_cls.__name__}: {key} is not supported with "
                                    "choices; move the supernet after se.to_supernet instead")
    accepted = _inspect.signature(placeholder.__init__).parameters
    for key in given:
        if key not in accepted:
            raise _SearchSpaceError(f"{torch_cls.__name__}: argument {key!r} is not supported "
                                    "together with choices")
    return placeholder(**given, convention="nni")


def _front(name: str, torch_cls: type[_tnn.Module]) -> type:
    with _warnings.catch_warnings():  # subclassing a deprecated layer (NLLLoss2d) warns
        _warnings.simplefilter("ignore", FutureWarning)
        front = _FrontMeta(name, (torch_cls,), {"_torch_class": torch_cls,
                                                "__doc__": torch_cls.__doc__,
                                                "__module__": __name__})
    front.__qualname__ = name
    return front


def _names() -> dict[str, _Any]:
    # What ``from torch.nn import *`` gives (torch.nn has no __all__), front classes for layers.
    out = {}
    for name, obj in vars(_tnn).items():
        if name.startswith("_"):
            continue
        layer = (_inspect.isclass(obj) and issubclass(obj, _tnn.Module)
                 and name not in _AS_IS)
        out[name] = _front(name, obj) if layer else obj
    return out


globals().update(_names())
