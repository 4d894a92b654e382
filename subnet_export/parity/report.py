"""Parity results: each backend's verdict, the first divergence, and the report built from them.

A backend passes when every output passes the rule of ``rule.py`` (its error against the float64
oracle within a factor of the float32 noise floor, pooled over the input sets; or an explicit
elementwise ``atol``/``rtol``), and every comparison has the reference's shape and dtype and no
NaN/Inf. The per-set figures explain the verdict. The JSON schema is in docs/parity.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .comparison import OutputComparison
from .rule import (
    NoiseCheck,
    Tolerance,
    describe_failure,
    noise_check,
)

__all__ = ["EXTERNAL_BACKEND", "SCHEMA_VERSION", "BackendResult", "Divergence", "ParityReport",
           "SetArrays"]

SCHEMA_VERSION = 2
#: The backend of outputs another implementation recorded (``external.py``).
EXTERNAL_BACKEND = "external"


@dataclass(frozen=True)
class BackendResult:
    """One candidate backend: its status, what it really ran on, and its checks.

    ``status`` is ``passed``, ``failed`` or ``skipped`` (``reason`` says why it was skipped or
    failed). ``comparisons`` are per output and input set; ``noise`` holds the noise rule per
    output, pooled over the input sets (empty when the tolerance is elementwise only).
    ``providers`` is what onnxruntime's session really used (``get_providers()``); ``tf32``
    records the TF32 switches in force during the run (None on CPU).
    """

    name: str
    status: str
    tolerance: Tolerance
    reason: str = ""
    providers: list[str] = field(default_factory=list)
    tf32: dict[str, bool] | None = None
    comparisons: list[OutputComparison] = field(default_factory=list)
    noise: list[NoiseCheck] = field(default_factory=list)

    @classmethod
    def judge(cls, name: str, tolerance: Tolerance, set_labels: list[str],
              candidates: list[list[np.ndarray]], references: list[list[np.ndarray]],
              oracles: list[list[np.ndarray]] | None, output_names: list[str],
              **extra: Any) -> BackendResult:
        """Compare a backend's outputs on every input set and pass the verdict.

        Args:
            name: the backend.
            tolerance: its tolerance (``tolerance_for``).
            set_labels: one label per input set.
            candidates: per input set, the backend's outputs in order.
            references: per input set, the reference's outputs.
            oracles: per input set, the float64 oracle's outputs; None when there is none.
            output_names: the output names (positions past the end are named by index).
            **extra: ``providers``, ``tf32``.

        Returns:
            The result; ``failed`` with the first reason when any check failed.
        """
        for got, ref in zip(candidates, references, strict=True):
            if len(got) != len(ref):
                return cls(name=name, status="failed", tolerance=tolerance,
                           reason=f"{len(got)} outputs, reference has {len(ref)}", **extra)
        names = [output_names[k] if k < len(output_names) else str(k)
                 for k in range(len(references[0]) if references else 0)]
        comparisons = [
            OutputComparison.from_arrays(names[k], label, got[k], ref[k], tolerance,
                                         oracle=None if oracles is None else oracles[i][k])
            for i, (label, got, ref) in enumerate(zip(set_labels, candidates, references))
            for k in range(len(ref))
        ]
        noise = [] if tolerance.noise_factor is None else [
            noise_check(names[k], [got[k] for got in candidates], [ref[k] for ref in references],
                        None if oracles is None else [orc[k] for orc in oracles],
                        tolerance.noise_factor)
            for k in range(len(names))
        ]
        reasons = [f"{c.output} on {c.inputs}: {c.reason}" for c in comparisons if not c.passed]
        reasons += [f"{n.output}: {describe_failure(n)}" for n in noise if not n.passed]
        if not comparisons:
            reasons.append("no comparison")
        return cls(name=name, status="failed" if reasons else "passed", tolerance=tolerance,
                   reason=reasons[0] if reasons else "", comparisons=comparisons, noise=noise,
                   **extra)

    @classmethod
    def skipped(cls, name: str, tolerance: Tolerance, reason: str, **extra: Any) -> BackendResult:
        """A backend that could not run here, with the reason."""
        return cls(name=name, status="skipped", tolerance=tolerance, reason=reason, **extra)


@dataclass(frozen=True)
class Divergence:
    """Where the plain model and the ONNX model first disagree.

    Attributes:
        module: path of the module where the error enters (``blocks.1.conv``, see
            ``blame.py``), or None when no module output could be blamed (``reason`` says why).
        labels: supernet labels that chose this module (from ``module_labels``), nearest
            labelled ancestor when the module itself has none.
        tensor: the ONNX value compared for that module.
        max_abs_error: largest finite difference at that module.
        nan_count: NaN/Inf elements in either side at that module.
        checked: how many modules had an output compared.
        unmapped: modules with no ONNX counterpart (fused away, identity, called twice).
        reason: one line a user can act on.
    """

    module: str | None
    reason: str
    labels: list[str] = field(default_factory=list)
    tensor: str = ""
    max_abs_error: float = 0.0
    nan_count: int = 0
    checked: int = 0
    unmapped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One human line, e.g. ``first divergence: blocks.1.conv (labels: ks1) ...``."""
        if self.module is None:
            return f"first divergence: not located ({self.reason})"
        labels = f" (labels: {', '.join(self.labels)})" if self.labels else ""
        return f"first divergence: {self.module}{labels}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; an infinite error is written as the string "inf"."""
        data = asdict(self)
        if not np.isfinite(data["max_abs_error"]):
            data["max_abs_error"] = str(data["max_abs_error"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Divergence:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "max_abs_error": float(data["max_abs_error"])})


