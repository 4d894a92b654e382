"""``verify_bundle``: check a bundle's hashes and rerun its samples, on a machine without torch.

Imports only the stdlib, numpy and (when samples are rerun) onnxruntime: never torch, never the
supernet code, so an edge team can run it with nothing but ``pip install onnxruntime numpy``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InputError, TamperError
from ..parity.rule import NoiseCheck, noise_check
from ..runtime import available_providers, make_session
from .integrity import FileCheck, check_files, tamper_message
from .layout import SAMPLES_NAME, TOLERANCE_KEYS
from .samples import SampleCase, read_samples
from .verify_variants import VariantCheck, check_variants, format_variant_checks

__all__ = ["SampleCheck", "VerifyReport", "verify_bundle"]


@dataclass
class SampleCheck:
    """One expected output of one sample case, recomputed in onnxruntime."""

    case: int
    output: str
    passed: bool
    max_abs_error: float | None
    max_rel_error: float | None
    message: str = ""


@dataclass
class VerifyReport:
    """The result of :func:`verify_bundle`.

    ``exit_code`` is 0 when everything passed, 1 otherwise (tampered file, output mismatch, or a
    failed parity verdict); a malformed bundle raises :class:`BundleError` (exit 2) instead.
    ``samples`` are per case and output; ``noise`` is the noise rule per output, pooled over
    the cases (empty when the tolerance is elementwise only).
    """

    bundle: str
    files: list[FileCheck]
    samples: list[SampleCheck]
    tolerance: dict[str, float | None]
    providers: list[str]
    parity: str
    manifest_sha256: str
    require_parity: bool = True
    notes: list[str] = field(default_factory=list)
    noise: list[NoiseCheck] = field(default_factory=list)
    variants: list[VariantCheck] = field(default_factory=list)

    @property
    def tampered(self) -> list[FileCheck]:
        """File checks that failed."""
        return [f for f in self.files if not f.passed]

    @property
    def passed(self) -> bool:
        """Whether files, samples and (if required) the parity verdict all passed."""
        parity_ok = self.parity == "passed" or not self.require_parity
        return (not self.tampered and bool(self.samples) and all(s.passed for s in self.samples)
                and all(n.passed for n in self.noise) and parity_ok
                and all(v.passed for v in self.variants))

    @property
    def exit_code(self) -> int:
        """0 when :attr:`passed`, else 1."""
        return 0 if self.passed else 1

    def raise_for_tamper(self) -> None:
        """Raise :class:`TamperError` naming every file that failed its check."""
        if self.tampered:
            raise TamperError(tamper_message(self.bundle, self.tampered))

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``passed`` and ``exit_code`` included)."""
        return {
            "bundle": self.bundle,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "parity": self.parity,
            "manifest_sha256": self.manifest_sha256,
            "tolerance": dict(self.tolerance),
            "providers": list(self.providers),
            "files": [{**asdict(f), "passed": f.passed} for f in self.files],
            "samples": [asdict(s) for s in self.samples],
            "noise": [_finite(asdict(n)) for n in self.noise],
            "notes": list(self.notes),
            "variants": [v.to_json() for v in self.variants],
        }

    def format_table(self) -> str:
        """Return a human-readable table of file and sample checks and the verdict."""
        lines = [f"bundle {self.bundle}", "", f"{'file':<40} status"]
        lines += [f"{f.path:<40} {f.status}" for f in self.files]
        if self.samples:
            lines += ["", f"{'case':>4}  {'output':<28} {'max abs':>10} {'max rel':>10}  verdict"]
            for s in self.samples:
                lines.append(f"{s.case:>4}  {s.output:<28} {_fmt(s.max_abs_error):>10} "
                             f"{_fmt(s.max_rel_error):>10}  {'ok' if s.passed else 'FAIL'}"
                             + (f"  {s.message}" if s.message else ""))
        if self.noise:
            lines += ["", f"{'output':<28} {'error/noise':>11} {'allowed':>8}  verdict"]
            lines += [f"{n.output:<28} {n.ratio:>11.2f} {'x' + format(n.factor, 'g'):>8}  "
                      f"{'ok' if n.passed else 'FAIL'}" for n in self.noise]
            lines.append("error/noise: onnxruntime's error against the float64 oracle in units "
                         "of the float32 reference's own error")
        lines += format_variant_checks(self.variants)
        lines += [f"note: {n}" for n in self.notes]
        lines += ["", f"parity verdict in manifest: {self.parity}",
                  f"verify: {'PASSED' if self.passed else 'FAILED'} (exit {self.exit_code})"]
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    # strict JSON: an infinite ratio (an integer output that differs) is written as a string
    return {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in record.items()}


def _compare(expected: np.ndarray, actual: np.ndarray, atol: float | None, rtol: float | None
             ) -> tuple[bool, float | None, float | None, str]:
    """Shape, NaN/Inf and, when ``atol``/``rtol`` is set, the elementwise rule for one output."""
    if expected.shape != actual.shape:
        return False, None, None, f"shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return True, 0.0, 0.0, ""
    wide = np.complex128 if np.iscomplexobj(expected) or np.iscomplexobj(actual) else np.float64
    e, a = expected.astype(wide), actual.astype(wide)
    diff = np.abs(a - e)
    max_abs = float(np.max(diff))
    max_rel = float(np.max(diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)))
    if not (math.isfinite(max_abs) and math.isfinite(max_rel)):
        return False, None, None, "non-finite values"
    ok = atol is None and rtol is None or bool(
        np.all(np.isclose(a, e, atol=atol or 0.0, rtol=rtol or 0.0, equal_nan=False)))
    return ok, max_abs, max_rel, ""


