"""The candidates of a parity run: the plain model in torch, the ONNX file in onnxruntime.

Each backend runs every input set and hands its outputs to a :class:`Judge`, which compares them
with the reference and the float64 oracle of the run (``report.BackendResult.judge``). A backend
that cannot run here is skipped with the reason; one that crashes has failed, with the reason.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..arch import fixed_arch
from ..runtime import available_providers, backend_name, make_session
from .inputs import InputSet
from .report import BackendResult
from .rule import Tolerance, tolerance_for

__all__ = ["Judge", "Oracle", "ort_backend", "reference_outputs", "reference_runs",
           "run_float64", "run_torch", "torch_backends"]


def run_torch(model: nn.Module, tensors: Sequence[torch.Tensor], device: str = "cpu",
              dtype: torch.dtype | None = None) -> list[np.ndarray]:
    """``model(*tensors)`` without grad, outputs flattened to numpy (float inputs cast to dtype)."""
    args = [t.to(device) for t in tensors]
    if dtype is not None:
        args = [t.to(dtype) if t.is_floating_point() else t for t in args]
    with torch.no_grad():
        out = model(*args)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.detach().cpu().numpy() for o in outs]


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


@dataclass
class Judge:
    """Turns a backend's outputs into its :class:`BackendResult`, against one run's arrays."""

    set_labels: list[str]
    references: list[list[np.ndarray]]
    oracles: list[list[np.ndarray]] | None
    output_names: list[str]
    tolerances: Tolerance | Mapping[str, Tolerance] | None

    def tolerance(self, name: str) -> Tolerance:
        """The tolerance backend ``name`` is judged by."""
        return tolerance_for(name, self.tolerances)

    def __call__(self, name: str, outputs: list[list[np.ndarray]], **extra: Any) -> BackendResult:
        return BackendResult.judge(name, self.tolerance(name), self.set_labels, outputs,
                                   self.references, self.oracles, self.output_names, **extra)

    def crashed(self, name: str, exc: Exception, **extra: Any) -> BackendResult:
        """A backend whose run raised: failed, with the error."""
        return BackendResult(name=name, status="failed", tolerance=self.tolerance(name),
                             reason=f"{type(exc).__name__}: {exc}", **extra)

    def skipped(self, name: str, reason: str, **extra: Any) -> BackendResult:
        """A backend that cannot run here."""
        return BackendResult.skipped(name, self.tolerance(name), reason, **extra)


@dataclass
class Oracle:
    """The reference run in float64 on CPU: its outputs per input set.

    The float64 run does not copy the module: it is called with float64 copies of its floating
    parameters and buffers (:func:`run_float64`), so a supernet's candidates are converted but
    never duplicated as modules. Locating a failure needs a float64 module of its own;
    :meth:`model` makes that copy on first use.
    """

    kind: str
    outputs: list[list[np.ndarray]] | None
    source: nn.Module | None = None
    arch: Mapping[str, Any] | None = None
    _copy: nn.Module | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, supernet: nn.Module | None, arch: Mapping[str, Any] | None, plain: nn.Module,
              sets: list[InputSet]) -> Oracle:
        source, kind = (plain, "plain-float64") if supernet is None else (supernet,
                                                                          "supernet-float64")
        path = None if supernet is None else arch
        try:
            outputs = run_float64(source, path, [s.tensors for s in sets])
        except Exception as exc:  # noqa: BLE001 - a model that cannot run in float64: say why
            return cls(f"none: the reference does not run in float64 "
                       f"({type(exc).__name__}: {exc})", None)
        return cls(kind, outputs, source, path)

    def model(self) -> nn.Module | None:
        """A float64 CPU copy of the reference module in eval mode (None without an oracle).

        A copy, so the caller's module keeps its dtype and storage sharing whatever happens.
        """
        if self.outputs is None or self.source is None:
            return None
        if self._copy is None:
            self._copy = copy.deepcopy(self.source).to("cpu").double().eval()
        return self._copy


def run_float64(model: nn.Module, arch: Mapping[str, Any] | None,
                inputs: Sequence[Sequence[torch.Tensor]]) -> list[list[np.ndarray]]:
    """``model`` in float64 on CPU, eval mode, arch fixed when given, on each input tuple.

    The module is called through ``torch.func.functional_call`` with float64 CPU copies of
    its floating parameters and buffers: it computes what ``copy.deepcopy(model).double()``
    computes, bit for bit, without copying the module. Its own tensors, dtype and training
    flags are as before afterwards, whatever happens.
    """
    state = {name: t.detach().to("cpu", torch.float64)
             for name, t in (*model.named_parameters(), *model.named_buffers())
             if t.is_floating_point()}
    with _eval(model), fixed_arch(model, arch) if arch is not None else contextlib.nullcontext():
        return [_numpy(torch.func.functional_call(
            model, state, tuple(t.to("cpu", torch.float64) if t.is_floating_point()
                                else t.to("cpu") for t in tensors)))
            for tensors in inputs]


def _numpy(out: Any) -> list[np.ndarray]:
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.detach().cpu().numpy() for o in outs]


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for a run; the caller's training flags are restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training


def reference_outputs(supernet: nn.Module | None, arch: Mapping[str, Any] | None, plain: nn.Module,
                      tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """The reference's outputs: the supernet path of ``arch`` in eval mode, or ``plain``."""
    return reference_runs(supernet, arch, plain, [tensors])[0]


