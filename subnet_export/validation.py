"""Three-way parity: the supernet path against the plain model and the ONNX file on each backend.

Reference: the supernet with the arch fixed (or the plain model when no supernet is given).
Candidates: plain torch on CPU, onnxruntime CPU, and, where CUDA is there, plain torch on CUDA and
onnxruntime CUDA, both with TF32 off. A float64 copy of the plain model on CPU (the oracle) says
how much of each error float32 rounding alone explains. See docs/parity.md.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from .errors import InputError
from .inputs import InputSet, make_inputs
from .parity import BackendResult, OutputComparison, ParityReport, Tolerance, tolerance_for

__all__ = ["DEFAULT_PROVIDERS", "InputSet", "make_inputs", "validate"]

DEFAULT_PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider")


def _flat(out: Any) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [o for o in out]


def _run_torch(model: nn.Module, tensors: Sequence[torch.Tensor], device: str = "cpu",
               dtype: torch.dtype | None = None) -> list[np.ndarray]:
    args = [t.to(device) for t in tensors]
    if dtype is not None:
        args = [t.to(dtype) if t.is_floating_point() else t for t in args]
    with torch.no_grad():
        return [o.detach().cpu().numpy() for o in _flat(model(*args))]


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[dict[str, bool]]:
    """Set torch's TF32 switches for the run and restore them after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield {"torch_matmul": enabled, "torch_cudnn": enabled}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _backend_name(provider: str) -> str:
    short = provider.removesuffix("ExecutionProvider").lower()
    return f"ort-{short}"


def validate(
    supernet: nn.Module | None,
    arch: Mapping[str, Any] | None,
    plain: nn.Module,
    onnx_path: str | Path,
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
) -> ParityReport:
    """Check that the plain model and the ONNX file compute what the supernet path computes.

    Args:
        supernet: the supernet; None makes the plain model its own reference.
        arch: the architecture to fix on the supernet (ignored when ``supernet`` is None).
        plain: the materialized model the ONNX file came from.
        onnx_path: the exported file.
        example_inputs: example tensors (batch first) that shape the random inputs.
        batch_sizes: batch sizes of the random inputs.
        seed: seed of the random inputs.
        samples: user samples (``.npz`` or mapping), validated as one more input set.
        tolerances: one :class:`Tolerance` for all backends, a ``{backend: Tolerance}`` map, or
            None for the float32 defaults (``parity.DEFAULT_TOLERANCES``).
        providers: onnxruntime providers to try (default CPU and CUDA); each is a backend
            ``ort-<name>``, reported skipped with the reason when it cannot run here.
        locate: on a failure, name the first diverging module (``report.divergence``).
        module_labels: ``{plain module path: [labels]}``; default asks
            ``se.module_labels(supernet, arch)`` when a supernet is given.
        tf32: allow TF32 on the CUDA backends (off by default; the report records it).

    Returns:
        The :class:`ParityReport`; ``report.passed`` is the verdict.

    Raises:
        InputError: the ONNX file or the samples cannot be read.
    """
    from . import __version__

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"validate: {onnx_path} does not exist; export the model first")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    init_names = {t.name for t in graph.initializer}
    in_names = [i.name for i in graph.input if i.name not in init_names]
    out_names = [o.name for o in graph.output]
    sets = make_inputs(example_inputs, batch_sizes=batch_sizes, seed=seed, samples=samples,
                       input_names=in_names)
    plain.eval()
    refs = [_reference(supernet, arch, plain, s.tensors) for s in sets]
    oracle = copy.deepcopy(plain).to("cpu").double().eval()
    oracles = [_run_torch(oracle, s.tensors, dtype=torch.float64) for s in sets]

    # The oracle is the plain model in float64. It measures the reference's float32 rounding
    # only when the plain model computes what the reference computes, which torch-cpu checks
    # first under the strict rule; until then no rounding allowance is granted to anyone.
    trusted = {"oracle": supernet is None}

    def compare(name: str, outputs: list[list[np.ndarray]]) -> list[OutputComparison]:
        tol = tolerance_for(name, tolerances)
        if name == "torch-cpu" or not trusted["oracle"]:
            tol = dataclasses.replace(tol, rounding_slack=0.0)
        comps = []
        for s, ref, orc, got in zip(sets, refs, oracles, outputs):
            if len(got) != len(ref):
                raise _CountMismatch(f"{len(got)} outputs, reference has {len(ref)}")
            comps += [OutputComparison.from_arrays(out_names[k] if k < len(out_names) else str(k),
                                                   s.label, got[k], ref[k], tol, oracle=orc[k])
                      for k in range(len(ref))]
        return comps

    backends = [_torch_backend("torch-cpu", plain, sets, compare, tolerances)]
    trusted["oracle"] = trusted["oracle"] or backends[0].status == "passed"
    cuda = torch.cuda.is_available()
    if cuda:
        with _tf32(tf32) as state:
            backends.append(_torch_backend("torch-cuda", copy.deepcopy(plain).cuda(), sets,
                                           compare, tolerances, device="cuda", tf32=state))
    else:
        backends.append(BackendResult.skipped("torch-cuda", tolerance_for("torch-cuda", tolerances),
                                              "torch.cuda.is_available() is False"))
    for provider in providers or DEFAULT_PROVIDERS:
        backends.append(_ort_backend(provider, onnx_path, in_names, sets, compare, tolerances,
                                     tf32))

    report = ParityReport(reference="plain" if supernet is None else "supernet",
                          backends=backends, inputs=[s.describe() for s in sets],
                          tool_version=__version__)
    failed = next((b for b in backends if b.status == "failed"), None)
    if locate and failed is not None:
        report.divergence = _locate(failed, supernet, arch, plain, onnx_path, sets, tolerances,
                                    module_labels)
    return report


