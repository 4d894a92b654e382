"""Three-way parity: the supernet path against the plain model and the ONNX file on each backend.

Reference: the supernet with the arch fixed (or the plain model when no supernet is given).
Candidates: plain torch on CPU, onnxruntime CPU, and, where CUDA is there, plain torch on CUDA and
onnxruntime CUDA, both with TF32 off. Oracle: a float64 copy of the reference, run on CPU on the
same inputs; its distance to the float32 reference is the noise floor every candidate's error is
counted in (``rule.py``). See docs/parity.md.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..arch import fixed_arch
from ..errors import InputError
from ..plain.materialize import module_labels as module_labels_of
from ..version import __version__
from .inputs import InputSet, make_inputs
from .report import BackendResult, ParityReport, SetArrays, Tolerance, tolerance_for

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
            None for the noise rule with each backend's default factor
            (``rule.DEFAULT_NOISE_FACTORS``); an ``atol``/``rtol`` is applied elementwise.
        providers: onnxruntime providers to try (default CPU and CUDA); each is a backend
            ``ort-<name>``, reported skipped with the reason when it cannot run here.
        locate: on a failure, name the first diverging module (``report.divergence``).
        module_labels: ``{plain module path: [labels]}``; default asks
            ``se.module_labels(supernet, arch)`` when a supernet is given.
        tf32: allow TF32 on the CUDA backends (off by default; the report records it).

    Returns:
        The :class:`ParityReport`; ``report.passed`` is the verdict. ``report.arrays`` holds the
        inputs, reference and oracle outputs of every input set (not serialized).

    Raises:
        InputError: the ONNX file or the samples cannot be read.
    """
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
    oracle = _Oracle.build(supernet, arch, plain, sets)
    labels = [s.label for s in sets]

    def judge(name: str, outputs: list[list[np.ndarray]], **extra: Any) -> BackendResult:
        return BackendResult.judge(name, tolerance_for(name, tolerances), labels, outputs, refs,
                                   oracle.outputs, out_names, **extra)

    backends = [_torch_backend("torch-cpu", plain, sets, judge, tolerances)]
    if torch.cuda.is_available():
        with _tf32(tf32) as state:
            backends.append(_torch_backend("torch-cuda", copy.deepcopy(plain).cuda(), sets,
                                           judge, tolerances, device="cuda", tf32=state))
    else:
        backends.append(BackendResult.skipped("torch-cuda", tolerance_for("torch-cuda", tolerances),
                                              "torch.cuda.is_available() is False"))
    for provider in providers or DEFAULT_PROVIDERS:
        backends.append(_ort_backend(provider, onnx_path, in_names, sets, judge, tolerances,
                                     tf32))

    report = ParityReport(reference="plain" if supernet is None else "supernet",
                          backends=backends, inputs=[s.describe() for s in sets],
                          oracle=oracle.kind, tool_version=__version__)
    report.arrays = [SetArrays(s.label, tuple(t.numpy() for t in s.tensors), r, o)
                     for s, r, o in zip(sets, refs, oracle.outputs or [None] * len(sets))]
    failed = next((b for b in backends if b.status == "failed"), None)
    if locate and failed is not None:
        report.divergence = _locate(failed, supernet, arch, plain, onnx_path, sets, tolerances,
                                    module_labels, oracle)
    return report


@dataclass
class _Oracle:
    """The reference run in float64 on CPU: its outputs per input set, and the model itself."""

    kind: str
    outputs: list[list[np.ndarray]] | None
    model: nn.Module | None = None

    @classmethod
    def build(cls, supernet: nn.Module | None, arch: Mapping[str, Any] | None, plain: nn.Module,
              sets: list[InputSet]) -> _Oracle:
        # A copy, so the caller's module keeps its dtype and storage sharing whatever happens.
        source, kind = (plain, "plain-float64") if supernet is None else (supernet,
                                                                          "supernet-float64")
        try:
            model = copy.deepcopy(source).to("cpu").double().eval()
            with fixed_arch(model, arch) if supernet is not None else contextlib.nullcontext():
                outputs = [_run_torch(model, s.tensors, dtype=torch.float64) for s in sets]
        except Exception as exc:  # noqa: BLE001 - a model that cannot run in float64: say why
            return cls(f"none: the reference does not run in float64 "
                       f"({type(exc).__name__}: {exc})", None)
        return cls(kind, outputs, model)


