"""NNI 2.x automatic labels: ``model_1``, ``model_2``, ... inside ``@model_wrapper``.

NNI numbers every choice created without a label from a counter of the innermost model
namespace. ``@model_wrapper`` opens a namespace for each construction of the model (so that
labels restart at ``model_1`` every time); a model-wrapped class built inside another takes the
next number of its parent and chains it (``model_3_1``, ``model_3_2``, ...). Outside any model
namespace labels come from a process-wide ``default`` counter (``default_1``, ...), which NNI
never resets. Exported arch JSON is keyed by these labels, so they are reproduced exactly.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

__all__ = ["ModelNamespace", "auto_label", "next_label", "reset_uid"]

_counters: defaultdict[str, int] = defaultdict(int)
_stack: list[ModelNamespace] = []


def _uid(namespace: str) -> int:
    _counters[namespace] += 1
    return _counters[namespace]


def reset_uid(namespace: str = "default") -> None:
    """Restart the numbering of ``namespace`` (NNI's ``reset_uid``; tests reset ``default``)."""
    _counters[namespace] = 0


class ModelNamespace:
    """A numbering scope for automatic labels (entered by each ``@model_wrapper`` construction)."""

    def __init__(self) -> None:
        self.name_path: list[int] = []

    def simple_name(self) -> str:
        """``model`` for the outermost scope, ``model_3_1`` for nested ones."""
        return "model" + "".join(f"_{k}" for k in self.name_path)

    def __enter__(self) -> ModelNamespace:
        if _stack:
            parent = _stack[-1]
            self.name_path = parent.name_path + [_uid(parent.simple_name())]
        else:
            self.name_path = []
        _stack.append(self)
        reset_uid(self.simple_name())
        return self

    def __exit__(self, *exc: object) -> None:
        _stack.pop()


def next_label() -> str:
    """The next automatic label of the current namespace (NNI's ``ModelNamespace.next_label``)."""
    if not _stack:
        warnings.warn(
            "no @model_wrapper around this choice: its label comes from a process-wide counter "
            "(default_N), as in NNI; decorate the model class with @model_wrapper for labels "
            "that restart at model_1", RuntimeWarning, stacklevel=3)
        name = "default"
    else:
        name = _stack[-1].simple_name()
    return f"{name}_{_uid(name)}"


def auto_label(label: str | None) -> str:
    """``label`` itself, or the next automatic label when it is None."""
    return next_label() if label is None else label
