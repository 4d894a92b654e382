"""BatchNorm recalibration: running statistics re-estimated for the subnet actually deployed.

A supernet's statistics were gathered while many paths trained and fit none of them (Once-for-All
"BN calibration"). Each layer gets the mean and unbiased variance of its input over calibration
samples, accumulated in float64 (per-batch moments merged with Chan's formula). Methods:

- ``"exact"`` (default): layers in first-call order, each from a pass in which every earlier
  layer already uses its new statistics, so each ends with its input's statistics *at inference*,
  independent of the batch size up to float error. A pass stops right after the layer it serves:
  about half a full pass per layer.
- ``"one-pass"``: Once-for-All's ``set_running_statistics``: one pass, every layer normalizing by
  its batch's statistics as in training. Cheaper, but later layers depend on the batch size. The
  variance is pooled over all samples, not OFA's average of per-batch variances.

No module runs in training mode, so ``momentum`` and ``num_batches_tracked`` are never touched.
See docs/recalibration.md.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import InputError, SubnetExportError
from ..supernet.norm import ElasticBatchNorm2d
from .data import Batches, select, split, to_tensors

__all__ = ["METHODS", "CalibrationInfo", "recalibrate_bn"]

#: Recalibration methods ``recalibrate_bn`` accepts.
METHODS = ("exact", "one-pass")



@dataclass(frozen=True)
class CalibrationInfo:
    """What one recalibration did; recorded in the bundle manifest.

    Attributes:
        method: ``"exact"`` or ``"one-pass"`` (see the module docstring).
        num_samples: calibration samples used.
        batch_size: samples per forward batch.
        seed: seed of the permutation that ordered and subsampled the samples.
        num_bn_layers: BatchNorm layers whose statistics were re-estimated.
    """

    method: str
    num_samples: int
    batch_size: int
    seed: int
    num_bn_layers: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def recalibrate_bn(model: nn.Module, data: Any, *, batch_size: int = 32,
                   num_samples: int | None = None, seed: int = 0,
                   method: str = "exact") -> CalibrationInfo:
    """Reset and re-estimate every BatchNorm's running statistics on calibration inputs.

    Covers ``nn.BatchNorm1d/2d/3d`` (any ``_BatchNorm`` with running statistics) and the
    supernet's ``ElasticBatchNorm2d``. On a supernet inside ``se.fixed_arch(supernet, arch)``
    only the active path runs, so only the first ``k`` channels of the layers on that path
    change; every other statistic of the supernet is left as it was. Layers the forward never
    calls are left untouched. All modules run in eval mode (dropout off); training flags are
    restored afterwards.

    Args:
        model: a plain model, or a supernet used inside ``se.fixed_arch``.
        data: the calibration inputs, batch first: a tensor or numpy array ``(N, ...)`` for a
            one-input model; a list or tuple of them (same ``N``) for a multi-input model; or
            the path of an ``.npz`` whose array named ``input`` (else its first array) is the
            single input. Floating inputs are cast to the model's floating dtype and moved to
            its device.
        batch_size: samples per forward batch.
        num_samples: use this many samples, drawn by a seeded permutation; None or more than
            ``N``: all of them.
        seed: seed of the permutation (samples are always shuffled, so the one-pass method
            does not see class-sorted batches).
        method: ``"exact"`` or ``"one-pass"`` (see the module docstring).

    Returns:
        A :class:`CalibrationInfo`.

    Raises:
        InputError: the model has no BatchNorm with running statistics (or none ran), the data
            is empty, unreadable, non-finite or does not fit the model, or an option is out of
            range.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if method not in METHODS:
        raise InputError(f"unknown recalibration method {method!r}; use one of {list(METHODS)}")
    if not _positive_int(batch_size):
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_samples is not None and not _positive_int(num_samples):
        raise InputError(f"num_samples must be a positive int or None, got {num_samples!r}")
    layers = {m: name or "<root>" for name, m in model.named_modules() if _has_stats(m)}
    if not layers:
        raise InputError(
            "the model has no BatchNorm layer with running statistics; there is nothing to "
            "recalibrate (drop the calibration data)")
    inputs = select(to_tensors(data), None if num_samples is None else int(num_samples), seed)
    n = inputs[0].shape[0]
    batch_size = int(batch_size)
    # Batches stay on the CPU until their forward: a large calibration set never sits whole
    # on the accelerator.
    batches = split(inputs, batch_size, merge_single=method == "one-pass")

    modes = {m: m.training for m in model.modules()}
    saved = [(m, m.running_mean.clone(), m.running_var.clone()) for m in layers]
    model.eval()
    try:
        with torch.no_grad():
            run = _recalibrate_exact if method == "exact" else _recalibrate_one_pass
            count = run(model, layers, batches)
    except BaseException:
        # A failure part-way must not leave some layers recalibrated and others not.
        with torch.no_grad():
            for m, mean, var in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        raise
    finally:
        for m, training in modes.items():
            m.training = training
    return CalibrationInfo(method, n, batch_size, seed, count)


# -- the two methods ---------------------------------------------------------------------------
class _Stop(Exception):
    """Ends a forward once the layer being recalibrated has seen its input."""