def _reference(supernet: nn.Module | None, arch: Mapping[str, Any] | None, plain: nn.Module,
               tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    if supernet is None:
        return _run_torch(plain, tensors)
    # parity is an eval-mode property; the caller's training flags are restored afterwards
    flags = [(m, m.training) for m in supernet.modules()]
    supernet.eval()
    try:
        with fixed_arch(supernet, arch):
            return _run_torch(supernet, tensors)
    finally:
        for module, training in flags:
            module.training = training


def _torch_backend(name: str, model: nn.Module, sets: list[InputSet], judge: Any,
                   tolerances: Any, device: str = "cpu", **extra: Any) -> BackendResult:
    try:
        outputs = [_run_torch(model, s.tensors, device) for s in sets]
    except Exception as exc:  # noqa: BLE001 - a backend that crashes has failed, with the reason
        return BackendResult(name=name, status="failed", tolerance=tolerance_for(name, tolerances),
                             reason=f"{type(exc).__name__}: {exc}", **extra)
    return judge(name, outputs, **extra)


def _ort_backend(provider: str, onnx_path: Path, in_names: list[str], sets: list[InputSet],
                 judge: Any, tolerances: Any, tf32: bool) -> BackendResult:
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
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on a backend fails there
        return BackendResult(name=name, status="failed", tolerance=tol, providers=used,
                             tf32=state, reason=f"{type(exc).__name__}: {exc}")
    return judge(name, outputs, providers=used, tf32=state)


def _worst_set(failed: BackendResult, sets: list[InputSet]) -> tuple[torch.Tensor, ...]:
    """The input set to locate on: one with a failed comparison, else the largest error."""
    def badness(c: Any) -> tuple[bool, float]:
        return (not c.passed, c.noise_ratio if c.noise_ratio is not None else c.max_abs_error)

    worst = max(failed.comparisons, key=badness, default=None)
    label = sets[0].label if worst is None else worst.inputs
    return next(s.tensors for s in sets if s.label == label)


def _locate(failed: BackendResult, supernet: nn.Module | None, arch: Any, plain: nn.Module,
            onnx_path: Path, sets: list[InputSet], tolerances: Any,
            module_labels: Mapping[str, Sequence[str]] | None, oracle: _Oracle) -> Any:
    from .locate import Divergence, locate_divergence, locate_torch_divergence

    if module_labels is None and supernet is not None:
        with contextlib.suppress(Exception):  # labels are a nicety; the core may not offer them
            module_labels = module_labels_of(supernet, arch)
    tensors = _worst_set(failed, sets)
    tol = tolerance_for(failed.name, tolerances)
    try:
        if failed.name.startswith("torch-") and supernet is not None:
            with fixed_arch(supernet, arch):
                if oracle.model is None:
                    return locate_torch_divergence(supernet, plain, tensors, tolerance=tol,
                                                   module_labels=module_labels)
                with fixed_arch(oracle.model, arch):
                    return locate_torch_divergence(supernet, plain, tensors, tolerance=tol,
                                                   module_labels=module_labels,
                                                   oracle=oracle.model)
        plain64 = None if oracle.outputs is None else copy.deepcopy(plain).double().eval()
        return locate_divergence(plain, onnx_path, tensors, tolerance=tol,
                                 module_labels=module_labels, oracle=plain64)
    except Exception as exc:  # noqa: BLE001 - locating is an explanation; never hide the verdict
        return Divergence(module=None, reason=f"locating failed: {type(exc).__name__}: {exc}")
