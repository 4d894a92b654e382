"""Loading what the CLI is pointed at: a supernet factory, its weights, input shapes.

``SUPERNET`` strings run user code (they import a module and call a function in it); nothing
else the tool reads (arch, bundle, budget, samples, checkpoints) can make it run code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .bundle.hashing import digest_file
from .errors import CheckpointError, InputError
from .nni.checkpoint import arch_weight_keys
from .space.placeholders import Placeholder
from .supernet.base import BaseSuperNetModule
from .supernet.convert import to_supernet
from .weights import LoadedWeights, load_state

__all__ = ["build_and_load", "build_supernet", "load_checkpoint", "load_factory", "load_weights",
           "read_checkpoint", "read_state_dict"]


def load_factory(spec: str) -> Callable[..., Any]:
    """Resolve ``path/to/file.py:factory`` or ``package.module:factory`` to the callable.

    Raises:
        InputError: malformed spec, missing file or module, missing or non-callable factory,
            or the module failing to import (its error is named).
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr.isidentifier():
        raise InputError(
            f"SUPERNET {spec!r} is not of the form path/to/file.py:factory or "
            "package.module:factory")
    try:
        if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
            path = Path(module_part)
            if not path.is_file():
                raise InputError(f"SUPERNET file {module_part!r} does not exist")
            digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
            name = f"_subnet_export_user_{digest}"
            loader = importlib.util.spec_from_file_location(name, path)
            if loader is None or loader.loader is None:
                raise InputError(f"cannot import {module_part!r} as a Python file")
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            # Let a factory file import its siblings (``from _layers import ...``).
            sys.path.insert(0, str(path.resolve().parent))
            try:
                loader.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.resolve().parent))
        else:
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_part)
    except InputError:
        raise
    except ModuleNotFoundError as err:
        raise InputError(f"cannot import {module_part!r}: {err}") from err
    except Exception as err:  # the user's module raised while importing
        raise InputError(
            f"importing {module_part!r} failed: {type(err).__name__}: {err} "
            "(rerun with --debug for the traceback)") from err
    factory = getattr(module, attr, None)
    if factory is None:
        raise InputError(f"{module_part!r} has no attribute {attr!r}")
    if not callable(factory):
        raise InputError(f"{spec!r} is not callable (it is a {type(factory).__name__})")
    return factory


def build_supernet(spec: str, strategy: str | None = None, *,
                   default_strategy: str = "sampling") -> nn.Module:
    """Call the factory of ``spec``; a returned search space is converted with ``strategy``.

    ``default_strategy`` converts a space when ``strategy`` is None.

    Raises:
        InputError: the factory raised or returned something that is not a supernet or space.
    """
    factory = load_factory(spec)
    try:
        net = factory()
    except Exception as err:
        raise InputError(
            f"the factory {spec!r} raised {type(err).__name__}: {err} "
            "(rerun with --debug for the traceback)") from err
    if not isinstance(net, nn.Module):
        raise InputError(
            f"the factory {spec!r} returned a {type(net).__name__}; it must return a supernet "
            "(se.to_supernet(space)) or a search space (an nn.Module with se.* layers)")
    is_space = any(isinstance(m, Placeholder) for m in net.modules())
    is_supernet = any(isinstance(m, BaseSuperNetModule) for m in net.modules())
    if not (is_space or is_supernet):
        raise InputError(_no_space_message(net, spec))
    if is_space:
        net = to_supernet(net, strategy or default_strategy)
    elif strategy is not None and is_supernet and _strategy_of(net) != strategy:
        raise InputError(
            f"the factory returned a {_strategy_of(net)} supernet but --strategy {strategy} was "
            "given; drop --strategy or return a search space")
    return net


#: top-level packages of NAS frameworks whose supernets are not ours, and what they are
_FOREIGN = {"nni": "an NNI model space or one-shot supernet",
            "ofa": "a Once-for-All network from the ofa package"}


def _no_space_message(net: nn.Module, spec: str) -> str:
    for m in net.modules():
        package = type(m).__module__.split(".")[0]
        if package in _FOREIGN:
            return (f"the factory {spec!r} returned {_FOREIGN[package]} "
                    f"({type(m).__module__}.{type(m).__qualname__}), which subnet-export cannot "
                    "read: build the space with subnet_export's layers (se.Choice, se.Conv2d, "
                    "se.LayerChoice, ...; docs/supernet.md) and give the trained weights with "
                    "--weights")
    return (f"the factory {spec!r} returned a {type(net).__name__} with no search space in it "
            "(no se.* choice and no supernet module), so there is no subnet to choose; return "
            "the search space or its supernet (se.to_supernet(space))")