class _CountMismatch(Exception):
    pass


def _reference(supernet: nn.Module | None, arch: Mapping[str, Any] | None, plain: nn.Module,
               tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    if supernet is None:
        return _run_torch(plain, tensors)
    import subnet_export

    # parity is an eval-mode property; the caller's training flags are restored afterwards
    flags = [(m, m.training) for m in supernet.modules()]
    supernet.eval()
    try:
        with subnet_export.fixed_arch(supernet, arch):
            return _run_torch(supernet, tensors)
    finally:
        for module, training in flags:
            module.training = training


def _torch_backend(name: str, model: nn.Module, sets: list[InputSet], compare: Any,
                   tolerances: Any, device: str = "cpu", **extra: Any) -> BackendResult:
    tol = tolerance_for(name, tolerances)
    try:
        outputs = [_run_torch(model, s.tensors, device) for s in sets]
        comparisons = compare(name, outputs)
        if name == "torch-cpu":
            tol = dataclasses.replace(tol, rounding_slack=0.0)
        return BackendResult.from_comparisons(name, tol, comparisons, **extra)
    except Exception as exc:  # noqa: BLE001 - a backend that crashes has failed, with the reason
        return BackendResult(name=name, status="failed", tolerance=tol,
                             reason=f"{type(exc).__name__}: {exc}", **extra)


def _ort_backend(provider: str, onnx_path: Path, in_names: list[str], sets: list[InputSet],
                 compare: Any, tolerances: Any, tf32: bool) -> BackendResult:
    name = _backend_name(provider)
    tol = tolerance_for(name, tolerances)
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return BackendResult.skipped(name, tol, f"onnxruntime is not installed ({exc})")
    if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # absent CUDA libraries show up just below
            ort.preload_dlls()
    if provider not in ort.get_available_providers():
        return BackendResult.skipped(name, tol, f"{provider} is not available in onnxruntime "
                                     f"{ort.__version__} (has {ort.get_available_providers()})")
    options: dict[str, Any] = {"use_tf32": int(tf32)} if provider == "CUDAExecutionProvider" else {}
    state = {"ort_use_tf32": tf32} if provider == "CUDAExecutionProvider" else None
    try:
        session = ort.InferenceSession(str(onnx_path), providers=[(provider, options)])
    except Exception as exc:  # noqa: BLE001 - a session that cannot start means skipped here
        return BackendResult.skipped(name, tol, f"{provider} could not start a session: {exc}",
                                     tf32=state)
    used = session.get_providers()
    if used[0] != provider:
        return BackendResult.skipped(name, tol, f"onnxruntime fell back to {used}",
                                     providers=used, tf32=state)
    try:
        outputs = [session.run(None, {n: t.cpu().numpy() for n, t in zip(in_names, s.tensors)})
                   for s in sets]
        return BackendResult.from_comparisons(name, tol, compare(name, outputs),
                                              providers=used, tf32=state)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on a backend fails there
        return BackendResult(name=name, status="failed", tolerance=tol, providers=used,
                             tf32=state, reason=f"{type(exc).__name__}: {exc}")


def _locate(failed: BackendResult, supernet: nn.Module | None, arch: Any, plain: nn.Module,
            onnx_path: Path, sets: list[InputSet], tolerances: Any,
            module_labels: Mapping[str, Sequence[str]] | None) -> Any:
    import subnet_export

    from .locate import Divergence, locate_divergence, locate_torch_divergence

    if module_labels is None and supernet is not None:
        with contextlib.suppress(Exception):  # labels are a nicety; the core may not offer them
            module_labels = subnet_export.module_labels(supernet, arch)
    bad = next((c.inputs for c in failed.comparisons if not c.passed), sets[0].label)
    tensors = next(s.tensors for s in sets if s.label == bad)
    tol = tolerance_for(failed.name, tolerances)
    try:
        if failed.name.startswith("torch-") and supernet is not None:
            with subnet_export.fixed_arch(supernet, arch):
                return locate_torch_divergence(supernet, plain, tensors, tolerance=tol,
                                               module_labels=module_labels)
        return locate_divergence(plain, onnx_path, tensors, tolerance=tol,
                                 module_labels=module_labels)
    except Exception as exc:  # noqa: BLE001 - locating is an explanation; never hide the verdict
        return Divergence(module=None, reason=f"locating failed: {type(exc).__name__}: {exc}")
