"""Node names after the module that made them, so a viewer (Netron) shows the model's layers.

The scheme: ``<module path>/<op type>``, the module path as in ``plain.named_modules()``
(``blocks.1.dw/Conv``); the second node of one op type in one module is ``blocks.1.dw/Conv_1``,
the third ``_2``, and so on, in graph order (a subgraph's nodes right after the node that holds
them). A node of the root module is ``/<op type>`` (``/Add``, ``/Add_1``). Names are unique across
the whole model, subgraphs included; only node names change, never a value, so numerics and
every tensor name stay as they were.

Where the module path comes from: the dynamo exporter's ``pkg.torch.onnx.name_scopes`` node
metadata (its ``namespace`` string in older versions), which list the full path of every
enclosing module, the same source ``parity/locate.py`` reads. A node of an If/Loop body that
carries no module of its own (torch.cond's branches do not) takes the module of the node that
holds the body. A node without that metadata whose name starts with ``/`` is named by the
TorchScript exporter's scopes (``/blocks/blocks.1/conv/Conv``): it keeps that name, which is
where locate reads its module from, and which cannot be turned into a ``named_modules()`` path
exactly (TorchScript drops modules whose forward is never called, such as a ModuleDict or a
plain container, and names a container's child by its attribute, ``/inner/seq/seq.0``). Any
other node without module metadata is a root node: ``/<op type>``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

import onnx

from .graph import subgraphs
from .passes import GraphPass, PassResult

__all__ = ["NameNodesByModule", "module_path", "name_nodes_by_module"]

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_NAMESPACE_KEY = "namespace"
# torch's placeholder for a node whose module stack it lost
_NO_MODULE = "_empty_nn_module_stack_from_metadata_hook"


def _module_path(node: onnx.NodeProto) -> str | None:
    """The innermost module enclosing ``node``: "" for the root, None without module metadata."""
    meta = {p.key: p.value for p in node.metadata_props}
    if _SCOPES_KEY in meta:
        try:
            scopes = [str(s) for s in ast.literal_eval(meta[_SCOPES_KEY])][:-1]
        except (ValueError, SyntaxError, TypeError):
            return None
    elif _NAMESPACE_KEY in meta:
        scopes = [part.split(":")[0] for part in meta[_NAMESPACE_KEY].split("/")][:-1]
    else:
        return None
    # the last entry is the traced op itself; the ones before are module paths, outermost first
    scopes = [s for s in scopes if s and s != _NO_MODULE]
    return scopes[-1] if scopes else ""


def module_path(node: onnx.NodeProto) -> str | None:
    """The innermost module enclosing ``node`` by its exporter metadata ("" root, None: none)."""
    return _module_path(node)


def _walk(graph: onnx.GraphProto, outer: str | None = None
          ) -> Iterator[tuple[onnx.NodeProto, str | None]]:
    """Every node of ``graph`` and its subgraphs, in order, with the module path it is named by."""
    for node in graph.node:
        own = _module_path(node)
        # a body node without a module of its own belongs to the node holding the body
        path = own if own or outer is None else outer
        yield node, path
        for sub in subgraphs(node):
            yield from _walk(sub, path)


def _planned_names(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    """Each node with its new name: the scheme of the module docstring, deterministic."""
    nodes = list(_walk(model.graph))
    taken: set[str] = set()
    bases: list[str | None] = []  # None: the node keeps its (TorchScript) name
    for node, path in nodes:
        torchscript = path is None and node.name.startswith("/")
        if torchscript and node.name not in taken:
            taken.add(node.name)
            bases.append(None)
        else:  # a repeated TorchScript name is uniquified like ours
            bases.append(node.name if torchscript else f"{path or ''}/{node.op_type}")
    counts: dict[str, int] = {}
    planned = []
    for (node, _), base in zip(nodes, bases):
        if base is None:
            planned.append((node, node.name))
            continue
        k = counts.get(base, 0)
        name = f"{base}_{k}" if k else base
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        counts[base] = k + 1
        taken.add(name)
        planned.append((node, name))
    return planned


class NameNodesByModule(GraphPass):
    """Name every node ``<module path>/<op type>`` (see :func:`name_nodes_by_module`).

    Ensures: every node has a name, no two nodes of the model share one, and a node whose module
    is known is named after it.
    """

    name = "name_nodes_by_module"

    def call(self, model: onnx.ModelProto) -> PassResult:
        changed = 0
        for node, name in _planned_names(model):
            if node.name != name:
                node.name = name
                changed += 1
        return PassResult(bool(changed), changed)

    def ensures(self, model: onnx.ModelProto) -> str | None:
        nodes = list(_walk(model.graph))
        seen: set[str] = set()
        for node, path in nodes:
            if not node.name or node.name in seen:
                return f"node name {node.name!r} ({node.op_type}) is empty or not unique"
            seen.add(node.name)
            if path is None:
                continue
            base = f"{path}/{node.op_type}"
            suffix = node.name[len(base) + 1:]
            if node.name != base and not (node.name.startswith(base + "_") and suffix.isdigit()):
                return f"node {node.name!r} is not named after its module {path!r}"
        return None


def name_nodes_by_module(model: onnx.ModelProto) -> int:
    """Name every node of ``model`` after the module it came from: ``blocks.1.dw/Conv``.

    The name is the module path (as in ``named_modules()``), a slash and the op type, with
    ``_1``, ``_2``, ... for the further nodes of one op type in one module, in graph order; root
    nodes are ``/Add``. TorchScript's own scope names (``/blocks/blocks.1/dw/Conv``) are kept.
    The module docstring has the full rules. Only node names change; values, initializers and
    node metadata stay as they are, so ``parity.locate`` maps nodes to modules as before.

    Returns:
        The number of nodes renamed.

    Raises:
        ExportError: the pass broke its contract (:class:`NameNodesByModule`).
    """
    return NameNodesByModule()(model).changed