def _strategy_of(net: nn.Module) -> str | None:
    for m in net.modules():
        if isinstance(m, BaseSuperNetModule):
            return m.strategy
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a torch checkpoint (``weights_only=True``, never unpickled).

    A checkpoint dict holding ``state_dict`` or ``model`` is unwrapped (a Lightning Trainer
    ``.ckpt`` holds ``state_dict`` beside its loops and optimizer states).

    Raises:
        CheckpointError: missing, empty, truncated, wrong format, or needing arbitrary
            unpickling (refused, not executed).
    """
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """:func:`read_state_dict`, and what held the state when it was unwrapped (else None).

    Raises:
        CheckpointError: as :func:`read_state_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {str(path)!r} is empty")
    if _format_of(path) == "safetensors":
        return _read_safetensors(path), None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {str(path)!r}: it needs arbitrary unpickling, which can run code "
            "(only tensors and plain containers are allowed). Re-save it with "
            "torch.save(model.state_dict(), ...) or as safetensors.") from err
    except Exception as err:
        raise CheckpointError(
            f"cannot read {str(path)!r} as a torch checkpoint ({type(err).__name__}: {err}); "
            "is it truncated?") from err
    container = None
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                container = _container(data, key)
                data = data[key]
                break
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise CheckpointError(
            f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return data, container


def _container(data: dict, key: str) -> str:
    if "pytorch-lightning_version" in data or "optimizer_states" in data:
        return (f"a Lightning Trainer checkpoint (epoch {data.get('epoch')}, global step "
                f"{data.get('global_step')})")
    return f"the {key!r} entry of a checkpoint dict"


def _format_of(path: Path) -> str:
    # By content first (a zip archive or a pickle is torch's, an 8-byte length then "{" is
    # safetensors), then by suffix, so a truncated .pt is reported as a torch checkpoint.
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "safetensors" if path.suffix == ".safetensors" else "torch"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"cannot read {str(path)!r} as safetensors ({err}); give a .safetensors file or a "
            "torch checkpoint (.pt/.pth)") from err


def load_weights(supernet: nn.Module, path: str | Path) -> str:
    """Load a checkpoint into ``supernet`` (strict); return the file's sha256.

    A state that does not fit as saved is translated (:func:`load_checkpoint` says how):

    - by the supernet root's ``translate_state_dict(state) -> tuple[dict, str] | None``, when
      it has one: the state under the supernet's keys and a one-line note of what it mapped,
      or None when the state is not in its format (a Once-for-All space maps older OFA keys);
    - else from NNI 2.x's one-shot layout (``subnet_export/nni/checkpoint.py``): the
      ``model.model.`` prefix of the Lightning module, a repeat's ``.blocks.N.`` level, NNI's
      architecture weights onto ours by label (sizes and shared copies checked; ignored by a
      sampling supernet), ENAS's controller tensors ignored.

    Raises:
        CheckpointError: unreadable file, or keys that fit nowhere (the first is named with
            the nearest key of the supernet), missing keys, wrong shapes or architecture
            weights that do not fit their labels.
    """
    return load_checkpoint(supernet, path).sha256 or ""


def load_checkpoint(supernet: nn.Module, path: str | Path) -> LoadedWeights:
    """:func:`load_weights`, returning the file's sha256 and the one-line layout note.

    Raises:
        CheckpointError: as :func:`load_weights`.
    """
    return _load_read(supernet, path, *read_checkpoint(path))


def _load_read(supernet: nn.Module, path: str | Path, state: dict[str, torch.Tensor],
               container: str | None) -> LoadedWeights:
    note = load_state(supernet, state, str(path))
    if container is not None:
        note = f"{note}; read from {container}" if note else (
            f"{container[0].upper()}{container[1:]}: its state dict fitted as saved")
    return LoadedWeights(digest_file(path).sha256, note)


def build_and_load(spec: str, strategy: str | None, weights: str | Path | None
                   ) -> tuple[nn.Module, LoadedWeights]:
    """:func:`build_supernet` then :func:`load_checkpoint`, as ``subnet-export onnx`` does.

    With no ``strategy``, a space whose checkpoint holds architecture weights is built
    differentiable, so that no arch means their argmax (NNI's ``export()`` of DARTS).

    Raises:
        InputError: as :func:`build_supernet`.
        CheckpointError: as :func:`load_weights`.
    """
    if weights is None:
        return build_supernet(spec, strategy), LoadedWeights()
    state, container = read_checkpoint(weights)
    default = "differentiable" if arch_weight_keys(state) else "sampling"
    net = build_supernet(spec, strategy, default_strategy=default)
    return net, _load_read(net, weights, state, container)
