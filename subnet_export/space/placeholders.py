"""What a search space is written with: layer placeholders that record their arguments.

``se.Conv2d(3, se.Choice([16, 24], label="w"), 3)`` holds no weights; :func:`se.to_supernet`
replaces it by the supernet module of the chosen strategy (or by the plain torch module when no
argument is a choice). Signatures mirror ``torch.nn`` so a space reads like a model.

``convention`` says whose slicing rules the supernet module follows: ``"native"`` (DESIGN.md's
rules, the default) or ``"nni"`` (NNI 2.10's one-shot supernets, parameter for parameter, so
that NNI checkpoints load and NNI's supernet path is reproduced). It is recorded on the supernet
module as ``.convention``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import SearchSpaceError
from ..plain.modules import LearnedTensor
from .choice import ChoiceExpr, is_choice, leaves

__all__ = [
    "CONVENTIONS",
    "BatchNorm2d",
    "Conv2d",
    "LayerNorm",
    "Linear",
    "MultiheadAttention",
    "Parameter",
    "Placeholder",
]

#: native: this project's slicing rules (DESIGN.md); nni: NNI 2.10's one-shot supernet modules.
CONVENTIONS = ("native", "nni")


class Placeholder(nn.Module):
    """A search-space element; ``init_args`` are the arguments it was written with."""

    plain_class: type[nn.Module] | None = None
    #: the arguments NNI 2.10's one-shot supernet module of this layer accepts as choices
    nni_choice_args: tuple[str, ...] = ()

    def __init__(self, **init_args: Any) -> None:
        super().__init__()
        self.init_args = init_args
        self.convention = "native"

    def _set_convention(self, convention: str) -> None:
        # Checked at construction: the error points at the line that wrote the layer.
        if convention not in CONVENTIONS:
            raise SearchSpaceError(f"{type(self).__name__}: convention must be one of "
                                   f"{list(CONVENTIONS)}, not {convention!r}")
        self.convention = convention
        if convention != "nni":
            return
        for key, value in self.init_args.items():
            if leaves(value) and key not in self.nni_choice_args:
                raise SearchSpaceError(
                    f"{type(self).__name__}: argument {key!r} is a choice, which NNI's one-shot "
                    f"supernets do not support (choices may be in "
                    f"{', '.join(self.nni_choice_args)}); make {key!r} a constant")

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

    Native: ``groups`` may be 1 or equal to ``in_channels`` (depthwise, following the channels).
    ``kernel_transform=True`` adds OFA's learnt kernel transforms between kernel sizes;
    ``kernel_transform="ofa"`` adds them in OFA's parameter layout (``7to5_matrix``, ... and the
    kernel at ``conv.weight``, as in its ``DynamicSeparableConv2d``), so OFA checkpoints load.
    ``convention="nni"``: NNI's ``MixedConv2d`` (any ``groups`` choice or expression, tuple
    kernels, its super-kernel shapes and its errors); no kernel transform.
    """

    plain_class = nn.Conv2d
    nni_choice_args = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                       "dilation", "groups")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, kernel_transform=False,
                 convention="native"):
        super().__init__(in_channels=in_channels, out_channels=out_channels,
                         kernel_size=kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode)
        self.kernel_transform = kernel_transform
        self._set_convention(convention)
        if convention == "nni" and kernel_transform:
            raise SearchSpaceError("Conv2d: NNI's supernets have no kernel transform; use "
                                   "kernel_transform=False with convention='nni'")


class Linear(Placeholder):
    """Elastic ``nn.Linear``: the first ``in_features`` inputs and ``out_features`` outputs."""

    plain_class = nn.Linear
    nni_choice_args = ("in_features", "out_features")

    def __init__(self, in_features, out_features, bias=True, *, convention="native"):
        super().__init__(in_features=in_features, out_features=out_features, bias=bias)
        self._set_convention(convention)


class BatchNorm2d(Placeholder):
    """Elastic ``nn.BatchNorm2d``: the first ``num_features`` of weight, bias and statistics."""

    plain_class = nn.BatchNorm2d
    nni_choice_args = ("num_features", "eps", "momentum")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, convention="native"):
        super().__init__(num_features=num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        self._set_convention(convention)


class LayerNorm(Placeholder):
    """Elastic ``nn.LayerNorm`` over the last dimension (an int or a choice).

    ``convention="nni"`` also takes a tuple shape (a choice of tuples), sliced first-k per dim.
    """

    plain_class = nn.LayerNorm
    nni_choice_args = ("normalized_shape",)  # NNI's MixedLayerNorm cannot size an eps choice

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *,
                 convention="native"):
        super().__init__(normalized_shape=normalized_shape, eps=eps,
                         elementwise_affine=elementwise_affine, bias=bias)
        self._set_convention(convention)


class MultiheadAttention(Placeholder):
    """Elastic ``nn.MultiheadAttention``: embed dim and number of heads may be choices.

    Native: heads are never split; subnet head ``h`` takes the first ``embed_dim / num_heads``
    dimensions of supernet head ``h``, for q, k and v separately. ``convention="nni"``: NNI's
    ``MixedMultiHeadAttention``: the first ``embed_dim`` rows of each of q, k and v, split into
    heads afterwards; ``kdim``, ``vdim`` (choices too), ``add_bias_kv`` and ``add_zero_attn``.
    """

    plain_class = nn.MultiheadAttention
    nni_choice_args = ("embed_dim", "num_heads", "kdim", "vdim", "dropout")

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False, *,
                 add_bias_kv=False, add_zero_attn=False, kdim=None, vdim=None,
                 convention="native"):
        super().__init__(embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, bias=bias,
                         batch_first=batch_first, add_bias_kv=add_bias_kv,
                         add_zero_attn=add_zero_attn, kdim=kdim, vdim=vdim)
        self._set_convention(convention)


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
