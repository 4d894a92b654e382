"""``write_bundle``: the deployment bundle an edge team receives, written atomically.

A bundle is a directory::

    model.onnx        the model, byte for byte as exported
    <external data>   the model's external-data file(s), at the relative paths the model names
    arch.json         the architecture
    parity.json       the parity report
    samples.npz       inputs and expected outputs (key convention in ``_samples``); edge
                      variants, variants.npz and *.ort files beside (docs/edge.md)
    manifest.json     versions, IO signature, opset, parameter count, size and sha256 of every
                      other file, parity verdict (schema in docs/bundle.md)

Same inputs give byte-identical files: nothing written holds a timestamp, JSON is canonical and
the npz is stamped with a fixed date. Imports onnx and numpy, never torch.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..export.graph import GraphFacts, load_model
from ..parity.record import RecordedParity
from ..version import __version__
from .atomic import atomic_directory, check_destination, copy_file, write_file
from .hashing import digest_file, list_files
from .layout import (
    ARCH_NAME,
    DEFAULT_TOLERANCE,
    MANIFEST_NAME,
    MODEL_NAME,
    PARITY_NAME,
    RESERVED,
    SAMPLES_NAME,
    TOLERANCE_KEYS,
    VARIANTS_SAMPLES,
)
from .manifest import BundleManifest
from .samples import SampleCase, parse_samples, write_samples

__all__ = ["write_bundle"]

# Keys of ``extra`` that fill dedicated manifest fields instead of landing in ``manifest.extra``.
_PROMOTED = ("parameter_count", "source_checkpoint_sha256", "tolerance")
_VERSIONED = ("subnet-export", "torch", "onnx", "onnxruntime", "numpy")


def _versions() -> dict[str, str | None]:
    # importlib.metadata reads the installed version without importing the package (torch stays
    # unimported); onnxruntime-gpu installs under its own distribution name.
    out: dict[str, str | None] = {}
    for key in _VERSIONED:
        names = (key, "onnxruntime-gpu") if key == "onnxruntime" else (key,)
        out[key] = None
        for name in names:
            try:
                out[key] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    if out["subnet-export"] is None:
        out["subnet-export"] = __version__
    return out


def _json_bytes(data: Any, what: str, *, allow_nan: bool = False) -> bytes:
    try:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=allow_nan)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} is not JSON-serializable: {e}") from e
    return (text + "\n").encode()


def _tolerance(extra: Mapping[str, Any], parity: RecordedParity) -> dict[str, float | None]:
    for source, value in (("extra['tolerance']", extra.get("tolerance")),
                          ("parity['tolerance']", parity.tolerance)):
        if value is None:
            continue
        try:
            tol = {k: None if value.get(k) is None else float(value[k]) for k in TOLERANCE_KEYS}
            if set(value) - set(TOLERANCE_KEYS) or all(v is None for v in tol.values()):
                raise ValueError(sorted(value))
        except (AttributeError, TypeError, ValueError) as e:
            if source.startswith("parity"):
                continue  # the parity report's layout is not ours to enforce
            raise InputError(f"{source} must be a mapping of {', '.join(TOLERANCE_KEYS)} to "
                             "numbers or None, at least one set") from e
        if all(v is None or (math.isfinite(v) and v >= 0) for v in tol.values()):
            return tol
        raise InputError(f"{source} must hold finite non-negative values, not {value}")
    return dict(DEFAULT_TOLERANCE)


def _check_samples(cases: list[SampleCase], inputs: list[dict[str, Any]],
                   outputs: list[dict[str, Any]]) -> None:
    by_name = {io["name"]: io for io in inputs}
    out_names = {io["name"] for io in outputs}
    for case in cases:
        if set(case.inputs) != set(by_name):
            raise InputError(
                f"samples case {case.index} has inputs {sorted(case.inputs)} but the model "
                f"takes {sorted(by_name)}"
            )
        unknown = sorted(set(case.outputs) - out_names)
        if unknown:
            raise InputError(f"samples case {case.index} has outputs {unknown} the model lacks")
        for name, array in case.inputs.items():
            io = by_name[name]
            if array.dtype.name != io["dtype"]:
                raise InputError(
                    f"samples input {name!r} (case {case.index}) is {array.dtype.name}, "
                    f"the model expects {io['dtype']}"
                )
            shape = io["shape"]
            if shape is not None and (
                len(shape) != array.ndim
                or any(isinstance(d, int) and d != n
                       for d, n in zip(shape, array.shape, strict=True))
            ):
                raise InputError(
                    f"samples input {name!r} (case {case.index}) has shape {array.shape}, "
                    f"the model expects {shape}"
                )


def _check_more(files: Mapping[str, Any], graph: GraphFacts,
                variants: Mapping[str, Mapping[str, Any]], rest: Any) -> dict[str, Path]:
    _json_bytes(rest, "extra")
    more = {name: Path(path) for name, path in files.items()}
    for name, path in more.items():
        if (name in RESERVED - {VARIANTS_SAMPLES} or name in graph.external_data or "/" in name
                or name.startswith(".")):
            raise InputError(f"bundle file name {name!r} is taken or not a plain file name")
        if not path.is_file():
            raise InputError(f"bundle file {name!r}: {path} does not exist")
    for kind, entry in variants.items():
        if entry.get("file") not in more:
            raise InputError(f"variant {kind!r} names file {entry.get('file')!r}, which is "
                             "not among the bundle's files")
    _json_bytes(dict(variants), "variants")
    return more


def _promoted(extra: Mapping[str, Any], graph: GraphFacts) -> tuple[int, str | None]:
    """The parameter count and source checkpoint digest ``extra`` gives, checked."""
    n_params = extra.get("parameter_count", graph.parameter_count)
    if not isinstance(n_params, int) or isinstance(n_params, bool) or n_params < 0:
        raise InputError(f"extra['parameter_count'] must be a non-negative int, not {n_params!r}")
    checkpoint = extra.get("source_checkpoint_sha256")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise InputError("extra['source_checkpoint_sha256'] must be a hex string")
    return n_params, checkpoint


def _model_facts(model_path: Path, graph: GraphFacts | None) -> GraphFacts:
    if not model_path.is_file():
        raise InputError(f"model file {model_path} does not exist; export the model first")
    if graph is None:
        try:
            model = load_model(model_path)
        except OSError as e:
            raise InputError(f"cannot read model file {model_path}: {e}") from e
        except Exception as e:  # protobuf raises its own DecodeError; nothing else is expected
            raise InputError(f"{model_path} is not an ONNX model: {e}") from e
        try:
            graph = GraphFacts.of(model)
        except ValueError as e:
            raise InputError(f"{model_path}: {e}; re-export with a relative external data "
                             "path") from e
    for loc in graph.external_data:
        if loc in RESERVED:
            raise InputError(f"{model_path} keeps external data in {loc!r}, a bundle file name")
        if not (model_path.parent / loc).is_file():
            raise InputError(
                f"{model_path} keeps external data in {loc!r}, which is missing beside it"
            )
    return graph


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str],
    arch: Mapping[str, Any],
    parity: Mapping[str, Any],
    samples: Mapping[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
    force: bool = False,
    graph: GraphFacts | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    ort: Mapping[str, Any] | None = None,
) -> BundleManifest:
    """Write a deployment bundle to ``out_dir`` atomically.

    Everything is validated first, then built in a hidden work directory beside ``out_dir``,
    fsynced and renamed into place (see ``_atomic`` for what a crash at any step leaves).

    Args:
        out_dir: the bundle directory to create.
        model_path: an exported ONNX file; external-data files it references (relative paths
            beside it) are copied and hashed too.
        arch: the architecture, a JSON object.
        parity: the parity report's JSON; ``parity["passed"]`` (bool) gives the verdict and a
            tolerance of ``{"atol", "rtol", "noise_factor"}`` (``parity["tolerance"]``, else
            the ``ort-cpu`` backend's, else the first backend's) becomes the samples' tolerance.
        samples: ``input:<name>`` / ``output:<name>`` / ``oracle:<name>`` arrays,
            ``input.<k>:<name>`` for case k. The noise rule needs the oracles.
        extra: more manifest content. ``parameter_count`` (int), ``source_checkpoint_sha256``
            (str) and ``tolerance`` (as above, overrides the parity one) fill their manifest
            fields; every other key goes to ``manifest.extra``.
        force: replace an existing bundle at ``out_dir``.
        graph: the model's :class:`~subnet_export.export.graph.GraphFacts` when the caller
            has them (``ExportResult.graph``); None reads them from ``model_path``.
        files: more files to copy in and hash, bundle name -> source path (edge variants,
            ``variants.npz``, ORT-format models and their operator config).
        variants: the manifest's ``variants`` (kind -> entry, docs/edge.md); each entry's
            ``file`` must be among ``files``.
        ort: the manifest's ``ort`` entry (``variants/ort_format.py``).

    Returns:
        The manifest written.

    Raises:
        InputError: a bad argument (missing model, unsafe external-data path, samples that do
            not fit the model, non-JSON arch/extra), ``out_dir`` existing without ``force`` or
            not being a bundle, or a write failure; nothing is left half-written.
    """
    out_dir = Path(out_dir)
    model_path, extra = Path(model_path), dict(extra or {})
    check_destination(out_dir.absolute(), force=force, marker=MANIFEST_NAME)

    graph = _model_facts(model_path, graph)
    if not isinstance(arch, Mapping):
        raise InputError(f"arch must be a JSON object, not {type(arch).__name__}")
    try:
        recorded = RecordedParity.from_json(parity)
    except ValueError as e:
        raise InputError(f"parity must be a parity report dict: {e}") from e
    try:
        cases = parse_samples(samples)
    except ValueError as e:
        raise InputError(f"bad samples: {e}") from e
    _check_samples(cases, graph.inputs, graph.outputs)
    n_params, checkpoint = _promoted(extra, graph)
    tolerance = _tolerance(extra, recorded)
    if tolerance["noise_factor"] is not None and not all(c.oracles for c in cases):
        raise InputError("the samples' tolerance is the noise rule, which needs an 'oracle:<name>' "
                         "array (the float64 reference output) for every output of every case; "
                         "add them, or give extra['tolerance'] an atol/rtol")
    arch_bytes, parity_bytes = (_json_bytes(dict(arch), "arch"),
                                _json_bytes(dict(parity), "parity", allow_nan=True))  # NaN: failed
    rest = {k: v for k, v in extra.items() if k not in _PROMOTED}
    more = _check_more(files or {}, graph, variants or {}, rest)

    with atomic_directory(out_dir, force=force, marker=MANIFEST_NAME) as work:
        # digests of what this writes are taken from the bytes as they are written; every
        # other entry the listing finds (the samples' zip) is hashed from disk
        written = {MODEL_NAME: copy_file(model_path, work / MODEL_NAME)}
        for loc in graph.external_data:
            written[loc] = copy_file(model_path.parent / loc, work / loc)
        for name, path in more.items():
            written[name] = copy_file(path, work / name)
        written[ARCH_NAME] = write_file(work / ARCH_NAME, arch_bytes)
        written[PARITY_NAME] = write_file(work / PARITY_NAME, parity_bytes)
        write_samples(work / SAMPLES_NAME, samples)
        files = {rel: (written.get(rel) or digest_file(work / rel)).to_json()
                 for rel in list_files(work)}
        manifest = BundleManifest(
            tool_version=__version__,
            versions=_versions(),
            model_file=MODEL_NAME,
            external_data=list(graph.external_data),
            ir_version=graph.ir_version,
            opset=graph.opset,
            opset_imports=dict(graph.opset_imports),
            inputs=graph.inputs,
            outputs=graph.outputs,
            parameter_count=n_params,
            source_checkpoint_sha256=checkpoint,
            parity="passed" if recorded.passed else "failed",
            tolerance=tolerance,
            sample_cases=len(cases),
            files=files,
            extra=rest,
            variants={k: dict(v) for k, v in (variants or {}).items()},
            ort=dict(ort or {}),
        )
        manifest.manifest_sha256 = manifest.content_sha256()
        write_file(work / MANIFEST_NAME, manifest.dumps().encode())
    return manifest
