"""What an exporter can write, and why an export failed, in one line that says what to do.

:func:`supported_opsets` is read from the installed torch and onnxscript (tests check it against
real exports); :func:`diagnose_failure` sorts a torch.onnx exception into one of
:data:`CATEGORIES` and names the operator and the module (a path of ``plain.named_modules()``)
where it runs. torch's own message, often 20-90 lines, never goes into the one line: the caller
keeps it as the error's ``details``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .op_site import exception_chain, module_of_frame, module_running_op
from .translations import other_exporter_hint

__all__ = [
    "CATEGORIES",
    "EXPORTERS",
    "Failure",
    "check_opset",
    "default_opset",
    "describe_failure",
    "diagnose_failure",
    "supported_opsets",
]

EXPORTERS = ("dynamo", "torchscript")

#: What a failed trace is diagnosed as.
CATEGORIES = ("unsupported_op", "data_dependent", "dynamic_shape", "other")

# Used where the libraries stop exposing the numbers (private modules move between versions);
# tests/export/test_trace.py checks the live values against real exports.
_DYNAMO_OPSETS = range(18, 26)
_TORCHSCRIPT_OPSETS = range(7, 21)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DYNAMO_OP = re.compile(r"No ONNX function found for <OpOverload\(op='(\w+)\.(\w+)'")
_DYNAMO_NODE = re.compile(r"Error when translating node .*?target=torch\.ops\.(\w+)\.(\w+)\.")
_TS_OP = re.compile(r"operator '(\w+::\w+)'|unrecognized namespace (\w+::\w+)")
_TS_SINCE = re.compile(r"added in version (\d+)")
_GUARDS = ("GuardOnDataDependentSymNode", "DataDependentOutputException")
_GUARD_TEXT = ("data-dependent", "Dynamic control flow is not supported")
_SHAPES = ("ConstraintViolationError",)
_SHAPE_TEXT = ("Constraints violated", "is not equal to", "specialized", "dynamic_shapes")
_SIZE_REF = re.compile(r"L\['(\w+)'\]\.size\(\)\[(\d+)\]")


def supported_opsets(exporter: str) -> range:
    """The default-domain opsets ``exporter`` really writes with the installed libraries.

    dynamo: torchlib's opset (18) up to the highest the onnxscript version converter handles
    (25 with onnxscript 0.7), capped at onnx's own. torch.onnx accepts others, but converts them
    with onnx's C converter, which for many models fails silently and leaves the file at 18.
    torchscript: torch's ``ONNX_MIN_OPSET`` (7) to ``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET`` (20);
    torch warns that higher ones are unsupported.

    Raises:
        InputError: an unknown exporter.
    """
    if exporter == "dynamo":
        try:
            import onnx
            from onnxscript.version_converter import _version_converter as vc
            from torch.onnx._internal.exporter import _constants

            low = max(_constants.TORCHLIB_OPSET, vc.SUPPORTED_MIN_ONNX_OPSET)
            return range(low, min(vc.SUPPORTED_MAX_ONNX_OPSET, onnx.defs.onnx_opset_version()) + 1)
        except (ImportError, AttributeError):
            return _DYNAMO_OPSETS
    if exporter == "torchscript":
        try:
            from torch.onnx import _constants as tc

            return range(tc.ONNX_MIN_OPSET, tc.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET + 1)
        except (ImportError, AttributeError):
            return _TORCHSCRIPT_OPSETS
    raise InputError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")


def default_opset(exporter: str) -> int:
    """The opset torch.onnx writes for ``exporter`` when none is asked for (20 in torch 2.13)."""
    supported = supported_opsets(exporter)
    try:
        from torch.onnx import _constants as tc

        opset = int(tc.ONNX_DEFAULT_OPSET)
    except (ImportError, AttributeError):
        opset = 20
    return min(max(opset, supported.start), supported.stop - 1)


def _other(exporter: str) -> str:
    return next(e for e in EXPORTERS if e != exporter)


def _span(opsets: range) -> str:
    return f"{opsets.start}..{opsets.stop - 1}"


def check_opset(exporter: str, opset: int) -> None:
    """Refuse an opset that ``exporter`` cannot write, rather than let it write another one.

    Raises:
        InputError: ``opset`` is outside :func:`supported_opsets` (or the exporter is unknown).
    """
    supported = supported_opsets(exporter)
    if opset in supported:
        return
    other = _other(exporter)
    also = supported_opsets(other)
    tail = f", or use exporter {other!r} for {_span(also)}" if opset in also else ""
    raise InputError(f"opset {opset} cannot be produced by the {exporter} exporter: it writes "
                     f"opsets {_span(supported)}; pass one of those{tail}")


@dataclass(frozen=True)
class Failure:
    """A diagnosed export failure.

    Attributes:
        category: one of :data:`CATEGORIES`.
        message: one line: what failed, where, and a hint on what to do next.
        op: the operator (``"aten::kthvalue"``) for ``unsupported_op``, else None.
        module: the module path where it happens (``""`` the root), None when not found.
    """

    category: str
    message: str
    op: str | None = None
    module: str | None = None


def describe_failure(exc: BaseException, plain: nn.Module, inputs: tuple[torch.Tensor, ...],
                     exporter: str, opset: int | None) -> str:
    """The one-line message of :func:`diagnose_failure`."""
    return diagnose_failure(exc, plain, inputs, exporter, opset).message


def diagnose_failure(exc: BaseException, plain: nn.Module, inputs: tuple[torch.Tensor, ...],
                     exporter: str, opset: int | None) -> Failure:
    """Sort a torch.onnx exception into a category and phrase it in one line.

    The exception's ``__cause__``/``__context__`` chain is read, as torch.onnx wraps the error.
    To name the module of an unsupported operator, ``plain`` runs once more under a dispatch
    mode; this only happens here, after a failure.

    Args:
        exc: what ``torch.onnx.export`` raised.
        plain: the model being exported.
        inputs: the example inputs it was traced with.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        opset: the requested opset, None for the default.

    Returns:
        A :class:`Failure`; its message holds no newline and at most one line of torch's text.
    """
    opset = default_opset(exporter) if opset is None else opset
    chain = list(exception_chain(exc))
    op = _missing_op(chain)
    if op is not None:
        return _unsupported(op, chain, plain, inputs, exporter, opset)
    if any(type(e).__name__ in _GUARDS or any(t in str(e) for t in _GUARD_TEXT) for e in chain):
        return _data_dependent(chain, plain, exporter)
    shape = next((e for e in chain if type(e).__name__ in _SHAPES or (
        type(e).__name__ == "UserError" and any(t in str(e) for t in _SHAPE_TEXT))), None)
    if shape is not None:
        what = _SIZE_REF.sub(r"axis \2 of forward argument '\1'", _first_line(shape))
        return Failure("dynamic_shape", _line(
            f"the dynamic axes do not fit the model or its example inputs ({what}); hint: drop "
            "the dynamic axis the model needs fixed, and give one dim name only to axes that "
            "are always equal"))
    cause = next((e for e in chain if not _is_wrapper(e)), exc)
    return Failure("other", _line(
        f"the {exporter} exporter failed at opset {opset}: {type(cause).__name__}: "
        f"{_first_line(cause)}; hint: torch's full message is in the error details (--debug)"))


def _missing_op(chain: list[BaseException]) -> tuple[str, str | None] | None:
    # (op, why the translation failed) or None; why is None when no translation exists
    for err in chain:
        text = _ANSI.sub("", str(err))
        found = _DYNAMO_OP.search(text)
        if found:
            return f"{found.group(1)}::{found.group(2)}", None
        found = _TS_OP.search(text)
        if found and type(err).__name__ == "UnsupportedOperatorError":
            return found.group(1) or found.group(2), None
    for k, err in enumerate(chain):
        found = _DYNAMO_NODE.search(_ANSI.sub("", str(err)))
        if found:
            inner = chain[-1] if k + 1 < len(chain) else err
            return f"{found.group(1)}::{found.group(2)}", _first_line(inner)
    return None


def _unsupported(op: tuple[str, str | None], chain: list[BaseException], plain: nn.Module,
                 inputs: tuple[torch.Tensor, ...], exporter: str, opset: int) -> Failure:
    name, why = op
    module = module_running_op(plain, inputs, {name})
    where = "" if module is None else f" (in {_module(module)})"
    since = next((int(m.group(1)) for e in chain for m in [_TS_SINCE.search(str(e))] if m), None)
    if since is not None and since in supported_opsets(exporter):
        hint = f"it has one from opset {since}: pass an opset in {since}..{_top(exporter)}"
    else:
        hint = other_exporter_hint(name, exporter, supported_opsets(_other(exporter)))
    what = (f"has no ONNX translation in the {exporter} exporter at opset {opset}" if why is None
            else f"could not be translated by the {exporter} exporter at opset {opset} ({why})")
    return Failure("unsupported_op", _line(f"operator {name}{where} {what}; hint: {hint}"),
                   op=name, module=module)


def _data_dependent(chain: list[BaseException], plain: nn.Module, exporter: str) -> Failure:
    module = module_of_frame(chain[0], plain)
    where = "" if module is None else f" in {_module(module)}"
    if exporter == "dynamo":
        hint = ("rewrite the branch with torch.where or torch.cond, or use exporter "
                "'torchscript' (it bakes in the branch the example inputs take)")
    else:
        hint = "rewrite the branch with torch.where or torch.cond"
    return Failure("data_dependent", _line(
        f"the forward branches on tensor values (data-dependent control flow){where}, which "
        f"the {exporter} exporter cannot trace; hint: {hint}"), module=module)


def _module(path: str) -> str:
    return f"module {path!r}" if path else "the model's own forward"


def _top(exporter: str) -> int:
    return supported_opsets(exporter).stop - 1


def _is_wrapper(err: BaseException) -> bool:
    # torch.onnx's own "step n/3 failed" wrappers: their first line says nothing about the cause
    return type(err).__module__.startswith("torch.onnx._internal") and type(err).__name__ in (
        "TorchExportError", "ConversionError")


def _first_line(err: BaseException, limit: int = 240) -> str:
    # torch's part of a message: its first line, clipped
    text = _ANSI.sub("", str(err)).strip()
    line = text.splitlines()[0].strip() if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _line(text: str) -> str:
    return " ".join(text.split())
