"""What a search space is written with: placeholders that record their arguments.

``se.Conv2d(3, se.Choice([16, 24], label="w"), 3)`` holds no weights; :func:`se.to_supernet`
replaces it by the supernet module of the chosen strategy (or by the plain torch module when no
argument is a choice). Signatures mirror ``torch.nn`` so a space reads like a model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import SearchSpaceError
from ..plain.modules import LearnedTensor
from .choice import Choice, ChoiceExpr, is_choice, leaves

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "EdgeChoice",
    "InputChoice",
    "LayerChoice",
    "LayerNorm",
    "Linear",
    "MultiheadAttention",
    "Parameter",
    "Placeholder",
    "Repeat",
]


class Placeholder(nn.Module):
    """A search-space element; ``init_args`` are the arguments it was written with."""

    plain_class: type[nn.Module] | None = None

    def __init__(self, **init_args: Any) -> None:
        super().__init__()
        self.init_args = init_args

    def is_elastic(self) -> bool:
        """Whether any argument is a choice (else it is just the plain torch module)."""
        return bool(leaves(list(self.init_args.values())))

    def to_plain(self) -> nn.Module:
        """The plain torch module with these (choice-free) arguments."""
        assert self.plain_class is not None
        return self.plain_class(**self.init_args)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise SearchSpaceError(
            f"{type(self).__name__} is a search-space placeholder; "
            "call se.to_supernet(space) before running the space"
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.init_args.items())


class Conv2d(Placeholder):
    """Elastic ``nn.Conv2d``: channels, kernel size (centre crop), padding, dilation may be choices.

    ``groups`` may be 1 or equal to ``in_channels`` (depthwise, following the channels).
    ``kernel_transform=True`` adds OFA's learnt kernel transforms between kernel sizes;
    ``kernel_transform="ofa"`` adds them in OFA's parameter layout (``7to5_matrix``, ... and the
    kernel at ``conv.weight``, as in its ``DynamicSeparableConv2d``), so OFA checkpoints load.
    """

    plain_class = nn.Conv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, kernel_transform=False):
        super().__init__(in_channels=in_channels, out_channels=out_channels,
                         kernel_size=kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode)
        self.kernel_transform = kernel_transform


class Linear(Placeholder):
    """Elastic ``nn.Linear``: the first ``in_features`` inputs and ``out_features`` outputs."""

    plain_class = nn.Linear

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features=in_features, out_features=out_features, bias=bias)


class BatchNorm2d(Placeholder):
    """Elastic ``nn.BatchNorm2d``: the first ``num_features`` of weight, bias and statistics."""

    plain_class = nn.BatchNorm2d

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__(num_features=num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)


class LayerNorm(Placeholder):
    """Elastic ``nn.LayerNorm`` over the last dimension (an int or a choice)."""

    plain_class = nn.LayerNorm

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__(normalized_shape=normalized_shape, eps=eps,
                         elementwise_affine=elementwise_affine, bias=bias)


class MultiheadAttention(Placeholder):
    """Elastic ``nn.MultiheadAttention``: embed dim and number of heads may be choices.

    Heads are never split: subnet head ``h`` takes the first ``embed_dim / num_heads``
    dimensions of supernet head ``h``, for q, k and v separately.
    """

    plain_class = nn.MultiheadAttention

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__(embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, bias=bias,
                         batch_first=batch_first)


class Parameter(Placeholder):
    """A learnt tensor whose sizes may be choices; a size ``k`` keeps the first ``k`` entries.

    A module that returns the tensor: ``self.cls_token = se.Parameter(1, 1, embed)``, then
    ``self.cls_token()`` in ``forward`` (a ViT's cls token and position embedding, sliced by the
    embed dim). Without a choice it is a plain :class:`~subnet_export.plain.modules.LearnedTensor`.

    Args:
        *shape: the sizes, ints or choices (and expressions) of ints.
        std: standard deviation of the truncated-normal init.
    """

    plain_class = LearnedTensor

    def __init__(self, *shape: int | ChoiceExpr, std: float = 0.02) -> None:
        if not shape:
            raise SearchSpaceError("Parameter needs at least one size")
        for size in shape:
            if not is_choice(size) and (type(size) is not int or size <= 0):
                raise SearchSpaceError(
                    f"Parameter sizes must be positive ints or choices, got {shape}")
        super().__init__(shape=tuple(shape), std=std)


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

    REDUCTIONS = ("sum", "mean", "concat")

    def __init__(self, n_candidates: int, n_chosen: int = 1, reduction: str = "sum",
                 label: str | None = None) -> None:
        super().__init__()
        if reduction not in self.REDUCTIONS:
            raise SearchSpaceError(
                f"InputChoice {label!r}: reduction {reduction!r} is not one of {self.REDUCTIONS}")
        if not 1 <= n_chosen <= n_candidates:
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
    """

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

    def is_elastic(self) -> bool:
        stages = self.depth if isinstance(self.depth, (list, tuple)) else [self.depth]
        return any(isinstance(d, Choice) for d in stages)