@dataclass(frozen=True)
class SetArrays:
    """One input set's arrays from a validation run: inputs, reference and oracle outputs."""

    label: str
    inputs: tuple[Any, ...]
    reference: list[np.ndarray]
    oracle: list[np.ndarray] | None


@dataclass
class ParityReport:
    """The verdict of one validation run.

    ``passed`` is True when no backend failed and at least one onnxruntime backend passed, since
    the point is that the ONNX file computes what the supernet does. ``exit_code`` is 0 or 1.
    ``oracle`` says what the float64 oracle was (``supernet-float64`` or ``plain-float64``, the
    reference run in float64), or why there was none (``none: ...``).
    """

    reference: str
    backends: list[BackendResult]
    inputs: list[dict[str, Any]]
    oracle: str = ""
    divergence: Divergence | None = None
    tool_version: str = ""
    schema_version: int = SCHEMA_VERSION
    arrays: list[SetArrays] = field(default_factory=list, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        """True when nothing failed and the ONNX model ran on at least one onnxruntime backend."""
        ran_onnx = any(b.status == "passed" and b.name.startswith("ort-") for b in self.backends)
        return ran_onnx and not any(b.status == "failed" for b in self.backends)

    @property
    def exit_code(self) -> int:
        """0 when the report passed, 1 otherwise."""
        return 0 if self.passed else 1

    @property
    def oracle_ran(self) -> bool:
        """Whether a float64 oracle was computed (the noise rule had its noise floor)."""
        return not self.oracle.startswith("none")

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
            "oracle": self.oracle,
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
        data = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"parity report schema {data.get('schema_version')!r} is not "
                             f"{SCHEMA_VERSION}; read it with the subnet-export that wrote it")
        backends = [
            BackendResult(**{**b, "tolerance": Tolerance(**b["tolerance"]),
                             "comparisons": [OutputComparison(**_decode(c))
                                             for c in b["comparisons"]],
                             "noise": [NoiseCheck(**_decode(n)) for n in b.get("noise", [])]})
            for b in data["backends"]
        ]
        div = data.get("divergence")
        return cls(reference=data["reference"], backends=backends, inputs=data["inputs"],
                   oracle=data.get("oracle", ""),
                   divergence=None if div is None else Divergence.from_dict(div),
                   tool_version=data.get("tool_version", ""),
                   schema_version=data["schema_version"])

    def format_table(self) -> str:
        """A short human table: one row per backend and output, the worst input set's figures."""
        rows = [("backend", "status", "output", "max abs", "error/noise", "rule", "note")]
        for b in self.backends:
            if not b.comparisons:
                rows.append((b.name, b.status, "-", "-", "-", b.tolerance.describe(), b.reason))
                continue
            noise = {n.output: n for n in b.noise}
            for name in dict.fromkeys(c.output for c in b.comparisons):
                mine = [c for c in b.comparisons if c.output == name]
                check = noise.get(name)
                notes = [f"{c.inputs}: {c.reason}" for c in mine if not c.passed]
                if check is not None and not check.passed:
                    notes.insert(0, f"over x{check.factor:g}")
                if notes and b.name == EXTERNAL_BACKEND:
                    notes.insert(0, "the recorded outputs disagree with our supernet path")
                rows.append((b.name, "FAILED" if notes else "passed", name,
                             f"{max(c.max_abs_error for c in mine):.2e}",
                             "-" if check is None else f"{check.ratio:.2f}",
                             b.tolerance.describe(), "; ".join(notes)))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        oracle = f"{self.oracle}, the reference rerun in float64" if self.oracle else "none"
        lines.append(f"reference: the {self.reference} path in float32; oracle: {oracle}")
        lines.append("error/noise: a backend's error against the oracle, in units of the "
                     "reference's own error; rule noise xF passes at or below F, atol/rtol "
                     "elementwise")
        verdict = "PASSED" if self.passed else "FAILED"
        oracle = f", oracle: {self.oracle}" if self.oracle else ""
        lines.append(f"parity {verdict} (reference: {self.reference}{oracle})")
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
