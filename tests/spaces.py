"""Search spaces and contract checks shared by the supernet, arch and materialize tests.

Imported as ``from spaces import ...``: the tests directory has no ``__init__.py`` (its helper
modules are imported by bare name), so pytest puts it on ``sys.path``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Any

import torch
from _noise import NOISE_FACTOR, assert_within_noise, float64_path
from torch import nn

import subnet_export as se
from subnet_export.space.placeholders import Placeholder

__all__ = [
    "NOISE_FACTOR",
    "STRATEGIES",
    "alpha_of",
    "image",
    "AttentionBlock",
    "CompositeSpace",
    "HeadShuffle",
    "MBBlock",
    "Single",
    "arch_grid",
    "arch_sweep",
    "assert_plain_contract",
    "count_params",
    "randomise",
    "randomise_norm_stats",
    "random_archs",
    "storage_ptrs",
]

STRATEGIES = ("sampling", "differentiable")


# -- small generic spaces -------------------------------------------------------------------------
class Single(nn.Module):
    """A space of one module; ``call`` adapts how it is applied (e.g. attention takes q, k, v)."""

    def __init__(self, module: nn.Module, call: str = "plain") -> None:
        super().__init__()
        self.m = module
        self.call = call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.call == "attention":
            return self.m(x, x, x, need_weights=False)[0]
        return self.m(x)


# -- the composite space ---------------------------------------------------------------------------
class MBBlock(nn.Module):
    """MobileNet inverted residual: expand (w * e), depthwise (kernel choice), project back to w."""

    def __init__(self, w: Any, e: Any, k: Any) -> None:
        super().__init__()
        hidden = w * e
        self.expand = se.Conv2d(w, hidden, 1, bias=False)
        self.bn1 = se.BatchNorm2d(hidden)
        self.dw = se.Conv2d(hidden, hidden, k, padding=k // 2, groups=hidden, bias=False)
        self.bn2 = se.BatchNorm2d(hidden)
        self.project = se.Conv2d(hidden, w, 1, bias=False)
        self.bn3 = se.BatchNorm2d(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.expand(x)))
        y = torch.relu(self.bn2(self.dw(y)))
        return x + self.bn3(self.project(y))


class HeadShuffle(nn.Module):
    """Reverses the head order of token features: keeps ``heads`` (a Choice) as an attribute.

    The reshape in ``forward`` only works when ``self.heads`` is an int, which is what the
    plain model and ``se.fixed_arch`` must provide.
    """

    def __init__(self, heads: se.Choice) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return x.reshape(b, t, self.heads, c // self.heads).flip(2).reshape(b, t, c)


class AttentionBlock(nn.Module):
    """Pre-norm transformer block over the pixels of a feature map (tokens batch-first)."""

    def __init__(self, w: Any, heads: Any, ratio: Any) -> None:
        super().__init__()
        self.norm1 = se.LayerNorm(w)
        self.attn = se.MultiheadAttention(w, heads, batch_first=True)
        self.shuffle = HeadShuffle(heads)
        self.norm2 = se.LayerNorm(w)
        self.fc1 = se.Linear(w, w * ratio)
        self.fc2 = se.Linear(w * ratio, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        n = self.norm1(t)
        t = t + self.shuffle(self.attn(n, n, n, need_weights=False)[0])
        t = t + self.fc2(torch.relu(self.fc1(self.norm2(t))))
        return t.transpose(1, 2).reshape(b, c, h, w)


class CompositeSpace(nn.Module):
    """Stem, a repeat of layer-choice blocks, an input choice, attention, classifier.

    Labels: ``w``, ``stem.k``, ``depth``, ``block{i}.op``, ``block{i}.e``, ``block{i}.k``,
    ``skip``, ``heads``, ``ratio``.
    """

    WIDTHS = (8, 16)
    HEADS = (1, 2, 4)
    DEPTHS = (1, 2, 3)

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        w = se.Choice(list(self.WIDTHS), label="w")
        k = se.Choice([3, 5], label="stem.k")
        self.stem = se.Conv2d(3, w, k, padding=k // 2, bias=False)
        self.stem_bn = se.BatchNorm2d(w)
        self.blocks = se.Repeat(self._block(w), depth=se.Choice(list(self.DEPTHS), label="depth"))
        self.skip = se.InputChoice(2, 1, reduction="sum", label="skip")
        heads = se.Choice(list(self.HEADS), label="heads")
        self.attn = AttentionBlock(w, heads, se.Choice([1, 2], label="ratio"))
        self.head = se.Linear(w, num_classes)

    @staticmethod
    def _block(w: Any):
        def make(i: int) -> nn.Module:
            e = se.Choice([1, 2], label=f"block{i}.e")
            k = se.Choice([3, 5, 7], label=f"block{i}.k")
            return se.LayerChoice({
                "mb": MBBlock(w, e, k),
                "conv": nn.Sequential(se.Conv2d(w, w, 3, padding=1), se.BatchNorm2d(w)),
                "skip": nn.Identity(),
            }, label=f"block{i}.op")
        return make

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = torch.relu(self.stem_bn(self.stem(x)))
        body = self.blocks(stem)
        y = self.attn(self.skip([stem, body]))
        return self.head(y.mean((2, 3)))


# -- helpers ---------------------------------------------------------------------------------------
def randomise_norm_stats(net: nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial weight, bias and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            for name in ("weight", "bias", "running_mean"):
                t = getattr(m, name, None)
                if isinstance(t, torch.Tensor) and t.dim() == 1 and "Norm" in type(m).__name__:
                    t.copy_(torch.randn(t.shape, generator=gen))
            var = getattr(m, "running_var", None)
            if isinstance(var, torch.Tensor):
                var.copy_(torch.rand(var.shape, generator=gen) * 1.5 + 0.25)


def randomise(net: nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Draw every supernet weight (architecture weights excluded) and norm statistic anew.

    Defaults like zero biases, unit norm weights or identity kernel transforms would hide a
    wrong slice, so the elastic tests never run on them.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "_arch_alpha" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    randomise_norm_stats(net, seed + 1)


def build(space: nn.Module, strategy: str, *, weights: bool = False) -> nn.Module:
    """A seeded supernet of ``space`` in eval mode, norm statistics (and weights) randomised."""
    torch.manual_seed(0)
    net = se.to_supernet(space, strategy=strategy).eval()
    (randomise if weights else randomise_norm_stats)(net)
    return net


def every_arch(specs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every arch of a search space (its ``se.search_space``), in product order."""
    labels = list(specs)
    return [dict(zip(labels, combo))
            for combo in itertools.product(*(specs[lb].values() for lb in labels))]


