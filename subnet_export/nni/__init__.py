"""A drop-in for ``nni.retiarii.nn.pytorch`` (NNI 2.x): model spaces run with their import changed.

``import subnet_export.nni as nn`` gives torch.nn's names, NNI's choices and containers, with
NNI 2.10's labels, so NNI's exported arch JSON and one-shot checkpoints load as written;
``from subnet_export.nni import model_wrapper, basic_unit, fixed_arch`` replaces
``from nni.retiarii import ...``. ``Cell`` and ``NasBench201Cell`` are resolved on first use.
"""

from __future__ import annotations

from typing import Any

from . import layers as _layers
from .choice import ChosenInputs, InputChoice, LayerChoice, Placeholder
from .expression import ValueChoiceX
from .fixed import fixed_arch
from .layers import *  # noqa: F403
from .repeat import Repeat
from .serializer import basic_unit, is_basic_unit, is_model_wrapped, model_wrapper
from .valuechoice import ModelParameterChoice, ValueChoice

#: NNI's type aliases of value choices
ChoiceOf = ValueChoiceX
MaybeChoice = Any

_LAZY = {"Cell": "cell", "NasBench201Cell": "cell"}
#: torch.nn's names, as ``from .layers import *`` gives them
_layer_names = [n for n in vars(_layers) if not n.startswith("_")]

__all__ = ["ChoiceOf", "ChosenInputs", "InputChoice", "LayerChoice", "MaybeChoice",
           "ModelParameterChoice", "Placeholder", "Repeat", "ValueChoice", "ValueChoiceX",
           "basic_unit", "fixed_arch", "is_basic_unit", "is_model_wrapped", "model_wrapper"]
__all__ += list(_LAZY) + _layer_names  # noqa: PLE0605


def __getattr__(name: str) -> Any:
    # The cells are resolved on first use, so the drop-in imports while they are being built;
    # their supernet modules join se.to_supernet's hooks then, before any space can hold one.
    if name in _LAZY:
        import importlib

        from ..supernet.convert import register_hooks

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        hooks = getattr(importlib.import_module(".cell_supernet", __name__), "CELL_HOOKS", ())
        register_hooks(*hooks)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