def _tolerance(manifest_tol: dict[str, float | None], atol: float | None, rtol: float | None,
               noise_factor: float | None) -> dict[str, float | None]:
    given = {"atol": atol, "rtol": rtol, "noise_factor": noise_factor}
    if all(v is None for v in given.values()):
        return {k: manifest_tol.get(k) for k in TOLERANCE_KEYS}
    bad = [f"{k}={v}" for k, v in given.items()
           if v is not None and not (math.isfinite(v) and v >= 0)]
    if bad:
        raise InputError(f"tolerances must be finite numbers >= 0, not {', '.join(bad)}")
    return given


def _noise_checks(cases: list[SampleCase], got: list[dict[str, np.ndarray]],
                  factor: float, root: Path, model_file: str) -> list[NoiseCheck]:
    if not all(c.oracles for c in cases):
        raise BundleError(f"bundle {root}: its tolerance is the noise rule but samples.npz holds "
                          "no oracle outputs; pass --atol/--rtol to verify elementwise")
    names = sorted(cases[0].outputs)
    if any(sorted(c.outputs) != names for c in cases):
        raise BundleError(f"bundle {root}: the noise rule needs the same outputs in every case")
    tag = "" if model_file.endswith(".onnx") else f"{model_file}:"
    return [noise_check(tag + name, [g[name] for g in got], [c.outputs[name] for c in cases],
                        [c.oracles[name] for c in cases], factor) for name in names]


def _rerun(root: Path, model_file: str, cases: list[SampleCase], providers: list[str],
           tol: dict[str, float | None], report: VerifyReport) -> list[dict[str, np.ndarray]]:
    """Run the samples through one model file (``model.onnx`` or its ``.ort``), check each."""
    session = _session(root / model_file, providers)
    tag = "" if model_file.endswith(".onnx") else f"{model_file}:"
    got: list[dict[str, np.ndarray]] = []
    for case in cases:
        names = sorted(case.outputs)
        try:
            got.append(dict(zip(names, map(np.asarray, session.run(names, case.inputs)))))
        except Exception as e:  # onnxruntime's own error types: the samples do not fit the model
            raise BundleError(f"bundle {root}: sample case {case.index} does not run in "
                              f"{model_file}: {e}") from e
        for name in names:
            ok, mabs, mrel, msg = _compare(case.outputs[name], got[-1][name],
                                           tol["atol"], tol["rtol"])
            report.samples.append(SampleCheck(case.index, tag + name, ok, mabs, mrel, msg))
    return got


def _session(model_path: Path, providers: list[str]) -> Any:
    available = available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(f"onnxruntime provider(s) {missing} unavailable here; have {available}")
    try:
        return make_session(model_path, providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise BundleError(f"onnxruntime cannot load {model_path}: {e}") from e


def verify_bundle(
    bundle_dir: str | Path,
    *,
    providers: list[str] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    noise_factor: float | None = None,
    require_parity: bool = True,
) -> VerifyReport:
    """Check every file of a bundle against its manifest, then rerun its samples in onnxruntime.

    Samples are not run when a file check failed: a tampered model is not loaded.

    Args:
        bundle_dir: the bundle directory.
        providers: onnxruntime execution providers, in order; default CPU only.
        atol: elementwise absolute tolerance. Any of ``atol``, ``rtol`` and ``noise_factor``
            given replaces the manifest's whole tolerance (an unset one is off); none given
            keeps the manifest's.
        rtol: elementwise relative tolerance.
        noise_factor: the noise rule's factor (``parity/rule.py``): onnxruntime's error against the
            samples' float64 oracle, pooled over the cases, in units of the reference's own.
        require_parity: fail when the manifest's parity verdict is ``failed``.

    Returns:
        The report; its ``exit_code`` is 1 for a tampered file, an output mismatch, or a failed
        parity verdict (when required), else 0.

    Raises:
        BundleError: the bundle is missing, its manifest or samples are unreadable or malformed,
            or onnxruntime cannot load its model (exit code 2).
        InputError: a requested provider is unavailable.
    """
    root = Path(bundle_dir)
    manifest, files = check_files(root)
    tol = _tolerance(manifest.tolerance, atol, rtol, noise_factor)
    providers = list(providers or ["CPUExecutionProvider"])
    report = VerifyReport(str(root), files, [], tol, providers, manifest.parity,
                          manifest.manifest_sha256, require_parity)
    if report.tampered:
        report.notes.append("samples not run: the bundle's files do not match its manifest")
        return report
    try:
        cases = read_samples(root / SAMPLES_NAME)
    except ValueError as e:
        raise BundleError(f"bundle {root}: {e}") from e
    ort_file = manifest.ort.get("files", {}).get(manifest.model_file)
    for model_file in [manifest.model_file, *([ort_file] if ort_file else [])]:
        got = _rerun(root, model_file, cases, providers, tol, report)
        if tol["noise_factor"] is not None:
            report.noise += _noise_checks(cases, got, tol["noise_factor"], root, model_file)
    report.variants = check_variants(root, manifest, providers)
    if manifest.parity != "passed":
        report.notes.append("the manifest records a failed parity check")
    return report


def _main(argv: list[str] | None = None) -> int:
    """``python -m subnet_export.bundle.verify BUNDLE [--json]``: the same check without the CLI."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m subnet_export.bundle.verify")
    parser.add_argument("bundle")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = verify_bundle(args.bundle)
    except (BundleError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(report.to_json(), indent=2) if args.json else report.format_table())
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(_main())