def _recalibrate_exact(model: nn.Module, layers: dict[nn.Module, str], batches: Batches) -> int:
    order = _call_order(model, layers, batches[0])
    for module, calls in order:
        moments = _Moments()
        seen = [0]

        def collect(mod, args, moments=moments, seen=seen, calls=calls):
            moments.add(args[0])
            seen[0] += 1
            if seen[0] == calls:  # nothing later in this forward feeds this layer
                raise _Stop
        handle = module.register_forward_pre_hook(collect)
        try:
            for batch in batches:
                seen[0] = 0
                try:
                    _forward(model, batch)
                except _Stop:
                    pass
        finally:
            handle.remove()
        moments.write(module, layers[module])
    return len(order)


def _recalibrate_one_pass(model: nn.Module, layers: dict[nn.Module, str],
                          batches: Batches) -> int:
    stats: dict[nn.Module, _Moments] = {}

    def normalize_by_batch(mod, args, output):
        x = args[0]
        stats.setdefault(mod, _Moments()).add(x)
        params, eps = _active(mod, x.shape[1])
        return F.batch_norm(x, None, None, params["weight"], params["bias"], True, 0.0, eps)

    handles = [m.register_forward_hook(normalize_by_batch) for m in layers]
    try:
        for batch in batches:
            _forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    if not stats:
        _raise_none_ran(layers)
    for module, moments in stats.items():
        moments.write(module, layers[module])
    return len(stats)


def _call_order(model: nn.Module, layers: dict[nn.Module, str],
                batch: tuple[torch.Tensor, ...]) -> list[tuple[nn.Module, int]]:
    # A layer's input depends only on layers called before it, so first-call order is an order
    # in which each layer's inputs are final when its turn comes. A layer called several times
    # per forward pools its inputs; a later call fed by a layer not yet done is approximate.
    calls: dict[nn.Module, int] = {}

    def count(mod, args):
        calls[mod] = calls.get(mod, 0) + 1
    handles = [m.register_forward_pre_hook(count) for m in layers]
    try:
        _forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        _raise_none_ran(layers)
    return list(calls.items())


def _raise_none_ran(layers: dict[nn.Module, str]) -> None:
    raise InputError(
        f"the model has {len(layers)} BatchNorm layers but none ran on the calibration inputs; "
        "for a supernet, recalibrate inside se.fixed_arch(supernet, arch)")


# -- statistics -------------------------------------------------------------------------------
class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged exactly in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
        nb = flat.shape[1]
        mean_b = flat.mean(1)
        m2_b = (flat - mean_b[:, None]).square().sum(1)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        # Chan et al.: merge (n, mean, M2) of two sets without revisiting either
        total = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / total)
        self.m2 = self.m2 + m2_b + delta.square() * (self.n * nb / total)
        self.n = total

    def write(self, module: nn.Module, name: str) -> None:
        if self.mean is None or self.n < 2:
            raise InputError(
                f"BatchNorm {name!r} saw {self.n} value(s) per channel; an unbiased variance "
                "needs at least 2: pass more calibration samples")
        params, _ = _active(module, self.mean.shape[0])
        params["running_mean"].copy_(self.mean.to(params["running_mean"].dtype))
        params["running_var"].copy_((self.m2 / (self.n - 1)).to(params["running_var"].dtype))


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _has_stats(m: nn.Module) -> bool:
    return (isinstance(m, (_BatchNorm, ElasticBatchNorm2d))
            and getattr(m, "running_mean", None) is not None)


def _active(m: nn.Module, channels: int) -> tuple[dict[str, torch.Tensor | None], float]:
    """The layer's tensors and eps as its forward uses them, checked against its input's channels.

    An elastic layer's come from its one slicing helper, ``active_params``.
    """
    if isinstance(m, ElasticBatchNorm2d):
        v = m.forward_values()
        params, eps = m.active_params(v), float(v["eps"])
    else:
        params = {k: getattr(m, k) for k in ("weight", "bias", "running_mean", "running_var")}
        eps = float(m.eps)
    if params["running_mean"].shape[0] != channels:
        raise InputError(f"a BatchNorm layer of {params['running_mean'].shape[0]} channels got "
                         f"an input of {channels}; recalibrate inside se.fixed_arch(supernet, "
                         "arch), on inputs shaped like the model's")
    return params, eps


def _to_model(batch: Sequence[torch.Tensor], model: nn.Module) -> list[torch.Tensor]:
    tensors = list(model.parameters()) + list(model.buffers())
    floats = [t for t in tensors if t.is_floating_point()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = floats[0].dtype if floats else torch.get_default_dtype()
    return [t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in batch]


def _forward(model: nn.Module, batch: Sequence[torch.Tensor]) -> None:
    try:
        model(*_to_model(batch, model))
    except (_Stop, SubnetExportError):
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        shapes = [tuple(t.shape) for t in batch]
        raise InputError(
            f"the model cannot run on calibration inputs of shape {shapes}: {err}; pass "
            "batch-first arrays shaped like the model's inputs, one per input") from err

