"""The parity rule: a backend's error against a float64 oracle, in units of float32's own noise.

For one output of one backend, pooled over every input set of the run::

    noise = ||reference - oracle||_2      the float32 reference's own rounding error
    floor = max(noise, u * ||oracle||_2)  u = 2**-24, one float32 rounding of every element
    error = ||candidate - oracle||_2
    ratio = error / floor                 passes when ratio <= noise_factor

``reference`` is the supernet path in float32, ``oracle`` the same path in float64 on the same
machine and inputs. The rule rests on ``noise`` being float32 rounding: a reference farther than
``MAX_REFERENCE_NOISE`` (relative) from its own float64 run is not (a dtype-dependent code path,
an overflow), and then the output fails, whatever the candidate, rather than hide a fault under
an inflated floor. A correct backend rounds differently but about as much as the reference, so
its ratio stays near 1 on any CPU or kernel set; a fault moves the candidate away from the oracle
by its own effect, whatever float32 does. The evidence for the default factor is
``bench/verdict_study.py`` (docs/parity.md).

An explicit ``atol``/``rtol`` means what it says: elementwise
``|candidate - reference| <= atol + rtol * |reference|`` (numpy's ``isclose``), and then it is the
only rule unless a ``noise_factor`` is given too. numpy only: ``verify`` judges a bundle's samples
with this module on machines without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_NOISE_FACTOR",
    "DEFAULT_NOISE_FACTORS",
    "MAX_REFERENCE_NOISE",
    "UNIT_ROUNDOFF",
    "NoiseCheck",
    "Tolerance",
    "noise_check",
    "tolerance_for",
]

#: float32 unit roundoff: the largest relative error of one round-to-nearest.
UNIT_ROUNDOFF = 2.0**-24
#: The largest ``||reference - oracle|| / ||oracle||`` that float32 rounding is taken to explain
#: (the deepest shipped space measures 4e-5).
MAX_REFERENCE_NOISE = 1e-3
#: Default factor on CPU backends; chosen from the study in docs/parity.md.
DEFAULT_NOISE_FACTOR = 4.0
#: Per-backend defaults. CUDA kernels (cuDNN's algorithm choice, split-K reductions) may round
#: more than CPU kernels; until the study has run on a GPU they get four times the room.
DEFAULT_NOISE_FACTORS: dict[str, float] = {
    "torch-cpu": DEFAULT_NOISE_FACTOR,
    "ort-cpu": DEFAULT_NOISE_FACTOR,
    "torch-cuda": 4 * DEFAULT_NOISE_FACTOR,
    "ort-cuda": 4 * DEFAULT_NOISE_FACTOR,
    # outputs the user's framework recorded, on CPU or with TF32 off (docs/parity.md)
    "external": DEFAULT_NOISE_FACTOR,
}


@dataclass(frozen=True)
class Tolerance:
    """How a backend's outputs are judged.

    ``Tolerance()`` is the noise rule with the backend's default factor. ``Tolerance(atol, rtol)``
    is the elementwise rule alone, exactly as written (a missing one of the two is 0).
    ``noise_factor`` with either of them applies both rules.

    Attributes:
        atol: elementwise absolute tolerance, or None.
        rtol: elementwise relative tolerance, or None.
        noise_factor: the largest error, in units of the float32 noise floor, or None.

    Raises:
        ValueError: a value is negative, NaN or infinite.
    """

    atol: float | None = None
    rtol: float | None = None
    noise_factor: float | None = None

    def __post_init__(self) -> None:
        for name in ("atol", "rtol", "noise_factor"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Tolerance.{name} must be a finite number >= 0, not {value}")

    @property
    def elementwise(self) -> bool:
        """Whether the elementwise ``atol + rtol * |reference|`` rule applies."""
        return self.atol is not None or self.rtol is not None

    @property
    def bound(self) -> tuple[float, float]:
        """``(atol, rtol)`` of the elementwise rule, 0 for an unset one."""
        return (self.atol or 0.0, self.rtol or 0.0)

    def describe(self) -> str:
        """One short phrase: ``noise x4``, ``atol=1e-05 rtol=0``, or both."""
        parts = []
        if self.noise_factor is not None:
            parts.append(f"noise x{self.noise_factor:g}")
        if self.elementwise:
            parts.append("atol={:g} rtol={:g}".format(*self.bound))
        return " and ".join(parts) or "none"

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready ``{"atol", "rtol", "noise_factor"}`` (None where unset)."""
        return {"atol": self.atol, "rtol": self.rtol, "noise_factor": self.noise_factor}


