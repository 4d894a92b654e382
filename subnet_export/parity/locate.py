"""Name the module whose output first goes wrong between the plain torch model and its ONNX file.

torch side: forward hooks record each module's output in the order modules finish. ONNX side:
every node carries the module path that produced it (the dynamo exporter's
``pkg.torch.onnx.name_scopes`` node metadata, its ``namespace`` string in older versions, or the
TorchScript exporter's ``/blocks/blocks.0/conv/Conv`` node names). A module's output tensors
are the values its nodes produce and something outside it reads; those are added as extra graph
outputs of an in-memory copy, run once through onnxruntime and compared in torch's order.

Every module output is judged; :mod:`.blame` picks the one where the error enters.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..export.graph import input_names
from ..runtime import make_session
from .blame import Finding, blame, judge
from .report import Divergence
from .rule import Tolerance, tolerance_for

__all__ = ["locate_divergence", "locate_torch_divergence", "module_scopes"]

_NO_MODULE = "_empty_nn_module_stack_from_metadata_hook"


def module_scopes(node: onnx.NodeProto) -> list[str]:
    """The module paths enclosing one ONNX node, outermost first (empty when unknown)."""
    meta = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in meta:
        scopes = list(ast.literal_eval(meta["pkg.torch.onnx.name_scopes"]))[:-1]
    elif "namespace" in meta:
        scopes = [part.split(":")[0] for part in meta["namespace"].split("/")][:-1]
    elif node.name.startswith("/"):
        scopes = [""]
        for seg in node.name.split("/")[1:-1]:
            # TorchScript names a Sequential's child by its full path, other children by attribute
            prev = scopes[-1]
            scopes.append(seg if not prev or seg.startswith(prev + ".") else f"{prev}.{seg}")
    else:
        return []
    return [s for s in scopes if s and s != _NO_MODULE]


def _capture(model: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each module's output tensors, in the order modules finish; modules called twice dropped."""
    seen: dict[str, list[torch.Tensor]] = {}
    repeated: set[str] = set()

    def hook(name: str):
        def fn(_mod: nn.Module, _args: Any, out: Any) -> None:
            if name in seen:
                repeated.add(name)
                return
            items = out if isinstance(out, (tuple, list)) else (out,)
            flat = [o for o in items if isinstance(o, torch.Tensor)]
            seen[name] = [t.detach().clone() for t in flat]
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return {k: v for k, v in seen.items() if k not in repeated and v}


def _boundaries(model: onnx.ModelProto, modules: Sequence[str]) -> dict[str, list[str]]:
    """For each module path, the values its nodes produce that are read outside it."""
    nodes = list(model.graph.node)
    scopes = [set(module_scopes(n)) for n in nodes]
    graph_outputs = {o.name for o in model.graph.output}
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            readers.setdefault(name, []).append(i)
    result: dict[str, list[str]] = {}
    for path in modules:
        inside = {i for i, s in enumerate(scopes) if path in s}
        result[path] = [
            out for i in sorted(inside) for out in nodes[i].output
            if out and (out in graph_outputs or any(r not in inside for r in readers.get(out, ())))
        ]
    return result


def _float64(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t.double() if t.is_floating_point() else t for t in inputs]


def _capture_float64(plain: nn.Module, oracle: nn.Module | None, inputs: Sequence[torch.Tensor],
                     tolerance: Tolerance) -> dict[str, list[torch.Tensor]]:
    if tolerance.noise_factor is None:
        return {}
    try:
        model = copy.deepcopy(plain).double() if oracle is None else oracle
        return _capture(model.eval(), _float64(inputs))
    except Exception:  # noqa: BLE001 - no float64 run: the noise rule keeps its strict floor
        return {}


