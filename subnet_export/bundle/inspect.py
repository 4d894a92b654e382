"""``inspect_bundle``: what a bundle holds, read without running its model or checking its hashes.

Reads ``manifest.json``, ``arch.json``, ``parity.json`` and the model's protobuf (its external
data stays on disk); the result is a :class:`~.inspection.BundleInspection`. Imports onnx, never
torch or onnxruntime; ``verify`` checks the hashes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnx

from ..errors import BundleError

# the walk and naming op_types uses, so the histogram's keys are exactly its operators
from ..export.graph import DEFAULT_DOMAINS, GraphFacts, load_model, subgraphs
from ..parity.record import RecordedParity
from .inspection import BackendVerdict, BundleInspection
from .integrity import load_manifest
from .layout import ARCH_NAME, PARITY_NAME
from .manifest import BundleManifest

__all__ = ["inspect_bundle", "op_histogram"]

_CORRUPT = "the bundle is corrupt or incomplete: fetch it again or re-export it"
# manifest.extra keys that have rows of their own; any other key is listed as it is
_SHOWN_EXTRA = ("exporter", "bn_recalibration", "unused_parameters")


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count a model's nodes per operator type.

    Types are found and named as :func:`~subnet_export.export.graph.op_types` does (``"Conv"``,
    ``"domain::Op"``; subgraphs included, a model-local function counted as the ops it calls).

    Returns:
        Op type -> node count, most frequent first, ties by name.
    """
    functions = {(fn.domain, fn.name): fn for fn in model.functions}
    counts: Counter[str] = Counter()

    def visit(nodes: Iterable[onnx.NodeProto], calling: frozenset[tuple[str, str]]) -> None:
        for node in nodes:
            key = (node.domain, node.op_type)
            if key in functions:
                if key not in calling:
                    visit(functions[key].node, calling | {key})
            else:
                default = node.domain in DEFAULT_DOMAINS
                counts[node.op_type if default else f"{node.domain}::{node.op_type}"] += 1
            for sub in subgraphs(node):
                visit(sub.node, calling)

    visit(model.graph.node, frozenset())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _read_json(root: Path, name: str) -> Any:
    path = root / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle {root} has no {name}; {_CORRUPT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"cannot read {path} ({e}); check its permissions, or {_CORRUPT}"
                          ) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON ({e}); {_CORRUPT}") from e


def _read_graph(root: Path, manifest: BundleManifest) -> tuple[onnx.ModelProto, GraphFacts]:
    path = root / manifest.model_file
    if not path.is_file():
        raise BundleError(f"bundle {root} has no {manifest.model_file}; {_CORRUPT}")
    try:
        model = load_model(path)
    except OSError as e:
        raise BundleError(f"cannot read {path} ({e}); check its permissions, or {_CORRUPT}"
                          ) from e
    except Exception as e:  # protobuf raises its own DecodeError; nothing else is expected
        raise BundleError(f"{path} is not an ONNX model ({e}); {_CORRUPT}") from e
    try:
        return model, GraphFacts.of(model)
    except ValueError as e:
        raise BundleError(f"{path}: {e}; {_CORRUPT}") from e


def _model_facts(root: Path, manifest: BundleManifest, graph: GraphFacts,
                 notes: list[str]) -> dict[str, Any]:
    size = (root / manifest.model_file).stat().st_size
    for rel in graph.external_data:
        if (root / rel).is_file():
            size += (root / rel).stat().st_size
        else:
            notes.append(f"external data file {rel} is missing; the model will not load")
    unused = manifest.extra.get("unused_parameters")
    return {"file": manifest.model_file, "external_data": list(graph.external_data),
            "file_bytes": size, "ir_version": graph.ir_version, "opset": graph.opset,
            "opset_imports": dict(graph.opset_imports), "parameter_count": graph.parameter_count,
            "initializer_bytes": graph.initializer_bytes,
            "manifest_parameter_count": manifest.parameter_count,
            "unused_parameters": [str(u) for u in unused] if isinstance(unused, list) else None}


def _provenance(manifest: BundleManifest, model: onnx.ModelProto) -> dict[str, Any]:
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return {"tool_version": manifest.tool_version, "schema_version": manifest.schema_version,
            "exporter": manifest.extra.get("exporter"), "producer": producer or None,
            "versions": dict(manifest.versions),
            "source_checkpoint_sha256": manifest.source_checkpoint_sha256,
            "bn_recalibration": manifest.extra.get("bn_recalibration"),
            "model_metadata": {p.key: p.value for p in model.metadata_props},
            "extra": {k: v for k, v in manifest.extra.items() if k not in _SHOWN_EXTRA},
            "manifest_sha256": manifest.manifest_sha256}


def _parity(root: Path, manifest: BundleManifest, notes: list[str]
            ) -> tuple[dict[str, Any], tuple[BackendVerdict, ...]]:
    data = _read_json(root, PARITY_NAME)
    try:
        passed = RecordedParity.from_json(data).passed
    except ValueError as e:
        raise BundleError(f"{root / PARITY_NAME} is not a parity report ({e}); {_CORRUPT}"
                          ) from e
    if passed != manifest.passed:
        notes.append(f"{PARITY_NAME} says {'passed' if passed else 'failed'} but the manifest "
                     f"says {manifest.parity}; the bundle may have been altered")
    div, where = data.get("divergence"), None
    if isinstance(div, Mapping):
        reason = str(div.get("reason") or "no reason recorded")
        where = f"{div['module']}: {reason}" if div.get("module") else f"not located ({reason})"
    summary = {"passed": passed, "manifest": manifest.parity,
               "reference": str(data.get("reference") or "-"),
               "oracle": str(data.get("oracle") or ""), "divergence": where,
               "tolerance": dict(manifest.tolerance), "sample_cases": manifest.sample_cases}
    backends = data.get("backends") if isinstance(data.get("backends"), list) else []
    return summary, tuple(BackendVerdict.from_json(b) for b in backends if isinstance(b, Mapping))


def inspect_bundle(path: str | Path) -> BundleInspection:
    """Read what a bundle holds, without running its model or checking its hashes.

    Args:
        path: the bundle directory.

    Returns:
        The inspection; :meth:`BundleInspection.format_text` and ``to_json`` render it.

    Raises:
        BundleError: the path is missing or not a directory, or its manifest, ``arch.json``,
            ``parity.json`` or model is missing, unreadable or malformed.
    """
    root = Path(path)
    if not root.exists():
        raise BundleError(f"{root} does not exist; pass the directory `subnet-export onnx` "
                          "wrote (its --out)")
    manifest, _ = load_manifest(root)
    arch = _read_json(root, ARCH_NAME)
    if not isinstance(arch, dict):
        raise BundleError(f"{root / ARCH_NAME} is not a JSON object; {_CORRUPT}")
    model, graph = _read_graph(root, manifest)
    notes: list[str] = []
    facts = _model_facts(root, manifest, graph, notes)
    parity, backends = _parity(root, manifest, notes)
    return BundleInspection(
        bundle=str(root), arch=arch, model=facts, inputs=tuple(graph.inputs),
        outputs=tuple(graph.outputs), operators=op_histogram(model), parity=parity,
        backends=backends, provenance=_provenance(manifest, model), notes=tuple(notes))
