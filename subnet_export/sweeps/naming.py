"""Bundle names of a sweep: a content hash of what makes the bundle.

The name is a hash of the checkpoint's sha256, the frozen arch and the options that change the
bundle's bytes or verdict (inputs, exporter, opset, tolerances, providers, batch, seed, the
samples file). The same arch under the same options always lands in the same directory, which
is what lets a rerun skip it; a new checkpoint or option gives new names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["BUNDLE_PREFIX", "bundle_key", "bundle_name", "canonical_json", "state_digest"]

#: every bundle of a sweep is ``DIR/<prefix><16 hex digits>``
BUNDLE_PREFIX = "subnet-"
_DIGITS = 16


def canonical_json(data: Any) -> str:
    """``data`` as compact JSON with sorted keys (tuples as lists), the text that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def bundle_key(checkpoint_sha256: str, arch: Mapping[str, Any],
               options: Mapping[str, Any]) -> str:
    """The sha256 (hex) naming one bundle of a sweep.

    Args:
        checkpoint_sha256: the weights file's sha256 (or :func:`state_digest` without one).
        arch: the frozen arch, ``{label: value}``.
        options: the options that change the bundle (``SweepOptions.key_fields()``).
    """
    text = canonical_json({"checkpoint_sha256": checkpoint_sha256, "arch": dict(arch),
                           "options": dict(options)})
    return hashlib.sha256(text.encode()).hexdigest()


def bundle_name(key: str) -> str:
    """The directory name of the bundle whose key is ``key``."""
    return f"{BUNDLE_PREFIX}{key[:_DIGITS]}"


def state_digest(module: Any) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes, bytes), for weights with no file.

    A factory that builds its weights itself has no checkpoint to hash; its tensors stand in.
    """
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _byte_dtype() -> Any:
    import torch

    return torch.uint8