def locate_divergence(
    plain: nn.Module,
    onnx_path: str | Path,
    inputs: Sequence[torch.Tensor],
    *,
    tolerance: Tolerance,
    module_labels: Mapping[str, Sequence[str]] | None = None,
    oracle: nn.Module | None = None,
) -> Divergence | None:
    """Find the module where the ONNX outputs start to differ from torch's (see :mod:`.blame`).

    Args:
        plain: the plain torch model the ONNX file was exported from.
        onnx_path: the ONNX file (external data is loaded from beside it).
        inputs: one input set, in graph input order.
        tolerance: the rule a module output must meet (see ``rule.py``); one that sets no rule
            is the default noise rule.
        module_labels: optional ``{module path: [supernet labels]}`` to report which choices
            selected the diverging module (``se.module_labels(supernet, arch)``).
        oracle: ``plain`` in float64, whose module outputs are the noise rule's oracle; None
            makes one (a copy of ``plain``).

    Returns:
        The :class:`Divergence`, a Divergence with ``module=None`` when nothing can be blamed,
        or None when every mapped module output agrees.
    """
    plain.eval()
    tolerance = tolerance_for("ort-cpu", tolerance)
    captured = _capture(plain, inputs)
    captured64 = _capture_float64(plain, oracle, inputs, tolerance)
    model = onnx.load(str(onnx_path), load_external_data=True)
    bounds = _boundaries(model, list(captured))
    known = {o.name for o in model.graph.output}
    for names in bounds.values():
        for name in names:
            if name not in known:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    try:
        session = make_session(model.SerializeToString())
        feed = {n: t.detach().cpu().numpy() for n, t in zip(input_names(model), inputs)}
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, feed)))
    except Exception as exc:  # noqa: BLE001 - a failed run is a result, not a crash
        return Divergence(module=None, reason=f"could not run the instrumented model: {exc}")

    unmapped: list[str] = []
    findings: list[Finding] = []
    for path, tensors in captured.items():
        pairs = _match(tensors, [(n, values[n]) for n in bounds.get(path, []) if n in values])
        if not pairs:
            unmapped.append(path)
            continue
        ours64 = captured64.get(path, [])
        for index, tensor_name, torch_out, onnx_out in pairs:
            orc = ours64[index].numpy() if index < len(ours64) else None
            findings.append(Finding(path, tensor_name,
                                     *judge(onnx_out, torch_out, orc, tolerance)))
    checked = len({f.path for f in findings})
    if not checked:
        return Divergence(module=None, unmapped=unmapped,
                          reason="no module output could be matched to an ONNX value")
    blamed = blame(findings)
    if blamed is None or blamed.failure is None:
        return None
    why, max_abs, bad = blamed.failure
    return Divergence(module=blamed.path, reason=f"{why} (ONNX value {blamed.tensor!r})",
                      labels=_labels(blamed.path, module_labels), tensor=blamed.tensor,
                      max_abs_error=max_abs, nan_count=bad, checked=checked, unmapped=unmapped)


def locate_torch_divergence(
    reference: nn.Module,
    plain: nn.Module,
    inputs: Sequence[torch.Tensor],
    *,
    tolerance: Tolerance,
    module_labels: Mapping[str, Sequence[str]] | None = None,
    oracle: nn.Module | None = None,
) -> Divergence | None:
    """Find the module where the plain outputs start to differ from ``reference``'s.

    Used when the plain torch model itself disagrees with the supernet path: modules are paired
    by path (the plain model keeps the supernet's module paths), and only same-shaped outputs
    are compared. Call it with the supernet's arch already fixed (on ``oracle`` too).

    Args:
        reference: the supernet (inside ``fixed_arch``) or any model with the same paths.
        plain: the plain model.
        inputs: one input set.
        tolerance: the rule a module output must meet; one that sets no rule is the default.
        module_labels: optional ``{module path: [labels]}``.
        oracle: ``reference`` in float64 (arch fixed), the noise rule's oracle; without it only
            the one-rounding floor is allowed.

    Returns:
        The :class:`Divergence`, or None when every paired module agrees.
    """
    plain.eval()
    reference.eval()
    tolerance = tolerance_for("torch-cpu", tolerance)
    ref_out = _capture(reference, inputs)
    ref64 = {} if oracle is None else _capture(oracle.eval(), _float64(inputs))
    unmapped: list[str] = []
    findings: list[Finding] = []
    for path, tensors in _capture(plain, inputs).items():
        theirs, theirs64 = ref_out.get(path, []), ref64.get(path, [])
        pairs = [(k, a, b) for k, (a, b) in enumerate(zip(tensors, theirs)) if a.shape == b.shape]
        if not pairs:
            unmapped.append(path)
            continue
        for k, mine, ref in pairs:
            orc = theirs64[k].numpy() if k < len(theirs64) else None
            findings.append(Finding(path, "", *judge(mine.numpy(), ref.numpy(), orc,
                                                          tolerance)))
    checked = len({f.path for f in findings})
    if not checked:
        return Divergence(module=None, unmapped=unmapped,
                          reason="no plain module path matches a supernet module path")
    blamed = blame(findings)
    if blamed is None or blamed.failure is None:
        return None
    why, max_abs, bad = blamed.failure
    return Divergence(module=blamed.path, reason=f"plain model differs from the supernet path: "
                      f"{why}", labels=_labels(blamed.path, module_labels),
                      max_abs_error=max_abs, nan_count=bad, checked=checked, unmapped=unmapped)


def _match(tensors: list[torch.Tensor], values: list[tuple[str, np.ndarray]]
           ) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    """Pair each torch output with the last same-shaped boundary value (the module's result)."""
    pairs = []
    for k, t in enumerate(tensors):
        ref = t.cpu().numpy()
        same = [(n, v) for n, v in values if v.shape == ref.shape and v.dtype == ref.dtype]
        if same:
            pairs.append((k, same[-1][0], ref, same[-1][1]))
    return pairs


def _labels(path: str, module_labels: Mapping[str, Sequence[str]] | None) -> list[str]:
    if not module_labels:
        return []
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        labels = module_labels.get(".".join(parts[:k]))
        if labels:
            return list(labels)
    return []
