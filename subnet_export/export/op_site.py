"""Where in a model an operator runs, or an exception was raised: a module path of the model.

Paths are those of ``plain.named_modules()``; ``""`` is the root module. Both lookups are for
error messages only, so they run after a failure and never raise.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["exception_chain", "module_of_frame", "module_running_op"]


class _FirstCall(TorchDispatchMode):
    """Records the innermost module path open at the first call of one of ``ops``."""

    def __init__(self, ops: Collection[str], stack: list[str]) -> None:
        super().__init__()
        self.ops = set(ops)
        self.stack = stack
        self.found: str | None = None

    def see(self, name: str) -> None:
        if self.found is None and name in self.ops:
            self.found = self.stack[-1] if self.stack else ""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.see(_op_name(func))
        return func(*args, **(kwargs or {}))


class _FirstApiCall(TorchFunctionMode):
    """The same at the Python API: ops that decompose before dispatch (``aten::unflatten``)."""

    def __init__(self, seen: _FirstCall) -> None:
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        # torch.kthvalue, Tensor.unflatten, torch.linalg.eig are named as their aten op
        self.seen.see(f"aten::{getattr(func, '__name__', '')}")
        return func(*args, **(kwargs or {}))


def _op_name(func: Any) -> str:
    # "aten::kthvalue", "demo::wobble": the schema name, without the overload
    try:
        return str(func._schema.name)
    except AttributeError:
        return str(func)


@contextmanager
def _module_stack(plain: nn.Module) -> Iterator[list[str]]:
    stack: list[str] = []
    with ExitStack() as hooks:
        for path, module in plain.named_modules():
            pre = module.register_forward_pre_hook(lambda *_, p=path: stack.append(p))
            post = module.register_forward_hook(lambda *_, p=path: _pop(stack, p),
                                                always_call=True)
            hooks.callback(pre.remove)
            hooks.callback(post.remove)
        yield stack


def _pop(stack: list[str], path: str) -> None:
    if stack and stack[-1] == path:
        stack.pop()


def module_running_op(plain: nn.Module, inputs: tuple[torch.Tensor, ...],
                      ops: Collection[str]) -> str | None:
    """The innermost module path in which one of ``ops`` first runs in ``plain(*inputs)``.

    Args:
        plain: the model; it runs once.
        inputs: its inputs.
        ops: operator names as in ``"aten::kthvalue"`` (namespace ``::`` name, no overload).

    Returns:
        The module path, or None when no such op runs (or the forward fails).
    """
    try:
        # gradients on, as in the export: under no_grad some modules (nn.MultiheadAttention)
        # take a fused path whose ops the exporter never saw
        with _module_stack(plain) as stack:
            mode = _FirstCall(ops, stack)
            with _FirstApiCall(mode), mode:
                plain(*inputs)
    except Exception:  # noqa: BLE001 - a lookup for a message: no answer, not a new error
        return None
    return mode.found


def module_of_frame(exc: BaseException, plain: nn.Module) -> str | None:
    """The innermost module of ``plain`` whose ``forward`` is on ``exc``'s traceback.

    The exception's ``__cause__``/``__context__`` chain is searched from the innermost one, as
    torch.onnx wraps the error raised in the model's code.
    """
    paths = {id(m): p for p, m in plain.named_modules()}
    for err in reversed(list(exception_chain(exc))):
        found = None
        tb = err.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_name == "forward" and code.co_argcount:
                owner = tb.tb_frame.f_locals.get(code.co_varnames[0])
                found = paths.get(id(owner), found)
            tb = tb.tb_next
        if found is not None:
            return found
    return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its ``__cause__`` (else ``__context__``), and so on, each once."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
