"""Bundle names of a sweep: a content hash of checkpoint, frozen arch and bundle options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subnet_export.parity.rule import Tolerance
from subnet_export.signature import InputSpec
from subnet_export.sweeps.job import SweepOptions
from subnet_export.sweeps.naming import BUNDLE_PREFIX, bundle_key, bundle_name, state_digest

ARCH = {"width": 12, "block.k": 5, "depth": 2, "op": "conv", "cells": (0, 1)}
OPTIONS = SweepOptions((InputSpec((1, 3, 12, 12)),))


def _key(sha="a" * 64, arch=ARCH, options=OPTIONS):
    return bundle_key(sha, arch, options.key_fields(None))


def test_same_inputs_same_name_whatever_the_key_order_or_sequence_type():
    shuffled = dict(reversed(list(ARCH.items())))
    shuffled["cells"] = [0, 1]
    assert _key() == _key(arch=shuffled)
    name = bundle_name(_key())
    assert name.startswith(BUNDLE_PREFIX) and len(name) == len(BUNDLE_PREFIX) + 16


def test_the_checkpoint_changes_the_name():
    assert _key(sha="a" * 64) != _key(sha="b" * 64)


def test_the_arch_changes_the_name():
    assert _key() != _key(arch={**ARCH, "width": 8})


@pytest.mark.parametrize("change", [
    {"exporter": "torchscript"}, {"opset": 18}, {"batch": 4}, {"seed": 1},
    {"tolerance": Tolerance(atol=1e-4)}, {"providers": ("CPUExecutionProvider",)},
    {"inputs": (InputSpec((1, 3, 16, 16)),)}, {"output_names": ("logits",)},
    {"dynamic_axes": {"input": {2: "h"}}},
], ids=lambda c: next(iter(c)))
def test_options_that_change_the_bundle_change_the_name(change):
    other = SweepOptions(**{**OPTIONS.__dict__, **change})
    assert _key(options=other) != _key()


def test_latency_runs_do_not_change_the_name():
    assert _key(options=SweepOptions(**{**OPTIONS.__dict__, "latency_runs": 0})) == _key()


def test_a_samples_file_changes_the_name():
    assert bundle_key("a", ARCH, OPTIONS.key_fields("c" * 64)) != bundle_key(
        "a", ARCH, OPTIONS.key_fields(None))


def test_state_digest_follows_the_tensors():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    before = state_digest(net)
    assert state_digest(net) == before
    with torch.no_grad():
        net.weight[0, 0] += 1
    assert state_digest(net) != before
