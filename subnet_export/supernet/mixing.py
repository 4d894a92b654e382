"""NNI 2.10's differentiable mixture of a layer with choices: one weighted mask per dimension.

NNI's ``MixedOperation`` under DARTS turns each argument that is a choice into a distribution
``{value: probability}`` (the softmax of the arch weights of its labels, pushed through the
expression) and slices every tensor dimension by dimension: a slice by a distribution is the
full tensor times ``sum_v p(v) * mask(v)``. Two dimensions sliced by two arguments get two masks
(a product), even when one label sets both; the native convention mixes label combinations
jointly instead (``ElasticModule.mixed_params``). The operation order follows NNI's
``Slicable``, so both run the same float32 arithmetic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..space.choice import evaluate, leaves

__all__ = ["Distribution", "distribution", "masked", "slice_by"]

class Distribution(list):
    """``[(value, probability)]`` sorted by value, one entry per distinct value.

    A type of its own, so that a distribution is never taken for a value that is a list.
    """


def distribution(expr: Any, probs: Mapping[str, torch.Tensor]) -> Distribution:
    """Every value ``expr`` takes with its probability, as NNI's ``traverse_all_options``.

    Args:
        expr: a choice or an expression over choices.
        probs: ``{label: softmax of its arch weights}`` for every leaf label of ``expr``.

    Returns:
        ``[(value, probability)]`` sorted by value; equal values have their probabilities added.
    """
    found = leaves(expr)
    labels = list(found)
    options = [list(zip(found[lb].candidates, probs[lb])) for lb in labels]
    out: dict[Any, torch.Tensor] = {}
    for combo in itertools.product(*options):
        value = evaluate(expr, {lb: v for lb, (v, _) in zip(labels, combo)})
        weight = combo[0][1]
        for _, w in combo[1:]:
            weight = weight * w
        out[value] = out[value] + weight if value in out else weight
    return Distribution(sorted(out.items(), key=lambda item: item[0]))


def masked(t: torch.Tensor, dist: Distribution,
           index: Callable[[Any], tuple[Any, ...]]) -> torch.Tensor:
    """``t`` times ``sum_v p(v) * mask(v)``, ``mask(v)`` being 1 on ``t[index(v)]``.

    An entry of ``index(v)`` may be a list of slices (their union), as NNI's q, k, v blocks.
    """
    masks: Any = 0
    for value, weight in dist:
        with torch.no_grad():
            mask = torch.zeros_like(t)
            mask[_union(t.shape, index(value))] = 1
        masks = masks + mask * weight
    return masks * t


def slice_by(t: torch.Tensor | None, arg: Any, index: Callable[[Any], tuple[Any, ...]]):
    """Slice ``t`` by ``arg``: a plain value slices, a :data:`Distribution` masks (NNI's rule).

    ``None`` stays ``None`` (a missing bias).
    """
    if t is None:
        return None
    if isinstance(arg, Distribution):
        return masked(t, arg, index)
    return t[_union(t.shape, index(arg))]


def _union(shape: torch.Size, index: tuple[Any, ...]) -> tuple[Any, ...]:
    # A list of slices on one dim becomes a boolean mask of their union.
    out: list[Any] = []
    for dim, item in enumerate(index):
        if isinstance(item, list):
            keep = torch.zeros(shape[dim], dtype=torch.bool)
            for sl in item:
                keep[sl] = True
            out.append(keep)
        else:
            out.append(item)
    return tuple(out)
