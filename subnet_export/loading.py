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
from .space.placeholders import Placeholder
from .supernet.base import BaseSuperNetModule
from .supernet.convert import to_supernet

__all__ = ["build_supernet", "load_factory", "load_weights", "read_state_dict"]


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


def build_supernet(spec: str, strategy: str | None = None) -> nn.Module:
    """Call the factory of ``spec``; a returned search space is converted with ``strategy``.

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
        net = to_supernet(net, strategy or "sampling")
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

    A checkpoint dict holding ``state_dict`` or ``model`` is unwrapped.

    Raises:
        CheckpointError: missing, empty, truncated, wrong format, or needing arbitrary
            unpickling (refused, not executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {str(path)!r} is empty")
    if _format_of(path) == "safetensors":
        return _read_safetensors(path)
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
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise CheckpointError(
            f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return data


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

    Raises:
        CheckpointError: unreadable file, or missing / unexpected keys or wrong shapes (the
            first few are named).
    """
    state = read_state_dict(path)
    own = supernet.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs supernet {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s), e.g. {extra[:3]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:2]}")
    if problems:
        raise CheckpointError(
            f"{str(path)!r} does not fit this supernet: " + "; ".join(problems) +
            ". Was it saved from the same search space (and strategy)?")
    with torch.no_grad():
        supernet.load_state_dict(state, strict=True)
    return digest_file(path).sha256
