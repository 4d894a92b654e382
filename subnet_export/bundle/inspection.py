"""``BundleInspection``: what ``inspect_bundle`` read from a bundle, as JSON and as text.

The result side of ``inspect.py``, as ``parity/report.py`` is of ``validate``: built from facts
already read, it opens no file itself. Imports no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..parity.rule import Tolerance

__all__ = ["BackendVerdict", "BundleInspection"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _records(value: Any) -> list[Mapping[str, Any]]:
    return [r for r in _list(value) if isinstance(r, Mapping)]


def _worst(records: list[Mapping[str, Any]], key: str) -> float | None:
    # the report writes non-finite floats as "nan" / "inf"; a NaN error is the worst one
    values = []
    for value in (record.get(key) for record in records):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is not None:
            values.append(math.inf if math.isnan(number) else number)
    return max(values, default=None)


def _strict(value: Any) -> Any:
    # strict JSON, as the parity report writes it: non-finite floats become strings
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


@dataclass(frozen=True)
class BackendVerdict:
    """One backend of ``parity.json``: its status and the worst figures it recorded.

    Attributes:
        name: the backend (``ort-cpu``, ``torch-cuda``, ...).
        status: ``passed``, ``failed`` or ``skipped`` as recorded (``unknown`` when absent).
        reason: why it failed or was skipped; empty otherwise.
        providers: the onnxruntime providers its session used.
        tolerance: its ``{"atol", "rtol", "noise_factor"}``, or None when not recorded.
        comparisons: output comparisons recorded (one per output and input set).
        failed_comparisons: how many of them failed.
        max_abs_error: the worst comparison's ``max_abs_error`` (a NaN counts as infinite).
        max_rel_error: the worst ``max_rel_error``.
        noise_ratio: the worst noise-rule ratio (error over the float32 noise floor).
        noise_factor: the largest ratio that passes; None when the noise rule did not apply.
    """

    name: str
    status: str
    reason: str = ""
    providers: tuple[str, ...] = ()
    tolerance: Mapping[str, Any] | None = None
    comparisons: int = 0
    failed_comparisons: int = 0
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    noise_ratio: float | None = None
    noise_factor: float | None = None

    @property
    def passed(self) -> bool:
        """Whether the recorded status is ``passed``."""
        return self.status == "passed"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackendVerdict:
        """Read one entry of a parity report's ``backends``; missing fields take defaults."""
        comparisons, noise = _records(data.get("comparisons")), _records(data.get("noise"))
        tol = data.get("tolerance")
        return cls(
            name=str(data.get("name", "?")), status=str(data.get("status", "unknown")),
            reason=str(data.get("reason") or ""),
            providers=tuple(map(str, _list(data.get("providers")))),
            tolerance=dict(tol) if isinstance(tol, Mapping) else None,
            comparisons=len(comparisons),
            failed_comparisons=sum(c.get("passed") is False for c in comparisons),
            max_abs_error=_worst(comparisons, "max_abs_error"),
            max_rel_error=_worst(comparisons, "max_rel_error"),
            noise_ratio=_worst(noise, "ratio"), noise_factor=_worst(noise, "factor"))

    def rule(self) -> str:
        """The tolerance as one phrase (``noise x4``); ``-`` when none is recorded."""
        try:
            return Tolerance(**self.tolerance).describe() if self.tolerance else "-"
        except (TypeError, ValueError):
            return json.dumps(self.tolerance, sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, the fields in order and ``passed``; non-finite figures as strings."""
        return _strict({**asdict(self), "passed": self.passed})


@dataclass(frozen=True)
class BundleInspection:
    """What :func:`inspect_bundle` read; the hashes are unchecked (``subnet-export verify``).

    Attributes:
        bundle: the bundle directory.
        arch: ``arch.json``.
        model: ``file``, ``external_data``, ``file_bytes`` (on disk, external data included),
            ``ir_version``, ``opset``, ``opset_imports``, the graph's ``parameter_count`` and
            ``initializer_bytes`` (BatchNorm statistics included), the manifest's count
            (``manifest_parameter_count``: the torch model's for ``subnet-export onnx``) and
            ``unused_parameters`` (None when the manifest records none).
        inputs: graph inputs as ``{"name", "dtype", "shape"}``; a named dim is a string.
        outputs: graph outputs, same form.
        operators: op type -> node count, most frequent first (:func:`op_histogram`).
        parity: ``passed``, ``reference``, ``oracle``, ``divergence`` from ``parity.json``;
            ``manifest`` (its recorded verdict), ``tolerance``, ``sample_cases`` (the samples'
            rule and size) from the manifest.
        backends: each backend's verdict, in the report's order.
        provenance: what the manifest and model record of their making (versions, exporter,
            producer, checkpoint, recalibration, model metadata, other extra, manifest sha256).
        notes: inconsistencies a ``verify`` run should look at.
    """

    bundle: str
    arch: Mapping[str, Any]
    model: Mapping[str, Any]
    inputs: tuple[Mapping[str, Any], ...]
    outputs: tuple[Mapping[str, Any], ...]
    operators: Mapping[str, int]
    parity: Mapping[str, Any]
    backends: tuple[BackendVerdict, ...]
    provenance: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """The verdict of ``parity.json``."""
        return bool(self.parity["passed"])

    @property
    def failed(self) -> bool:
        """Whether the writer marked the bundle failed (the manifest's parity is ``failed``)."""
        return self.parity["manifest"] != "passed"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict in a fixed key order, strict JSON (no NaN or Infinity)."""
        return _strict({
            "bundle": self.bundle, "passed": self.passed, "failed": self.failed,
            "hashes_checked": False, "model": self.model, "arch": self.arch,
            "inputs": self.inputs, "outputs": self.outputs, "operators": self.operators,
            "parity": self.parity, "backends": [b.to_json() for b in self.backends],
            "provenance": self.provenance, "notes": self.notes})

    def format_text(self) -> str:
        """A readable report: Model, Arch, Inputs/Outputs, Operators, Parity, Provenance."""
        m, p = self.model, self.parity
        lines = [f"bundle {self.bundle}"]
        if self.failed:
            lines.append("marked FAILED: its parity check failed; do not deploy it")
        domains = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in m["opset_imports"].items())
        data = f" with {', '.join(m['external_data'])}" if m["external_data"] else ""
        unused = m["unused_parameters"]
        _section(lines, "Model", [
            ("file", f"{m['file']}{data}: {_size(m['file_bytes'])} on disk"),
            ("onnx", f"IR {m['ir_version']}, opset {m['opset']} ({domains})"),
            ("parameters", f"{m['parameter_count']:,} in the graph "
                           f"({_size(m['initializer_bytes'])} of initializers), "
                           f"{m['manifest_parameter_count']:,} in the manifest"),
            ("unused", "not recorded" if unused is None else ", ".join(unused) or "none")])
        _section(lines, "Arch", [(k, _value(v)) for k, v in self.arch.items()])
        _section(lines, "Inputs/Outputs", [
            (kind, io["name"], io["dtype"], _shape(io["shape"]))
            for kind, ios in (("input", self.inputs), ("output", self.outputs)) for io in ios])
        _section(lines, f"Operators ({sum(self.operators.values())} nodes, "
                        f"{len(self.operators)} types)",
                 [(op, str(n)) for op, n in self.operators.items()])
        rows = [("backend", "status", "max abs", "max rel", "error/noise", "rule", "note")]
        rows += [(b.name, b.status, _fig(b.max_abs_error), _fig(b.max_rel_error),
                  _fig(b.noise_ratio), b.rule(), b.reason) for b in self.backends]
        _section(lines, f"Parity: {'PASSED' if self.passed else 'FAILED'} (reference: "
                        f"{p['reference']}, oracle: {p['oracle'] or '-'})", rows)
        if p["divergence"]:
            lines.append(f"  first divergence: {p['divergence']}")
        rule = BackendVerdict("", "", tolerance=p["tolerance"]).rule()
        lines.append(f"  samples: {p['sample_cases']} case(s), judged by {rule} in verify")
        _section(lines, "Provenance", _provenance_rows(self.provenance))
        lines += ["", *(f"note: {n}" for n in self.notes),
                  f"hashes not checked: run `subnet-export verify {self.bundle}` to check them"]
        return "\n".join(lines)


def _section(lines: list[str], title: str, rows: list[tuple[str, ...]]) -> None:
    # every column but the last is padded to its widest cell
    lines += ["", title] + ([] if rows else ["  -"])
    widths = [max((len(r[i]) for r in rows if len(r) > i + 1), default=0)
              for i in range(max(map(len, rows), default=1) - 1)]
    for row in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        lines.append(("  " + "  ".join(cells)).rstrip())


def _provenance_rows(prov: Mapping[str, Any]) -> list[tuple[str, ...]]:
    recal = prov["bn_recalibration"]
    rows = [("tool", f"subnet-export {prov['tool_version']}, bundle schema "
                     f"{prov['schema_version']}"),
            ("exporter", _value(prov["exporter"] or "-")), ("producer", prov["producer"] or "-"),
            ("versions", ", ".join(f"{k} {v or '-'}" for k, v in prov["versions"].items())),
            ("checkpoint", prov["source_checkpoint_sha256"] or "not recorded"),
            ("bn recalibration", _value(recal) if recal else "none")]
    rows += [(k, _value(v)) for k, v in prov["extra"].items()]
    return rows + [("manifest sha256", prov["manifest_sha256"])]


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _shape(shape: list[Any] | None) -> str:
    return "-" if shape is None else f"[{', '.join('?' if d is None else str(d) for d in shape)}]"


def _fig(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _size(n: int) -> str:
    return f"{n:,} bytes" if n < 1024 else f"{n / 1024:,.1f} KiB"