def reference_runs(supernet: nn.Module | None, arch: Mapping[str, Any] | None, plain: nn.Module,
                   inputs: Sequence[Sequence[torch.Tensor]]) -> list[list[np.ndarray]]:
    """:func:`reference_outputs` on each input tuple, the path fixed once for all of them."""
    if supernet is None:
        return [run_torch(plain, tensors) for tensors in inputs]
    # parity is an eval-mode property; the caller's training flags are restored afterwards
    with _eval(supernet), fixed_arch(supernet, arch):
        return [run_torch(supernet, tensors) for tensors in inputs]


def torch_backends(plain: nn.Module, sets: list[InputSet], judge: Judge,
                   tf32: bool) -> list[BackendResult]:
    """``torch-cpu``, and ``torch-cuda`` (TF32 as asked) or its skip."""
    results = [_torch_run("torch-cpu", plain, sets, judge)]
    if not torch.cuda.is_available():
        return [*results, judge.skipped("torch-cuda", "torch.cuda.is_available() is False")]
    with _tf32(tf32) as state:
        return [*results, _torch_run("torch-cuda", copy.deepcopy(plain).cuda(), sets, judge,
                                     "cuda", tf32=state)]


def _torch_run(name: str, model: nn.Module, sets: list[InputSet], judge: Judge,
               device: str = "cpu", **extra: Any) -> BackendResult:
    try:
        outputs = [run_torch(model, s.tensors, device) for s in sets]
    except Exception as exc:  # noqa: BLE001 - a backend that crashes has failed, with the reason
        return judge.crashed(name, exc, **extra)
    return judge(name, outputs, **extra)


def ort_backend(provider: str, onnx_path: Path, in_names: Sequence[str], sets: list[InputSet],
                judge: Judge, tf32: bool) -> BackendResult:
    """The ONNX file on one execution provider (``use_tf32`` as asked on CUDA)."""
    name = backend_name(provider)
    try:
        available = available_providers()
    except ImportError as exc:
        return judge.skipped(name, f"onnxruntime is not installed ({exc})")
    if provider not in available:
        return judge.skipped(name, f"{provider} is not available in onnxruntime (has {available})")
    cuda = provider == "CUDAExecutionProvider"
    state = {"ort_use_tf32": tf32} if cuda else None
    try:
        session = make_session(onnx_path, [(provider, {"use_tf32": int(tf32)} if cuda else {})])
    except Exception as exc:  # noqa: BLE001 - a session that cannot start means skipped here
        return judge.skipped(name, f"{provider} could not start a session: {exc}", tf32=state)
    used = session.get_providers()
    if used[0] != provider:
        return judge.skipped(name, f"onnxruntime fell back to {used}", providers=used, tf32=state)
    try:
        outputs = [session.run(None, {n: t.cpu().numpy() for n, t in zip(in_names, s.tensors)})
                   for s in sets]
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on a backend fails there
        return judge.crashed(name, exc, providers=used, tf32=state)
    return judge(name, outputs, providers=used, tf32=state)