def tolerance_for(backend: str,
                  tolerances: Tolerance | Mapping[str, Tolerance] | None) -> Tolerance:
    """The tolerance a backend is judged by, with the default noise factor filled in.

    Args:
        backend: the backend name (``ort-cpu``).
        tolerances: one :class:`Tolerance` for all backends, a per-backend map, or None.

    Returns:
        The given tolerance; a tolerance that sets no rule at all (``Tolerance()``, a backend
        missing from the map, None) becomes the noise rule with the backend's default factor.
    """
    tol = tolerances if isinstance(tolerances, Tolerance) else (tolerances or {}).get(backend)
    if tol is None or (not tol.elementwise and tol.noise_factor is None):
        return Tolerance(noise_factor=DEFAULT_NOISE_FACTORS.get(backend, DEFAULT_NOISE_FACTOR))
    return tol


@dataclass(frozen=True)
class NoiseCheck:
    """The noise rule for one output of one backend, pooled over the run's input sets.

    Attributes:
        output: the output name.
        error: ``||candidate - oracle||_2`` (against the reference when there is no oracle).
        noise: ``||reference - oracle||_2``, the reference's own float32 error (0 without oracle).
        floor: ``max(noise, u * ||oracle||_2)``, the unit ``ratio`` is counted in.
        scale: ``||oracle||_2``.
        ratio: ``error / floor``; infinite for a non-float output that differs at all.
        factor: the largest ratio that passes.
        elements: how many elements were pooled.
        passed: ``ratio <= factor``, and ``noise`` is within ``MAX_REFERENCE_NOISE`` of
            ``||oracle||``.
    """

    output: str
    error: float
    noise: float
    floor: float
    scale: float
    ratio: float
    factor: float
    elements: int
    passed: bool


def noise_check(output: str, candidates: Sequence[np.ndarray], references: Sequence[np.ndarray],
                oracles: Sequence[np.ndarray] | None, factor: float) -> NoiseCheck:
    """Judge one output by the noise rule over several input sets.

    Args:
        output: the output name, for the record.
        candidates: the backend's output, one array per input set.
        references: the float32 reference's output, same shapes.
        oracles: the float64 oracle's output, same shapes; None when no oracle could be run,
            which leaves only the one-rounding floor (strict).
        factor: the noise factor.

    Returns:
        The :class:`NoiseCheck`. Elements that are not finite on every side are left out here;
        the per-set comparison fails them.
    """
    err2 = noise2 = scale2 = 0.0
    n = 0
    exact = True
    for k, (cand, ref) in enumerate(zip(candidates, references, strict=True)):
        c, r = np.asarray(cand), np.asarray(ref)
        if c.shape != r.shape:
            return NoiseCheck(output, math.inf, 0.0, 0.0, 0.0, math.inf, factor, 0, False)
        exact = exact and c.dtype.kind not in "fc" and r.dtype.kind not in "fc"
        o = r if oracles is None else np.asarray(oracles[k])
        c64, r64, o64 = (a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)
                         for a in (c, r, o))
        ok = np.isfinite(c64) & np.isfinite(r64) & np.isfinite(o64)
        c64, r64, o64 = (np.where(ok, a, 0.0) for a in (c64, r64, o64))
        err2 += float(np.sum(np.abs(c64 - o64) ** 2))
        noise2 += 0.0 if oracles is None else float(np.sum(np.abs(r64 - o64) ** 2))
        scale2 += float(np.sum(np.abs(o64) ** 2))
        n += int(ok.sum())
    error, noise, scale = math.sqrt(err2), math.sqrt(noise2), math.sqrt(scale2)
    if exact:  # integer or bool outputs: float rounding explains no difference at all
        ratio = 0.0 if error == 0 else math.inf
        return NoiseCheck(output, error, 0.0, 0.0, scale, ratio, factor, n, ratio <= factor)
    floor = max(noise, UNIT_ROUNDOFF * scale)
    ratio = error / floor if floor > 0 else (0.0 if error == 0 else math.inf)
    passed = ratio <= factor and noise <= MAX_REFERENCE_NOISE * scale
    return NoiseCheck(output, error, noise, floor, scale, ratio, factor, n, passed)


def describe_failure(check: NoiseCheck) -> str:
    """Why a :class:`NoiseCheck` failed, in one phrase."""
    if check.noise > MAX_REFERENCE_NOISE * check.scale:
        return (f"the float32 reference is {check.noise:.3g} from its own float64 run, more "
                f"than rounding explains (over {MAX_REFERENCE_NOISE:g} relative): look for code "
                "that depends on the dtype, or an overflow")
    return (f"error {check.ratio:.3g}x the float32 noise floor, over x{check.factor:g} "
            f"({check.error:.3g} against {check.floor:.3g})")
