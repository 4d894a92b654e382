"""Statistical parity of an edge variant: how close an FP16 or INT8 model stays to float32.

A quantized model is not meant to equal float32 element for element, so its verdict is not the
noise rule of ``parity/rule.py`` but a few statistics per output, pooled over an input set,
against the float32 reference (the supernet path):

- ``cosine``: the mean over samples of the cosine similarity of candidate and reference;
- ``snr_db``: ``10 log10(sum r^2 / sum (v - r)^2)``, inf when the two are equal;
- ``max_abs_error``, ``mean_abs_error``;
- for logits (a float output of shape ``(N, C)``, ``C >= 2``): ``top1_agreement``, the share
  of samples whose argmax agrees, and ``top5_agreement`` (``C > 5``), the share whose reference
  argmax is among the candidate's five largest.

:class:`VariantLimits` holds the verdict's bounds; :data:`DEFAULT_LIMITS` are the documented
defaults (docs/edge.md, justified by the study in docs/benchmarks.md). numpy only: ``verify``
judges variants with it where torch is absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["DEFAULT_LIMITS", "LIMIT_KEYS", "OutputStats", "VariantLimits", "format_stats",
           "output_stats", "parse_limits", "stats_from_json"]


@dataclass(frozen=True)
class OutputStats:
    """The statistics of one output of a variant on one input set."""

    output: str
    samples: int
    cosine: float
    snr_db: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    finite: bool = True

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: an infinite SNR (exact outputs) is written as the string ``"inf"``."""
        return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def stats_from_json(data: Mapping[str, Any]) -> OutputStats:
    """The inverse of :meth:`OutputStats.to_json`."""
    known = {f.name for f in fields(OutputStats)}
    values = {k: (float(v) if isinstance(v, str) and k != "output" else v)
              for k, v in data.items() if k in known}
    return OutputStats(**values)


@dataclass(frozen=True)
class VariantLimits:
    """The bounds a variant's statistics must meet, per output (None: not checked).

    Agreement bounds apply to logits outputs only (see the module docstring).
    """

    cosine_min: float | None = None
    snr_db_min: float | None = None
    top1_agreement_min: float | None = None
    top5_agreement_min: float | None = None
    max_abs_error_max: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)

    def failures(self, stats: OutputStats) -> list[str]:
        """What ``stats`` breaks, one phrase each; empty when it passes."""
        if not stats.finite:
            return [f"{stats.output}: the variant computes NaN or Inf"]
        out = []
        for key, value, bound, low in (
            ("cosine", stats.cosine, self.cosine_min, True),
            ("snr_db", stats.snr_db, self.snr_db_min, True),
            ("top1_agreement", stats.top1_agreement, self.top1_agreement_min, True),
            ("top5_agreement", stats.top5_agreement, self.top5_agreement_min, True),
            ("max_abs_error", stats.max_abs_error, self.max_abs_error_max, False),
        ):
            if bound is None or value is None:
                continue
            if (value < bound) if low else (value > bound):
                out.append(f"{stats.output}: {key} {value:.4g} {'<' if low else '>'} {bound:g}")
        return out

    def margin_db(self, stats: OutputStats) -> float:
        """How far the SNR is above its bound, in dB (inf without an SNR bound)."""
        if self.snr_db_min is None:
            return math.inf
        return stats.snr_db - self.snr_db_min if stats.finite else -math.inf


#: The verdict's defaults per variant kind (docs/edge.md).
DEFAULT_LIMITS: dict[str, VariantLimits] = {
    "fp16": VariantLimits(cosine_min=0.9999, snr_db_min=40.0, top1_agreement_min=0.99,
                          top5_agreement_min=0.995),
    "int8": VariantLimits(cosine_min=0.99, snr_db_min=20.0, top1_agreement_min=0.98,
                          top5_agreement_min=0.99),
}
LIMIT_KEYS = tuple(f.name for f in fields(VariantLimits))


