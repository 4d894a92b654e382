"""Topology keys, and the integer module attributes a trace bakes into shape constants.

:func:`topology_key` hashes what fixes a traced graph's structure, widths aside: templates are
filed and found by it (``reuse.py``).

``reshape(b, n, self.heads, self.head_dim)`` traces to a constant ``[n, heads, head_dim]``
whose ``heads`` no tensor shape gives back, so the shape rule of ``shape_constants.py`` cannot
fit it, and :func:`topology_key` keeps such attributes in the key. Here an element
of a shape constant that no dimension explains, and that equals exactly one integer attribute
of the module the constant was traced in, is an :data:`AttrElement` of that attribute. A
template whose traced attributes differ from another model's only in attributes it holds
elements of may then be fitted to that model (``TemplateStore.pick``'s second pass, by the
``loose`` key that leaves integers out): each element is set to the model's value before the
shapes are fitted. Anything else about the fitted graph is proven as for any template: strict
shape inference, the pre-selection run, and the full validation that follows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import onnx
from torch import nn

from .naming import module_path
from .shape_constants import constants, data_inputs, store_constant

__all__ = ["AttrElement", "apply_ints", "attribute_elements", "covers", "int_attributes",
           "topology_key"]

#: (constant value name, element index, ``"module.path:attribute"``)
AttrElement = tuple[str, int, str]


def topology_key(plain: nn.Module, *parts: Any, loose: bool = False) -> str:
    """A hash of what fixes a traced graph's structure, widths aside.

    That is: every module's name and class, the tensor names, conv settings other than
    widths and kernels, and the plain Python values (bools, numbers, strings) that modules
    outside ``torch.nn`` hold, since a forward that reads one bakes it into the trace (a
    residual flag, a head count). Two models with one key may still trace differently;
    :meth:`GraphTemplate.instantiate` and the validation after it catch that. ``parts`` (the
    export options) are hashed too. ``loose``: integers are left out (``template_ints.py``).
    """
    digest = hashlib.sha256(repr(parts).encode())
    for name, module in plain.named_modules():
        extra: tuple[Any, ...] = ()
        if isinstance(module, nn.modules.conv._ConvNd):
            extra = (module.stride, module.dilation, module.padding_mode, module.transposed,
                     module.groups == 1, module.groups == module.in_channels,
                     module.bias is not None)
        elif not type(module).__module__.startswith("torch."):
            extra = tuple(sorted((k, "int" if loose and _int(v) else v)
                                 for k, v in vars(module).items()
                                 if not k.startswith("_") and k != "training"
                                 and _plain_value(v)))
        digest.update(repr((name, type(module).__qualname__, extra)).encode())
    digest.update(repr(sorted(plain.state_dict())).encode())
    return digest.hexdigest()


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_value(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain_value(v) for v in value)
    return isinstance(value, (bool, int, float, str, type(None)))


def int_attributes(plain: nn.Module) -> dict[str, int]:
    """``{"module.path:attribute": value}``: the plain ints (not bools) of non-torch modules.

    They are among the values :func:`topology_key` hashes.
    """
    out = {}
    for name, module in plain.named_modules():
        if type(module).__module__.startswith("torch."):
            continue
        for key, value in vars(module).items():
            if (not key.startswith("_") and isinstance(value, int)
                    and not isinstance(value, bool)):
                out[f"{name}:{key}"] = value
    return out


def attribute_elements(model: onnx.ModelProto, explained: Iterable[tuple[str, int]],
                       ints: Mapping[str, int]) -> list[AttrElement]:
    """The elements of ``model``'s shape constants that stand for one attribute in ``ints``.

    ``explained``: the ``(value, index)`` pairs the shape rule already fits.
    """
    done = set(explained)
    values = constants(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    by_module: dict[str, dict[str, int]] = {}
    for key, value in ints.items():
        module, _, _ = key.rpartition(":")
        by_module.setdefault(module, {})[key] = value
    out = []
    for node in model.graph.node:
        name = node.output[0] if node.output else ""
        if node.op_type != "Constant" or name not in values or values[name].ndim > 1:
            continue
        module = module_path(node)
        if module is None or not any(True for _ in data_inputs(name, readers)):
            continue
        for index, value in enumerate(values[name].reshape(-1).tolist()):
            if value <= 1 or (name, index) in done:
                continue
            owners = [k for k, v in by_module.get(module, {}).items() if v == value]
            if len(owners) == 1:
                out.append((name, index, owners[0]))
    return out


def covers(traced: Mapping[str, int], elements: Iterable[AttrElement],
           ints: Mapping[str, int]) -> bool:
    """Whether ``ints`` has the traced attributes and differs only in ones with elements."""
    if set(traced) != set(ints):
        return False
    held = {attr for _, _, attr in elements}
    return all(ints[k] == v or k in held for k, v in traced.items())


def apply_ints(model: onnx.ModelProto, elements: Iterable[AttrElement],
               ints: Mapping[str, int]) -> None:
    """Set each element of ``model`` to its attribute's value in ``ints``."""
    values = constants(model)
    changed = set()
    for name, index, attr in elements:
        array = values[name]
        flat = array.reshape(-1)
        if flat[index] != ints[attr]:
            flat[index] = ints[attr]
            changed.add(name)
    for name in changed:
        store_constant(model, name, values[name])
