"""The weighted sum of a differentiable mixture, over tensors and nested tuples, lists, dicts.

NNI 2.10's ``weighted_sum`` (``supermodule/_valuechoice_utils.py``), operation for operation: a
candidate (a layer, a depth) may return a tuple or dict of tensors, which are mixed element by
element; a sequence comes back as a list, as NNI's does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import SearchSpaceError

__all__ = ["weighted_sum"]


def weighted_sum(items: Sequence[Any], weights: Sequence[Any] | None = None) -> Any:
    """``sum(w * item)``, element-wise through tuples, lists and dicts.

    Args:
        items: one output per candidate, all of one structure (tensors or numbers at the
            leaves).
        weights: one weight per item (tensors or floats); None: an unweighted sum.

    Returns:
        ``items[0] * w0 + items[1] * w1 + ...`` with the structure of ``items[0]`` (a sequence
        as a list).

    Raises:
        SearchSpaceError: no items, or items whose structures or shapes differ.
    """
    weights = [None] * len(items) if weights is None else list(weights)
    if not items or len(items) != len(weights):
        raise SearchSpaceError(
            f"a mixture needs one weight per candidate output, got {len(items)} output(s) and "
            f"{len(weights)} weight(s)")
    try:
        return _sum(list(items), weights)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        shapes = "".join(f"\n  {k}: {_summary(it)}" for k, it in enumerate(items))
        raise SearchSpaceError(
            "the candidates' outputs cannot be mixed: their formats or shapes differ "
            f"({err}):{shapes}") from err


def _sum(items: list[Any], weights: list[Any]) -> Any:
    elem = items[0]
    if isinstance(elem, str):
        raise TypeError(f"cannot sum strings ({elem!r})")
    if isinstance(elem, (torch.Tensor, int, float)):
        out = elem if weights[0] is None else elem * weights[0]
        for item, w in zip(items[1:], weights[1:]):
            if type(item) is not type(elem):
                raise TypeError(f"{type(item).__name__} and {type(elem).__name__}")
            out = out + (item if w is None else item * w)
        return out
    if isinstance(elem, Mapping):
        if any(not isinstance(d, Mapping) or set(d) != set(elem) for d in items):
            raise KeyError(f"expected the keys {list(elem)} in every output")
        return {k: _sum([d[k] for d in items], weights) for k in elem}
    if isinstance(elem, Sequence):
        if any(not isinstance(s, Sequence) or len(s) != len(elem) for s in items):
            raise ValueError(f"expected sequences of length {len(elem)} in every output")
        return [_sum(list(column), weights) for column in zip(*items)]
    raise TypeError(f"cannot mix outputs of type {type(elem).__name__}")


def _summary(item: Any) -> Any:
    if isinstance(item, torch.Tensor):
        return f"Tensor{tuple(item.shape)}"
    if isinstance(item, Mapping):
        return {k: _summary(v) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [_summary(v) for v in item]
    return item
