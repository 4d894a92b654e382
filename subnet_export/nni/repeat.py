"""NNI 2.x's ``Repeat``: a block repeated a chosen number of times, blocks kept in ``.blocks``.

A :class:`subnet_export.space.containers.Repeat` subclass that the built-in supernet repeat
converts with NNI's layout and semantics: the supernet keeps ``<path>.blocks.N`` (NNI's one-shot
keys), the plain model ``<path>.N`` (NNI's fixed model, an ``nn.Sequential``). The depth may be
an int, a ``(min, max)`` tuple (a new depth choice, labelled when NNI labels it), a choice, or an
expression over choices such as ``2 * d + 1`` (the arch label is then the leaf's).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import SearchSpaceError
from ..space import containers
from ..space.choice import Choice, is_choice, possible_values
from .fixed import fixed_value, in_fixed_arch
from .valuechoice import ValueChoice

__all__ = ["Repeat"]

Blocks = Callable[[int], nn.Module] | Sequence[Callable[[int], nn.Module]] | nn.Module | Sequence[
    nn.Module]


def replicate(blocks: Any, repeat: int) -> list[nn.Module]:
    """The first ``repeat`` blocks, as NNI's ``Repeat._replicate_and_instantiate`` makes them.

    A module is deep-copied (the first kept as it is), a factory called with each index, a list
    cut to ``repeat`` (its factories called).

    Raises:
        SearchSpaceError: a list shorter than ``repeat``.
    """
    if not isinstance(blocks, list):
        if isinstance(blocks, nn.Module):
            blocks = [blocks if i == 0 else copy.deepcopy(blocks) for i in range(repeat)]
        else:
            blocks = [blocks for _ in range(repeat)]
    if repeat > len(blocks):
        raise SearchSpaceError(
            f"Repeat: not enough blocks, {repeat} expected, only found {len(blocks)}")
    blocks = blocks[:repeat]
    if blocks and not isinstance(blocks[0], nn.Module):
        blocks = [b(i) for i, b in enumerate(blocks)]
    return blocks


class Repeat(containers.Repeat):
    """NNI's ``Repeat``: ``blocks`` repeated ``depth`` times; ``repeat[i]`` is block ``i``.

    Args:
        blocks: a module (deep-copied), a factory ``fn(index) -> module``, or a list of modules
            or factories (at least as many as the largest depth).
        depth: an int, a ``(min, max)`` tuple, a ``ValueChoice`` or an expression over one.
        label: the label of a ``(min, max)`` depth's choice; default: NNI's next automatic label.

    Raises:
        SearchSpaceError: an unsupported depth, depths below 0 or a largest depth below 1,
            non-int depths.
    """

    converts_as = containers.Repeat
    holder = "blocks"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if (args or kwargs) and in_fixed_arch():
            fixed = cls.create_fixed_module(*args, **kwargs)
            if fixed is not None:
                return fixed
        return super().__new__(cls)

    @classmethod
    def create_fixed_module(cls, blocks: Blocks, depth: Any, *,
                            label: str | None = None) -> nn.Module | None:
        """The ``nn.Sequential`` of the fixed depth (None: the depth is still a choice)."""
        if isinstance(depth, tuple):
            depth = fixed_value(label)
        if isinstance(depth, int):
            return nn.Sequential(*replicate(blocks, depth))
        return None

    def __init__(self, blocks: Blocks, depth: Any, *, label: str | None = None) -> None:
        containers.Placeholder.__init__(self)
        self._label: str | None = None
        if is_choice(depth):
            if label is not None:
                warnings.warn("In repeat, `depth` is already a ValueChoice, but `label` is still "
                              "set. It will be ignored.", RuntimeWarning, stacklevel=2)
            values = possible_values(depth)
            if isinstance(depth, Choice):
                self._label = depth.label
        elif isinstance(depth, tuple) and len(depth) == 2:
            values = list(range(depth[0], depth[1] + 1))
            depth = ValueChoice(values, label=label)
            self._label = depth.label
        elif type(depth) is int:
            values = [depth]
        else:
            raise SearchSpaceError(f'Repeat: unsupported "depth" type {type(depth).__name__}; '
                                   "give an int, a (min, max) tuple or a ValueChoice")
        if not values or not all(type(v) is int for v in values):
            raise SearchSpaceError(f"Repeat: the depth must be an int, but can be {values}")
        self.min_depth, self.max_depth = min(values), max(values)
        if not self.max_depth >= self.min_depth >= 0 or self.max_depth < 1:
            raise SearchSpaceError(
                f"Repeat: depth of {self.min_depth} to {self.max_depth} is invalid")
        self.depth_choice = self.depth = depth
        self.blocks = nn.ModuleList(replicate(blocks, self.max_depth))
        self.convention = "nni"

    @property
    def label(self) -> str | None:
        """The depth's label (None for an int depth or an expression)."""
        return self._label

    def is_elastic(self) -> bool:
        return is_choice(self.depth_choice)

    def forward(self, x: Any) -> Any:
        for block in self.blocks:
            x = block(x)
        return x

    def __getitem__(self, index: int) -> nn.Module:
        return self.blocks[index]

    def __len__(self) -> int:
        return self.max_depth
