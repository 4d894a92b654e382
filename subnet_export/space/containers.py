"""Search-space containers: layer choice, input choice, edge choice, repeat with elastic depth.

Like the layer placeholders they hold no weights of their own; :func:`se.to_supernet` replaces
each by its supernet module (``supernet/choices.py``, ``supernet/repeat.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from torch import nn

from ..errors import SearchSpaceError
from .choice import Choice, is_choice
from .placeholders import Placeholder

__all__ = ["EdgeChoice", "InputChoice", "LayerChoice", "Repeat", "builtin_kind"]


def builtin_kind(module: nn.Module) -> type | None:
    """The container class whose built-in supernet module converts ``module``, if any.

    A container of this file is converted as itself. A subclass is converted by the built-in
    supernet module only when its own class body says so (``converts_as = LayerChoice``, as the
    NNI drop-in's classes do); other subclasses (a cell's op choice) bring their own supernet
    module.
    """
    cls = type(module)
    if cls in (LayerChoice, InputChoice, EdgeChoice, Repeat):
        return cls
    return cls.__dict__.get("converts_as")


class LayerChoice(Placeholder):
    """Choose one module among candidates; the arch value is the candidate's key.

    Args:
        candidates: a dict ``{key: module}`` or a list (keys ``"0"``, ``"1"``, ...).
        label: the arch label; defaults to the module's path in the space.
    """

    def __init__(self, candidates: Mapping[str, nn.Module] | Sequence[nn.Module],
                 label: str | None = None) -> None:
        super().__init__()
        items = (list(candidates.items()) if isinstance(candidates, Mapping)
                 else [(str(i), m) for i, m in enumerate(candidates)])
        if not items:
            raise SearchSpaceError(f"LayerChoice {label!r} has no candidates")
        for key, module in items:
            if not isinstance(key, str) or not key or "." in key:
                raise SearchSpaceError(
                    f"LayerChoice {label!r}: candidate key {key!r} must be a non-empty string "
                    "without '.'")
            if not isinstance(module, nn.Module):
                raise SearchSpaceError(
                    f"LayerChoice {label!r}: candidate {key!r} is not an nn.Module")
            self.add_module(key, module)
        self.label = label

    def is_elastic(self) -> bool:
        return True


class InputChoice(Placeholder):
    """Choose ``n_chosen`` of ``n_candidates`` inputs and reduce them.

    Called with a list of tensors. ``reduction``: ``"sum"``, ``"mean"`` or ``"concat"``
    (along dim 1). The arch value is the sorted list of chosen indices.
    """

    REDUCTIONS: ClassVar[tuple[str, ...]] = ("sum", "mean", "concat")
    #: ``n_chosen=None`` (any number of inputs) is allowed (the NNI drop-in's choice)
    ANY_NUMBER: ClassVar[bool] = False
    #: a one-of-n choice's arch value is the bare index, as NNI writes it
    BARE_SINGLE: ClassVar[bool] = False

    def __init__(self, n_candidates: int, n_chosen: int | None = 1, reduction: str = "sum",
                 label: str | None = None) -> None:
        super().__init__()
        if reduction not in self.REDUCTIONS:
            raise SearchSpaceError(
                f"InputChoice {label!r}: reduction {reduction!r} is not one of {self.REDUCTIONS}")
        if n_chosen is None and not self.ANY_NUMBER:
            raise SearchSpaceError(f"InputChoice {label!r}: n_chosen must be an int")
        if type(n_candidates) is not int or n_candidates < 1 or (
                n_chosen is not None and not 1 <= n_chosen <= n_candidates):
            raise SearchSpaceError(
                f"InputChoice {label!r}: need 1 <= n_chosen <= n_candidates, "
                f"got {n_chosen} of {n_candidates}")
        self.n_candidates, self.n_chosen, self.reduction = n_candidates, n_chosen, reduction
        self.label = label

    def is_elastic(self) -> bool:
        return True


class EdgeChoice(Placeholder):
    """Choose ``n_chosen`` of a node's incoming edges; edge ``j`` applies ``ops[j]`` to input ``j``.

    Called with the list of the node's inputs (at least ``len(ops)``); returns the sum of the
    chosen edges' outputs. Unlike an ``InputChoice`` after per-edge ops, the plain model holds
    only the chosen edges' ops, so no dead branch (or its weights) reaches the export. The arch
    value is the sorted list of chosen edge indices, as for an input choice.

    Args:
        ops: one module per incoming edge (often a ``LayerChoice`` of candidate ops).
        n_chosen: how many edges an arch keeps.
        label: the arch label; defaults to the module's path in the space.
    """

    def __init__(self, ops: Sequence[nn.Module], n_chosen: int = 1,
                 label: str | None = None) -> None:
        super().__init__()
        ops = list(ops)
        if not all(isinstance(op, nn.Module) for op in ops):
            raise SearchSpaceError(f"EdgeChoice {label!r}: every edge op must be an nn.Module")
        if not 1 <= n_chosen <= len(ops):
            raise SearchSpaceError(
                f"EdgeChoice {label!r}: need 1 <= n_chosen <= number of edges, "
                f"got {n_chosen} of {len(ops)}")
        for j, op in enumerate(ops):
            self.add_module(str(j), op)
        self.n_chosen, self.label = n_chosen, label

    def is_elastic(self) -> bool:
        return True


class Repeat(Placeholder):
    """Blocks repeated an elastic number of times; a depth ``d`` keeps the first ``d`` blocks.

    Args:
        blocks: a factory ``fn(index) -> module``, a list of modules, or one module (deep-copied).
        depth: an int or a ``Choice`` of ints (its label is the arch label of the depth). The
            same Choice may also appear in expressions elsewhere (a stage that can vanish
            changes the next stage's input width); the label stays a depth. A list of them
            makes consecutive stages of one flat block list (Once-for-All's ``blocks.N``):
            stage ``s`` holds the next ``max(depth[s])`` blocks and keeps its first ``d``.

    Subclasses (the NNI drop-in's ``Repeat``) may keep their blocks in a child ``ModuleList``
    named :attr:`holder` instead of as direct children, and a depth that is an expression.
    """

    #: the child ``ModuleList`` holding the blocks (None: the blocks are direct children)
    holder: ClassVar[str | None] = None

    def __init__(self, blocks: Callable[[int], nn.Module] | Sequence[nn.Module] | nn.Module,
                 depth: int | Choice | Sequence[int | Choice]) -> None:
        super().__init__()
        stages = list(depth) if isinstance(depth, (list, tuple)) else [depth]
        if not stages:
            raise SearchSpaceError("Repeat needs at least one depth")
        max_depth = 0
        for d in stages:
            if is_choice(d) and not isinstance(d, Choice):
                raise SearchSpaceError("Repeat depth must be an int or a Choice, not an expression")
            candidates = d.candidates if isinstance(d, Choice) else (d,)
            if not all(type(c) is int and c >= 0 for c in candidates):
                raise SearchSpaceError(
                    f"Repeat depth candidates must be ints >= 0, got {candidates}")
            max_depth += max(candidates)
        if isinstance(blocks, nn.Module):
            modules = [blocks] + [copy.deepcopy(blocks) for _ in range(max_depth - 1)]
        elif callable(blocks):
            modules = [blocks(i) for i in range(max_depth)]
        else:
            modules = list(blocks)
        if len(modules) < max_depth:
            raise SearchSpaceError(
                f"Repeat has {len(modules)} blocks but the depth can be {max_depth}")
        for i, module in enumerate(modules[:max_depth]):
            self.add_module(str(i), module)
        self.depth = depth

    def block_list(self) -> list[nn.Module]:
        """The blocks, in order (the largest depth's)."""
        return list(self._modules[self.holder] if self.holder else self.children())

    def is_elastic(self) -> bool:
        stages = self.depth if isinstance(self.depth, (list, tuple)) else [self.depth]
        return any(isinstance(d, Choice) for d in stages)
