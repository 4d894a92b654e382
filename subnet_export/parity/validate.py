"""Stage 4, validate: the supernet path against the plain model and the ONNX file, per backend.

Reference: the supernet with the arch fixed (or the plain model when no supernet is given).
Candidates (``backends.py``): plain torch on CPU, onnxruntime CPU, and, where CUDA is there,
plain torch on CUDA and onnxruntime CUDA, both with TF32 off. Oracle: the reference rerun in
float64 on CPU on the same inputs (its weights cast, the module not copied); its distance to
the float32 reference is the noise floor every candidate's error is counted in (``rule.py``).
See docs/parity.md.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..arch import fixed_arch, freeze
from ..errors import InputError
from ..export.exporter import ExportResult
from ..export.graph import input_names
from ..plain.materialize import module_labels as module_labels_of
from ..signature import InputSpec
from ..version import __version__
from .backends import Judge, Oracle, ort_backend, reference_runs, torch_backends
from .external import EXTERNAL_SET, RecordedOutputs, read_reference_outputs
from .inputs import InputSet, make_inputs
from .report import EXTERNAL_BACKEND, BackendResult, ParityReport, SetArrays
from .rule import Tolerance, tolerance_for

__all__ = ["DEFAULT_PROVIDERS", "validate"]

DEFAULT_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider")


def validate(
    supernet: nn.Module | None,
    arch: Mapping[str, Any] | None,
    plain: nn.Module,
    onnx_path: str | Path | ExportResult,
    *,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    batch_sizes: Sequence[int] = (1, 8),
    seed: int = 0,
    samples: str | Path | Mapping[str, np.ndarray] | None = None,
    tolerances: Tolerance | Mapping[str, Tolerance] | None = None,
    providers: Sequence[str] | None = None,
    locate: bool = True,
    module_labels: Mapping[str, Sequence[str]] | None = None,
    tf32: bool = False,
    specs: Sequence[InputSpec] | None = None,
    reference_outputs: str | Path | Mapping[str, np.ndarray] | RecordedOutputs | None = None,
) -> ParityReport:
    """Check that the plain model and the ONNX file compute what the supernet path computes.

    Args:
        supernet: the supernet; None makes the plain model its own reference.
        arch: the architecture to fix on the supernet (ignored when ``supernet`` is None).
        plain: the materialized model the ONNX file came from.
        onnx_path: the exported file, or the :class:`ExportResult` that wrote it (whose graph
            facts spare reading the file again).
        example_inputs: example tensors (batch first) that shape the random inputs.
        batch_sizes: batch sizes of the random inputs.
        seed: seed of the random inputs.
        samples: user samples (``.npz`` or mapping), validated as one more input set.
        tolerances: one :class:`Tolerance` for all backends, a ``{backend: Tolerance}`` map, or
            None for the noise rule with each backend's default factor
            (``rule.DEFAULT_NOISE_FACTORS``); an ``atol``/``rtol`` is applied elementwise.
        providers: onnxruntime providers to try (default CPU and CUDA); each is a backend
            ``ort-<name>``, reported skipped with the reason when it cannot run here.
        locate: on a failure, name the module where the error enters (``report.divergence``).
        module_labels: ``{plain module path: [labels]}``; default asks
            ``se.module_labels(supernet, arch)`` when a supernet is given and parity failed.
        tf32: allow TF32 on the CUDA backends (off by default; the report records it).
        specs: one :class:`~subnet_export.signature.InputSpec` per input: value ranges of the
            random inputs, and dynamic axes, each checked at a second size too.
        reference_outputs: an ``.npz`` (or mapping) of inputs and the outputs the original
            framework's supernet computed for this arch (keys: ``parity/external.py``). Its
            inputs are one more input set, ``reference-outputs``, and its outputs one more
            candidate, the backend ``external``, judged against our float64 oracle there.

    Returns:
        The :class:`ParityReport`; ``report.passed`` is the verdict. ``report.arrays`` holds the
        inputs, reference and oracle outputs of every input set (not serialized).

    Raises:
        InputError: the ONNX file, the samples or the reference outputs cannot be read, or
            the reference outputs do not fit the model.
        ArchError: the arch is not valid for the supernet.
    """
    path, in_names, out_names = _graph_names(onnx_path)
    if supernet is not None:
        arch = freeze(supernet, arch)
    sets = make_inputs(example_inputs, batch_sizes=batch_sizes, seed=seed, samples=samples,
                       input_names=in_names, specs=specs)
    recorded = None
    if reference_outputs is not None:
        recorded = read_reference_outputs(reference_outputs, input_names=in_names,
                                          n_inputs=len(sets[0].tensors))
        sets.append(recorded.input_set(sets[0].tensors))
    plain.eval()
    refs = reference_runs(supernet, arch, plain, [s.tensors for s in sets])
    oracle = Oracle.build(supernet, arch, plain, sets)
    judge = Judge([s.label for s in sets], refs, oracle.outputs, list(out_names), tolerances)
    backends = torch_backends(plain, sets, judge, tf32)
    backends += [ort_backend(p, path, in_names, sets, judge, tf32)
                 for p in providers or DEFAULT_PROVIDERS]
    if recorded is not None:
        backends.append(_external(recorded, judge, list(out_names)))
    report = ParityReport(reference="plain" if supernet is None else "supernet",
                          backends=backends, inputs=[s.describe() for s in sets],
                          oracle=oracle.kind, tool_version=__version__)
    report.arrays = [SetArrays(s.label, tuple(t.numpy() for t in s.tensors), r, o)
                     for s, r, o in zip(sets, refs, oracle.outputs or [None] * len(sets))]
    # the recorded outputs come from outside: no module of ours to blame for them
    failed = next((b for b in backends if b.status == "failed"
                   and b.name != EXTERNAL_BACKEND), None)
    if locate and failed is not None:
        report.divergence = _locate(failed, supernet, arch, plain, path, sets, tolerances,
                                    module_labels, oracle)
    return report


def _external(recorded: RecordedOutputs, judge: Judge, out_names: list[str]) -> BackendResult:
    """The recorded outputs judged as one more candidate, on their own input set only."""
    k = judge.set_labels.index(EXTERNAL_SET)
    outputs = recorded.arrays_for(out_names, judge.references[k])
    one = Judge([EXTERNAL_SET], [judge.references[k]],
                None if judge.oracles is None else [judge.oracles[k]], out_names,
                judge.tolerances)
    result = one(EXTERNAL_BACKEND, [outputs])
    if result.status != "failed":
        return result
    return dataclasses.replace(result, reason="the recorded outputs disagree with our supernet "
                               f"path (a reimplementation of the framework's): {result.reason}")


def _graph_names(onnx_path: str | Path | ExportResult
                 ) -> tuple[Path, tuple[str, ...], tuple[str, ...]]:
    if isinstance(onnx_path, ExportResult) and onnx_path.graph is not None:
        graph = onnx_path.graph
        return onnx_path.path, graph.input_names, graph.output_names
    path = Path(onnx_path.path if isinstance(onnx_path, ExportResult) else onnx_path)
    if not path.is_file():
        raise InputError(f"validate: {path} does not exist; export the model first")
    model = onnx.load(str(path), load_external_data=False)
    return path, tuple(input_names(model)), tuple(o.name for o in model.graph.output)


def _worst_set(failed: BackendResult, sets: list[InputSet]) -> tuple[torch.Tensor, ...]:
    """The input set to locate on: one with a failed comparison, else the largest error."""
    def badness(c: Any) -> tuple[bool, float]:
        return (not c.passed, c.noise_ratio if c.noise_ratio is not None else c.max_abs_error)

    worst = max(failed.comparisons, key=badness, default=None)
    label = sets[0].label if worst is None else worst.inputs
    return next(s.tensors for s in sets if s.label == label)


def _locate(failed: BackendResult, supernet: nn.Module | None, arch: Any, plain: nn.Module,
            onnx_path: Path, sets: list[InputSet], tolerances: Any,
            module_labels: Mapping[str, Sequence[str]] | None, oracle: Oracle) -> Any:
    from .locate import Divergence, locate_divergence, locate_torch_divergence

    if module_labels is None and supernet is not None:
        with contextlib.suppress(Exception):  # labels are a nicety; the core may not offer them
            module_labels = module_labels_of(supernet, arch)
    tensors = _worst_set(failed, sets)
    tol = tolerance_for(failed.name, tolerances)
    try:
        if failed.name.startswith("torch-") and supernet is not None:
            model64 = oracle.model()
            with fixed_arch(supernet, arch):
                if model64 is None:
                    return locate_torch_divergence(supernet, plain, tensors, tolerance=tol,
                                                   module_labels=module_labels)
                with fixed_arch(model64, arch):
                    return locate_torch_divergence(supernet, plain, tensors, tolerance=tol,
                                                   module_labels=module_labels,
                                                   oracle=model64)
        plain64 = None if oracle.outputs is None else copy.deepcopy(plain).double().eval()
        return locate_divergence(plain, onnx_path, tensors, tolerance=tol,
                                 module_labels=module_labels, oracle=plain64)
    except Exception as exc:  # noqa: BLE001 - locating is an explanation; never hide the verdict
        return Divergence(module=None, reason=f"locating failed: {type(exc).__name__}: {exc}")
