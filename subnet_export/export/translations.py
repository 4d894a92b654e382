"""Whether the other exporter translates an operator: the hint after an unsupported-op failure.

The answers come from torch.onnx's own registries, which live in private modules; when a lookup
fails (a torch that moved them) the hint claims nothing about the other exporter.
"""

from __future__ import annotations

import contextlib
import importlib
import logging

import torch

__all__ = ["other_exporter_hint"]

_REPLACE = "replace it in the forward with supported ops"
_SYMBOLIC = "register a symbolic with torch.onnx.register_custom_op_symbolic"


def other_exporter_hint(op: str, exporter: str, other_opsets: range) -> str:
    """What to do about operator ``op`` (``"aten::kthvalue"``) that ``exporter`` cannot translate.

    Args:
        op: the operator, ``namespace::name``.
        exporter: the exporter that failed, ``"dynamo"`` or ``"torchscript"``.
        other_opsets: the opsets the other exporter writes.

    Returns:
        The hint: the other exporter when its registry has the op, else how to replace or
        register it (and whether the other exporter lacks it too, where that is known).
    """
    aten = op.startswith("aten::")
    if exporter == "dynamo":
        since = _torchscript_since(op, other_opsets)
        if since is not None and since < other_opsets.stop:
            return (f"the torchscript exporter translates it: use exporter 'torchscript' with "
                    f"an opset in {max(since, other_opsets.start)}..{other_opsets.stop - 1}")
        if since is None and aten and _torchscript_known(other_opsets):
            return f"the torchscript exporter has no translation either; {_REPLACE}"
        return f"{_REPLACE}, or {_SYMBOLIC} and use exporter 'torchscript'"
    found = _dynamo_translates(op)
    if found == "yes":
        return "the dynamo exporter translates it: use exporter 'dynamo'"
    if found == "maybe":
        return "the dynamo exporter may translate it once decomposed: try exporter 'dynamo'"
    if found == "no" and aten:
        return f"the dynamo exporter has no translation either; {_REPLACE}, or {_SYMBOLIC}"
    return f"{_REPLACE}, or {_SYMBOLIC}"


def _torchscript_known(opsets: range) -> bool:
    try:
        _torchscript_registry(opsets)
    except Exception:  # noqa: BLE001 - no registry to read: claim nothing
        return False
    return True


def _torchscript_registry(opsets: range):  # noqa: ANN202 - a private torch type
    from torch.onnx._internal.torchscript_exporter import registration

    # each symbolic_opsetN module registers its ops when imported; the export imports a few
    for version in opsets:
        with contextlib.suppress(ImportError):
            importlib.import_module(
                f"torch.onnx._internal.torchscript_exporter.symbolic_opset{version}")
    return registration.registry


def _torchscript_since(op: str, opsets: range) -> int | None:
    # the lowest opset at which the TorchScript exporter has a symbolic for op, None if none
    try:
        group = _torchscript_registry(opsets).get_function_group(op)
        return None if group is None else int(group.get_min_supported())
    except Exception:  # noqa: BLE001 - see _torchscript_known
        return None


def _dynamo_translates(op: str) -> str | None:
    # "yes": torchlib has it; "maybe": torch decomposes it first; "no"; None: unknown
    try:
        namespace, name = op.split("::", 1)
        packet = getattr(getattr(torch.ops, namespace), name)
        overloads = [getattr(packet, o) for o in packet.overloads()]
        from torch._decomp import decomposition_table
        from torch.onnx._internal.exporter import _registration

        logger = logging.getLogger("torch.onnx")
        level = logger.level
        logger.setLevel(logging.ERROR)  # one warning per missing torchvision op otherwise
        try:
            registry = _registration.ONNXRegistry.from_torchlib()
        finally:
            logger.setLevel(level)
    except Exception:  # noqa: BLE001 - no registry to read: claim nothing
        return None
    if any(registry.is_registered(o) for o in overloads):
        return "yes"
    if any(o in decomposition_table or _composite(o) for o in overloads):
        return "maybe"
    return "no"


def _composite(overload: object) -> bool:
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(
            overload.name(), "CompositeImplicitAutograd"))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an overload the dispatcher does not know
        return False
