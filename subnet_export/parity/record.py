"""A parity report as a bundle records it (``parity.json``), read the one way the bundle side does.

``ParityReport.from_json`` rebuilds the whole report of this version; the bundle writer and
``gate`` need three facts of any report, partial or from another version, and read them here:
the verdict, the tolerance the samples are judged by, and the worst output error. Stdlib only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RecordedParity"]


@dataclass(frozen=True)
class RecordedParity:
    """The facts of a recorded parity report that a bundle and its gates use.

    Attributes:
        passed: the verdict (``report["passed"]``).
        tolerance: ``report["tolerance"]``, else the ``ort-cpu`` backend's (the samples are rerun
            on onnxruntime CPU), else the first backend's that has one; None when none does.
        max_abs_error: the worst ``max_abs_error`` of any backend's output comparisons (NaN and
            Inf count as infinite); None when no comparison records one. The divergence's own
            figure is a module's, not an output's, and is not counted.
    """

    passed: bool
    tolerance: Mapping[str, Any] | None
    max_abs_error: float | None

    @classmethod
    def from_json(cls, data: Any) -> RecordedParity:
        """Read the facts of a parsed report.

        Raises:
            ValueError: ``data`` is not an object with a boolean ``passed``.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("passed"), bool):
            raise ValueError("a parity report is an object with a boolean 'passed'")
        backends = [b for b in data.get("backends") or [] if isinstance(b, Mapping)]
        tolerance = data.get("tolerance")
        if tolerance is None:
            ordered = sorted(backends, key=lambda b: str(b.get("name", "")) != "ort-cpu")
            tolerance = next((b["tolerance"] for b in ordered
                              if isinstance(b.get("tolerance"), Mapping)), None)
        errors = [_float(c.get("max_abs_error")) for b in backends
                  for c in b.get("comparisons") or [] if isinstance(c, Mapping)]
        errors = [e for e in errors if e is not None]
        return cls(data["passed"], tolerance, max(errors, default=None))


def _float(value: Any) -> float | None:
    # the report writes non-finite floats as "nan" / "inf" strings
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return math.inf if math.isnan(number) else number
