"""Seeded construction of a supernet, with BatchNorm statistics estimated on random paths.

Fresh BatchNorm layers hold mean 0 and variance 1, which hides any bug that slices or skips
running statistics. Here the statistics are estimated the way a trained supernet's are: a few
training-mode forwards, each on a random path of the supernet, averaged cumulatively. They are
then non-trivial, per channel, and shared across paths, as after real supernet training.
Layers no sampled path reached keep seeded random statistics, never the trivial 0 and 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

import subnet_export as se
from subnet_export.supernet.norm import ElasticBatchNorm2d

__all__ = ["calibrate_batchnorm", "seeded_supernet"]


def seeded_supernet(build: Callable[[], nn.Module], strategy: str, seed: int,
                    input_shape: Sequence[int], hooks: Sequence[type] = (),
                    calib_steps: int = 6) -> nn.Module:
    """Build the space with ``build()``, convert it, calibrate BatchNorm; all from ``seed``.

    The global torch RNG is left as it was. The result is in eval mode, with ``input_shape``
    recorded as its ``input_shape`` attribute (the CLI's default input).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = se.to_supernet(build(), strategy, hooks=list(hooks))
    net.input_shape = tuple(input_shape)
    calibrate_batchnorm(net, input_shape, seed, calib_steps)
    se.sample_arch(net, seed)
    return net.eval()


def calibrate_batchnorm(net: nn.Module, input_shape: Sequence[int], seed: int,
                        steps: int = 6, batch: int = 8) -> None:
    """Seed every BatchNorm's running statistics, then re-estimate them over ``steps`` paths.

    Statistics start random (mean ~ N(0, 0.1^2), variance ~ U(0.5, 1.5)). Then come sweep
    paths, the k-th taking every label's k-th candidate (so every candidate of every label runs
    at least once), and ``steps`` random paths (``se.sample_arch``). Each path runs one
    training-mode forward on standard-normal inputs of ``input_shape`` with batch ``batch``;
    the statistics of the layers it reaches become the cumulative average over the paths. A
    channel that only ever saw a constant input (a path whose node is all zeros) keeps its
    seeded statistics: a variance of 0 would turn any later input into a blow-up. Weights are
    not touched.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, ElasticBatchNorm2d))]
    with torch.no_grad():
        for bn in bns:
            if bn.running_mean is not None:
                bn.running_mean.copy_(0.1 * torch.randn(bn.running_mean.shape, generator=gen))
                bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=gen))
    if steps <= 0:
        return
    seeded = [(bn.running_mean.clone(), bn.running_var.clone()) if bn.running_mean is not None
              else None for bn in bns]
    saved = []
    for bn in bns:
        saved.append(_momentum(bn))
        _set_momentum(bn, None)  # cumulative average: the first batch replaces the seed
        bn.num_batches_tracked.zero_()
    was_training = net.training
    net.train()
    try:
        with torch.no_grad():
            for arch in [*_sweep(net), *(se.sample_arch(net, seed * 1000 + step)
                                         for step in range(steps))]:
                with se.fixed_arch(net, arch):
                    net(torch.randn(batch, *tuple(input_shape)[1:], generator=gen))
    finally:
        for bn, momentum in zip(bns, saved):
            _set_momentum(bn, momentum)
        net.train(was_training)
    with torch.no_grad():
        for bn, seed_stats in zip(bns, seeded):
            if seed_stats is not None:
                flat = bn.running_var < 1e-4
                bn.running_mean[flat] = seed_stats[0][flat]
                bn.running_var[flat] = seed_stats[1][flat]


def _sweep(net: nn.Module) -> list[dict]:
    specs = se.search_space(net)
    values = {label: spec.values() for label, spec in specs.items()}
    n = max((len(v) for v in values.values()), default=0)
    return [{label: v[k % len(v)] for label, v in values.items()} for k in range(n)]


def _momentum(bn: nn.Module):
    return bn.momentum if isinstance(bn, nn.BatchNorm2d) else bn.args["momentum"]


def _set_momentum(bn: nn.Module, value) -> None:
    if isinstance(bn, nn.BatchNorm2d):
        bn.momentum = value
    else:
        bn.args["momentum"] = value