def image(c: int = 3, size: int = 6) -> torch.Tensor:
    """A seeded ``(2, c, size, size)`` input, the same for the same shape."""
    return torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(c * 100 + size))


def alpha_of(net: nn.Module, label: str) -> nn.Parameter:
    """The architecture weights of ``label`` (shared by every module with that label)."""
    for _, m in net.named_modules():
        if isinstance(m, se.BaseSuperNetModule) and label in getattr(m, "_alpha_labels", ()):
            return m.alpha(label)
    raise KeyError(label)


def arch_sweep(specs: Mapping[str, Any], limit: int = 24, seed: int = 0) -> list[dict[str, Any]]:
    """Every arch when there are at most ``limit``; else smallest, largest, mixed and random."""
    every = every_arch(specs)
    if len(every) <= limit:
        return every
    out = arch_grid(specs)
    rng = random.Random(seed)
    for arch in rng.sample(every, len(every)):
        if len(out) >= limit:
            break
        if arch not in out:
            out.append(arch)
    return out


def count_params(module: nn.Module) -> int:
    """Number of parameter elements (architecture weights excluded by construction)."""
    return sum(p.numel() for p in module.parameters())


def storage_ptrs(module: nn.Module) -> set[int]:
    """Data pointers of every parameter and buffer storage of ``module``."""
    return {t.untyped_storage().data_ptr()
            for t in list(module.parameters()) + list(module.buffers()) if t.numel()}


def arch_grid(specs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Smallest, largest and two mixed archs of a space whose labels are all value choices."""
    labels = list(specs)
    smallest = {lb: specs[lb].candidates[0] for lb in labels}
    largest = {lb: specs[lb].candidates[-1] for lb in labels}
    mixed_a = {lb: specs[lb].candidates[i % len(specs[lb].candidates)]
               for i, lb in enumerate(labels)}
    mixed_b = {lb: specs[lb].candidates[(i + 1) % len(specs[lb].candidates)]
               for i, lb in enumerate(labels)}
    out: list[dict[str, Any]] = []
    for arch in (smallest, largest, mixed_a, mixed_b):
        if arch not in out:
            out.append(arch)
    return out


def random_archs(supernet: nn.Module, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` archs drawn uniformly from ``se.search_space`` (independently of ``sample_arch``)."""
    rng = random.Random(seed)
    specs = se.search_space(supernet)
    return [{lb: rng.choice(spec.values()) for lb, spec in specs.items()} for _ in range(n)]


def assert_plain_contract(supernet: nn.Module, arch: Mapping[str, Any], *inputs: torch.Tensor,
                          factor: float = NOISE_FACTOR) -> nn.Module:
    """Materialize ``arch`` and check the contract of DESIGN.md; return the plain model.

    Checks: output parity with the supernet path within ``factor`` float32 noise floors (the
    supernet path in float64 is the oracle), ``state_dict`` keys equal to ``sub_state_dict``
    keys, no storage shared with the supernet, no supernet class left.
    """
    plain = se.materialize(supernet, arch)
    with torch.no_grad():
        with se.fixed_arch(supernet, arch):
            ref = supernet(*inputs)
            sub_keys = list(se.sub_state_dict(supernet))
        out = plain(*inputs)
    assert out.shape == ref.shape
    assert_within_noise(out, ref, float64_path(supernet, arch, *inputs), factor=factor,
                        what=f"arch {dict(arch)}")
    assert list(plain.state_dict()) == sub_keys
    assert not storage_ptrs(plain) & storage_ptrs(supernet)
    left = [type(m).__name__ for m in plain.modules()
            if isinstance(m, (se.BaseSuperNetModule, Placeholder))]
    assert not left, f"supernet classes left in the plain model: {left}"
    return plain
