"""Which traced graph to reuse for a plain model: a store of templates and the pick among them.

A sweep keeps one :class:`TemplateStore` per process. For each plain model the export asks
:meth:`TemplateStore.pick` for a fitted graph: every stored template of the model's
:func:`~.template.topology_key` is instantiated in turn, and the first whose onnxruntime run on
the example inputs lands near the plain model's own output is taken. That run is only a
pre-selection (one key can hold archs whose graphs differ, e.g. where a residual add depends on
two widths being equal); the verdict is the full validation that follows every export.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from .template import GraphTemplate, TemplateMismatch
from .topology import int_attributes, topology_key

__all__ = ["MAX_TEMPLATE_BYTES", "PRESELECT_RTOL", "Pick", "TemplateStore", "keep", "reuse"]

#: models with more weight bytes than this are always traced (one protobuf holds 2 GiB)
MAX_TEMPLATE_BYTES = 2**30
#: largest error, relative to the largest output magnitude, for a template to be tried at all
#: (a wrong graph is off by far more; the verdict itself is the noise rule of the validation)
PRESELECT_RTOL = 1e-3


@dataclass
class Pick:
    """A fitted graph from the store, or why none fitted (``model`` None), and the key."""

    model: onnx.ModelProto | None
    key: str | None = None
    tried: int = 0
    reasons: list[str] = field(default_factory=list)
    loose: str = ""
    ints: dict[str, int] = field(default_factory=dict)


class TemplateStore:
    """Templates by topology key, at most ``limit`` of them, the least recently used dropped."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._templates: OrderedDict[int, GraphTemplate] = OrderedDict()
        self._serial = 0

    def __len__(self) -> int:
        return len(self._templates)

    def add(self, template: GraphTemplate) -> None:
        """Keep ``template`` (the oldest unused one goes when the store is full)."""
        self._serial += 1
        self._templates[self._serial] = template
        while len(self._templates) > self.limit:
            self._templates.popitem(last=False)

    def done(self) -> None:
        """Called when a trace made because nothing fitted has ended (kept or failed)."""

    def pick(self, key: str, state: dict[str, np.ndarray], plain: nn.Module,
             inputs: Sequence[torch.Tensor], in_names: Sequence[str], loose: str = "",
             ints: Mapping[str, int] | None = None) -> Pick:
        """The first template that fits ``state`` and runs close to ``plain``.

        First the templates of ``key``; then, when none fits, those of the ``loose`` key (integers
        left out) whose traced integer attributes differ from ``ints`` only where their graph
        holds them (``topology.py``).
        """
        result = Pick(None, key, loose=loose, ints=dict(ints or {}))
        candidates = [(s, t) for s, t in reversed(list(self._templates.items())) if t.key == key]
        if loose and ints is not None:
            candidates += [(s, t) for s, t in reversed(list(self._templates.items()))
                           if t.key != key and t.loose == loose and t.covers(ints)]
        for serial, template in candidates:
            result.tried += 1
            try:
                model = template.instantiate(state, None if template.key == key else ints)
                _preselect(model, plain, inputs, in_names)
            except TemplateMismatch as err:
                result.reasons.append(str(err))
                continue
            except Exception as err:  # a case the fitting does not handle: trace instead
                result.reasons.append(f"{type(err).__name__}: {err}")
                continue
            self._templates.move_to_end(serial)
            result.model = model
            return result
        return result


def _preselect(model: onnx.ModelProto, plain: nn.Module, inputs: Sequence[torch.Tensor],
               in_names: Sequence[str]) -> None:
    from ..runtime import make_session

    with torch.no_grad():
        expected = plain(*inputs)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    feed = {name: t.detach().cpu().numpy() for name, t in zip(in_names, inputs)}
    try:
        got = make_session(model.SerializeToString(), threads=1).run(None, feed)
    except Exception as err:  # onnxruntime rejects the fitted graph
        raise TemplateMismatch(f"onnxruntime: {str(err).strip().splitlines()[0]}") from err
    for k, (mine, ref) in enumerate(zip(got, expected)):
        ref = ref.detach().cpu().numpy()
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        if mine.shape != ref.shape or not np.allclose(mine, ref, rtol=0,
                                                      atol=PRESELECT_RTOL * max(scale, 1e-12)):
            raise TemplateMismatch(f"output {k} differs from the plain model's")


def reuse(templates: TemplateStore | None, plain: nn.Module, state: dict[str, torch.Tensor],
          inputs: Sequence[torch.Tensor], exporter: str, *options: Any) -> Pick:
    """A stored graph fitted to ``plain`` (its tensors ``state``), or why there is none.

    ``options`` (opset, dynamic axes, input names, output names) are part of the key. Only
    dynamo traces are reused (they name every initializer after its tensor).
    """
    if templates is None or exporter != "dynamo":
        return Pick(None)
    if sum(t.numel() * t.element_size() for t in state.values()) > MAX_TEMPLATE_BYTES:
        return Pick(None)  # a fitted graph is held, and run once, as one protobuf
    try:
        arrays = {n: t.detach().cpu().numpy() for n, t in state.items()}
    except TypeError:  # a dtype numpy does not have (bfloat16): always trace
        return Pick(None)
    key = topology_key(plain, exporter, *options)
    loose = topology_key(plain, exporter, *options, loose=True)
    return templates.pick(key, arrays, plain, inputs, options[-2], loose, int_attributes(plain))


def keep(templates: TemplateStore | None, pick: Pick, model: onnx.ModelProto, base_dir: Path,
         names: set[str]) -> None:
    """File the fresh trace ``model`` (weights under ``base_dir``) under ``pick``'s key."""
    if templates is None or pick.key is None:
        return
    try:
        templates.add(GraphTemplate.from_trace(model, base_dir, names, pick.key, pick.loose,
                                               pick.ints))
    except TemplateMismatch as err:
        pick.reasons.append(f"not kept as a template: {err}")
