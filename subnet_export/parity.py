"""Parity results: one comparison per output, input set and backend, and the report built from them.

The verdict is elementwise ``|candidate - reference| <= atol + rtol * |reference|`` plus shape and
dtype equality and no NaN/Inf; everything else in a comparison explains the verdict. The JSON
schema and the default tolerances are documented in docs/parity.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .locate import Divergence

__all__ = [
    "DEFAULT_TOLERANCES",
    "SCHEMA_VERSION",
    "BackendResult",
    "OutputComparison",
    "ParityReport",
    "Tolerance",
    "tolerance_for",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Tolerance:
    """Elementwise tolerance: ``|d| <= atol + rtol * |reference| + rounding``.

    ``rounding`` is ``rounding_slack * |reference - oracle|``: the reference's own float32
    rounding error at that element, measured against the float64 oracle (0 without an oracle).
    A backend is not blamed for disagreeing with the reference by what the reference itself got
    wrong; with the default slack of 2, a backend exactly as accurate as the reference passes.
    ``rounding_slack=0`` gives the plain ``atol + rtol * |reference|`` rule.
    """

    atol: float = 1e-5
    rtol: float = 1e-4
    rounding_slack: float = 2.0


# float32 defaults, per backend; see docs/parity.md for why GPU backends get more room
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "torch-cpu": Tolerance(1e-5, 1e-4),
    "ort-cpu": Tolerance(1e-5, 1e-4),
    "torch-cuda": Tolerance(1e-4, 1e-3),
    "ort-cuda": Tolerance(1e-4, 1e-3),
}


def tolerance_for(backend: str,
                  tolerances: Tolerance | Mapping[str, Tolerance] | None) -> Tolerance:
    """The tolerance a backend is judged by: one for all, a per-backend map, or the default."""
    if isinstance(tolerances, Tolerance):
        return tolerances
    if tolerances and backend in tolerances:
        return tolerances[backend]
    return DEFAULT_TOLERANCES.get(backend, Tolerance())


@dataclass(frozen=True)
class OutputComparison:
    """One output of one input set on one backend, against the reference.

    Errors are over finite elements only; ``nan_count``/``inf_count`` count the candidate's
    non-finite elements (``ref_nonfinite`` the reference's), and any of them fails the check.
    ``oracle_max_abs_error`` is the float64 oracle against the reference: the part of the error
    that float32 rounding alone explains. ``min_passing_atol`` is the smallest atol that would
    have passed with the same rtol.
    """

    output: str
    inputs: str
    shape: list[int]
    ref_shape: list[int]
    dtype: str
    ref_dtype: str
    max_abs_error: float
    max_rel_error: float
    rel_l2_error: float
    nan_count: int
    inf_count: int
    ref_nonfinite: int
    argmax_agreement: float | None
    min_passing_atol: float
    oracle_max_abs_error: float | None
    oracle_vs_candidate_max_abs_error: float | None
    passed: bool
    reason: str = ""

    @classmethod
    def from_arrays(
        cls,
        output: str,
        inputs: str,
        candidate: np.ndarray,
        reference: np.ndarray,
        tolerance: Tolerance,
        *,
        oracle: np.ndarray | None = None,
    ) -> OutputComparison:
        """Compare a candidate array to the reference (and optionally a float64 oracle).

        Args:
            output: output name.
            inputs: label of the input set (e.g. ``random-b8``).
            candidate: the backend's output.
            reference: the reference output.
            tolerance: the verdict's atol and rtol.
            oracle: the float64 oracle's output, when computed.

        Returns:
            The comparison, with ``passed`` and a short ``reason`` when it failed.
        """
        cand = np.asarray(candidate)
        ref = np.asarray(reference)
        base: dict[str, Any] = dict(
            output=output, inputs=inputs, shape=list(cand.shape), ref_shape=list(ref.shape),
            dtype=str(cand.dtype), ref_dtype=str(ref.dtype),
            nan_count=int(np.isnan(cand).sum()) if cand.dtype.kind in "fc" else 0,
            inf_count=int(np.isinf(cand).sum()) if cand.dtype.kind in "fc" else 0,
            ref_nonfinite=int((~np.isfinite(ref)).sum()) if ref.dtype.kind in "fc" else 0,
        )
        if cand.shape != ref.shape or cand.dtype != ref.dtype:
            return cls(**base, max_abs_error=float("inf"), max_rel_error=float("inf"),
                       rel_l2_error=float("inf"), argmax_agreement=None,
                       min_passing_atol=float("inf"), oracle_max_abs_error=None,
                       oracle_vs_candidate_max_abs_error=None, passed=False,
                       reason=f"shape/dtype {list(cand.shape)} {cand.dtype} != reference "
                       f"{list(ref.shape)} {ref.dtype}")
        c64, r64 = cand.astype(np.float64), ref.astype(np.float64)
        finite = np.isfinite(c64) & np.isfinite(r64)
        diff = np.abs(np.where(finite, c64, 0.0) - np.where(finite, r64, 0.0))
        mag = np.where(finite, np.abs(r64), 0.0)
        # a relative error near a zero reference means nothing; floor the denominator at a
        # millionth of the tensor's own scale
        floor = max(float(mag.max(initial=0.0)) * 1e-6, 1e-30)
        max_rel = float((diff / np.maximum(mag, floor)).max(initial=0.0))
        rel_l2 = float(np.linalg.norm(diff) / max(float(np.linalg.norm(mag)), 1e-30))
        o_ref = o_cand = None
        rounding = 0.0
        if oracle is not None and np.shape(oracle) == ref.shape:
            o64 = np.asarray(oracle, dtype=np.float64)
            o_ref = _max_abs(o64, r64)
            o_cand = _max_abs(o64, c64)
            ok = finite & np.isfinite(o64)
            rounding = tolerance.rounding_slack * np.abs(
                np.where(ok, r64, 0.0) - np.where(ok, o64, 0.0))
        min_atol = float(np.maximum(diff - tolerance.rtol * mag - rounding, 0.0).max(initial=0.0))
        nonfinite = base["nan_count"] + base["inf_count"] + base["ref_nonfinite"]
        reasons = []
        if nonfinite:
            reasons.append(f"{base['nan_count']} NaN and {base['inf_count']} Inf in the output, "
                           f"{base['ref_nonfinite']} NaN/Inf in the reference")
        if min_atol > tolerance.atol:
            reasons.append(f"max abs error {float(diff.max()):.3g} over atol={tolerance.atol:g} "
                           f"rtol={tolerance.rtol:g} (and the reference's own float32 rounding "
                           f"x{tolerance.rounding_slack:g})")
        return cls(**base, max_abs_error=float(diff.max(initial=0.0)), max_rel_error=max_rel,
                   rel_l2_error=rel_l2, argmax_agreement=_argmax_agreement(c64, r64),
                   min_passing_atol=min_atol, oracle_max_abs_error=o_ref,
                   oracle_vs_candidate_max_abs_error=o_cand, passed=not reasons,
                   reason="; ".join(reasons))


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    finite = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(np.where(finite, a, 0.0) - np.where(finite, b, 0.0)).max(initial=0.0))


def _argmax_agreement(cand: np.ndarray, ref: np.ndarray) -> float | None:
    """Fraction of rows whose argmax agrees, for 2-D (batch, classes) outputs; else None."""
    if cand.ndim != 2 or cand.shape[1] < 2 or cand.shape[0] == 0:
        return None
    return float((np.argmax(cand, axis=1) == np.argmax(ref, axis=1)).mean())


@dataclass(frozen=True)
class BackendResult:
    """One candidate backend: its status, what it really ran on, and its comparisons.

    ``status`` is ``passed``, ``failed`` or ``skipped`` (``reason`` says why it was skipped or
    failed). ``providers`` is what onnxruntime's session really used (``get_providers()``);
    ``tf32`` records the TF32 switches in force during the run (None on CPU).
    """

    name: str
    status: str
    tolerance: Tolerance
    reason: str = ""
    providers: list[str] = field(default_factory=list)
    tf32: dict[str, bool] | None = None
    comparisons: list[OutputComparison] = field(default_factory=list)

    @classmethod
    def from_comparisons(cls, name: str, tolerance: Tolerance,
                         comparisons: list[OutputComparison], **extra: Any) -> BackendResult:
        """A ran backend: passed exactly when every comparison passed."""
        failed = [c for c in comparisons if not c.passed]
        reason = f"{failed[0].output} on {failed[0].inputs}: {failed[0].reason}" if failed else ""
        return cls(name=name, status="failed" if failed or not comparisons else "passed",
                   tolerance=tolerance, reason=reason or ("" if comparisons else "no comparison"),
                   comparisons=comparisons, **extra)

    @classmethod
    def skipped(cls, name: str, tolerance: Tolerance, reason: str, **extra: Any) -> BackendResult:
        """A backend that could not run here, with the reason."""
        return cls(name=name, status="skipped", tolerance=tolerance, reason=reason, **extra)


@dataclass
class ParityReport:
    """The verdict of one validation run.

    ``passed`` is True when no backend failed and at least one onnxruntime backend passed, since
    the point is that the ONNX file computes what the supernet does. ``exit_code`` is 0 or 1.
    """

    reference: str
    backends: list[BackendResult]
    inputs: list[dict[str, Any]]
    divergence: Divergence | None = None
    tool_version: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        """True when nothing failed and the ONNX model ran on at least one onnxruntime backend."""
        ran_onnx = any(b.status == "passed" and b.name.startswith("ort-") for b in self.backends)
        return ran_onnx and not any(b.status == "failed" for b in self.backends)

    @property
    def exit_code(self) -> int:
        """0 when the report passed, 1 otherwise."""
        return 0 if self.passed else 1

    def backend(self, name: str) -> BackendResult:
        """The result of one backend by name; KeyError when it is not in the report."""
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (schema in docs/parity.md)."""
        return {
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "passed": self.passed,
            "reference": self.reference,
            "inputs": self.inputs,
            "backends": [asdict(b) for b in self.backends],
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise to JSON; non-finite floats are written as the strings "inf"/"nan"."""
        return json.dumps(_encode(self.to_dict()), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ParityReport:
        """Read a report written by :meth:`to_json`.

        Raises:
            ValueError: the schema version is not one this version reads.
        """
        from .locate import Divergence

        data = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"parity report schema {data.get('schema_version')!r} is not "
                             f"{SCHEMA_VERSION}; read it with the subnet-export that wrote it")
        backends = [
            BackendResult(**{**b, "tolerance": Tolerance(**b["tolerance"]),
                             "comparisons": [OutputComparison(**_decode(c))
                                             for c in b["comparisons"]]})
            for b in data["backends"]
        ]
        div = data.get("divergence")
        return cls(reference=data["reference"], backends=backends, inputs=data["inputs"],
                   divergence=None if div is None else Divergence.from_dict(div),
                   tool_version=data.get("tool_version", ""),
                   schema_version=data["schema_version"])

    def format_table(self) -> str:
        """A short human table: one row per backend and output, worst input set shown."""
        rows = [("backend", "status", "output", "max abs", "max rel", "min atol", "oracle", "note")]
        for b in self.backends:
            if not b.comparisons:
                rows.append((b.name, b.status, "-", "-", "-", "-", "-", b.reason))
                continue
            for name in dict.fromkeys(c.output for c in b.comparisons):
                worst = max((c for c in b.comparisons if c.output == name),
                            key=lambda c: (not c.passed, c.min_passing_atol))
                rows.append((b.name, "passed" if worst.passed else "FAILED", name,
                             f"{worst.max_abs_error:.2e}", f"{worst.max_rel_error:.2e}",
                             f"{worst.min_passing_atol:.2e}",
                             "-" if worst.oracle_max_abs_error is None
                             else f"{worst.oracle_max_abs_error:.2e}", worst.reason))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"parity {verdict} (reference: {self.reference})")
        if self.divergence is not None:
            lines.append(self.divergence.describe())
        return "\n".join(line.rstrip() for line in lines)


def _encode(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


_FLOAT_STRINGS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _decode(fields: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`_encode` on the float fields of one record (names stay strings)."""
    return {k: _FLOAT_STRINGS[v] if k not in _TEXT_FIELDS and isinstance(v, str)
            and v in _FLOAT_STRINGS else v for k, v in fields.items()}


_TEXT_FIELDS = {"output", "inputs", "dtype", "ref_dtype", "reason", "module"}