def parse_limits(texts: Sequence[str], kinds: Sequence[str]) -> dict[str, VariantLimits]:
    """The limits of ``kinds``: the defaults with ``KIND.KEY=VALUE`` overrides applied.

    ``VALUE`` ``none`` drops a bound. Raises :class:`InputError` naming a bad entry.
    """
    unknown = [k for k in kinds if k not in DEFAULT_LIMITS]
    if unknown:
        raise InputError(f"unknown variant kind(s) {', '.join(unknown)}; known: "
                         f"{', '.join(DEFAULT_LIMITS)}")
    limits = {k: DEFAULT_LIMITS[k] for k in kinds}
    for text in texts:
        head, sep, value = text.partition("=")
        kind, dot, key = head.strip().partition(".")
        if not sep or not dot or kind not in limits or key not in LIMIT_KEYS:
            raise InputError(
                f"variant limit {text!r} is not KIND.KEY=VALUE with KIND one of "
                f"{', '.join(limits) or '(no variant asked for)'} and KEY one of "
                f"{', '.join(LIMIT_KEYS)}")
        if value.strip().lower() == "none":
            limits[kind] = replace(limits[kind], **{key: None})
            continue
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InputError(f"variant limit {text!r}: {value!r} is not a finite number or none")
        limits[kind] = replace(limits[kind], **{key: number})
    return limits


def _is_logits(reference: np.ndarray) -> bool:
    return reference.dtype.kind == "f" and reference.ndim == 2 and reference.shape[1] >= 2


def output_stats(name: str, reference: np.ndarray, candidate: np.ndarray) -> OutputStats:
    """The statistics of one output, batch first (dimension 0 is the sample)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output {name!r}: shape {candidate.shape}, expected {reference.shape}")
    r = reference.astype(np.float64).reshape(max(len(reference), 1), -1)
    v = candidate.astype(np.float64).reshape(r.shape)
    n = r.shape[0]
    if not np.isfinite(v).all():
        return OutputStats(name, n, math.nan, -math.inf, math.inf, math.inf, finite=False)
    diff = v - r
    err, power = float(np.sum(diff ** 2)), float(np.sum(r ** 2))
    snr = math.inf if err == 0 else (10 * math.log10(power / err) if power > 0 else -math.inf)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(v, axis=1)
    dots = np.sum(r * v, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0),
                   np.where(np.abs(diff).max(axis=1) == 0, 1.0, 0.0))
    top1 = top5 = None
    if _is_logits(reference):
        ref_top = r.argmax(axis=1)
        top1 = float(np.mean(v.argmax(axis=1) == ref_top))
        if r.shape[1] > 5:
            best5 = np.argsort(-v, axis=1, kind="stable")[:, :5]
            top5 = float(np.mean((best5 == ref_top[:, None]).any(axis=1)))
    return OutputStats(name, n, float(np.mean(cos)), snr, float(np.abs(diff).max(initial=0.0)),
                       float(np.abs(diff).mean()) if diff.size else 0.0, top1, top5)


def _fmt(x: float | None, spec: str) -> str:
    if x is None:
        return "-"
    return format(x, spec) if math.isfinite(x) else ("inf" if x > 0 else str(x))


def format_stats(rows: Sequence[tuple[str, str, OutputStats, list[str] | None]]) -> list[str]:
    """Table lines of ``(variant, set, stats, failures)`` rows, the float parity table's style.

    ``failures`` None marks a set that is reported, not judged (verdict ``-``).
    """
    lines = [f"{'variant':<8} {'set':<12} {'output':<20} {'cosine':>8} {'SNR dB':>7} "
             f"{'max abs':>9} {'mean abs':>9} {'top1':>6} {'top5':>6}  verdict"]
    for variant, label, s, failed in rows:
        lines.append(
            f"{variant:<8} {label:<12} {s.output:<20} {_fmt(s.cosine, '.5f'):>8} "
            f"{_fmt(s.snr_db, '.1f'):>7} {_fmt(s.max_abs_error, '.3g'):>9} "
            f"{_fmt(s.mean_abs_error, '.3g'):>9} {_fmt(s.top1_agreement, '.3f'):>6} "
            f"{_fmt(s.top5_agreement, '.3f'):>6}  "
            f"{'-' if failed is None else 'FAIL' if failed else 'ok'}")
    return lines
