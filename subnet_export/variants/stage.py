"""The ``variants`` stage of ``export_subnet``: the data variants are judged and calibrated on.

- With ``--calib-data``, its samples in a seeded order are split: the first up to
  :data:`JUDGED_MAX` are held out and judged (label ``held-out``), INT8 calibrates on the rest
  (``--calib-samples`` of them); without ``--calib-samples`` a quarter is held out. When fewer
  than :data:`HELD_OUT_MIN` samples would be held out, the judged set is the calibration data
  itself (label ``calibration``, in-sample).
- Else ``--samples`` are split the same way (labels ``samples-held-out`` and ``samples``).
- Else the judged set is :data:`RANDOM_SAMPLES` seeded random inputs (``random``), and INT8
  calibrates on it.
- The judged set's reference is the float32 supernet path of the arch.
- The random validation sets parity ran are reported beside it (label ``validation``), not
  judged: a model trained on images says little on Gaussian noise.

The judged set and its reference are written to ``variants.npz``, so ``verify`` judges the
variants on the edge by the same statistics, without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..bundle.layout import VARIANTS_SAMPLES
from ..bundle.samples import write_samples
from ..parity.backends import reference_runs
from ..parity.inputs import make_inputs
from ..parity.report import ParityReport
from ..recalibrate.data import select, to_tensors
from .build import JudgedSet, VariantOptions, VariantResult, make_variants
from .convert import data_file
from .ort_format import OPERATORS_CONFIG, ort_name, to_ort_format

__all__ = ["HELD_OUT_MIN", "JUDGED_MAX", "RANDOM_SAMPLES", "VariantsOutcome", "run_variants",
           "split_calibration"]

JUDGED_MAX = 256
RANDOM_SAMPLES = 64
HELD_OUT_MIN = 32


@dataclass
class VariantsOutcome:
    """What the stage adds to the bundle: files, manifest entries, and the results."""

    results: list[VariantResult] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    ort: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def manifest_entries(self) -> dict[str, dict[str, Any]]:
        return {r.kind: {**r.to_manifest(), "external_data": _data_files(r)}
                for r in self.results}


def _data_files(result: VariantResult) -> list[str]:
    """The variant's external-data file, when it has one (a model over 2 GiB)."""
    data = data_file(result.path)
    return [data.name] if data.exists() else []


def _reference(supernet: nn.Module, frozen: Any, plain: nn.Module,
               tensors: Sequence[torch.Tensor], batch: int) -> list[np.ndarray]:
    n = tensors[0].shape[0]
    chunks = [tuple(t[i:i + batch] for t in tensors) for i in range(0, n, batch)]
    runs = reference_runs(supernet, frozen, plain, chunks)
    return [np.concatenate([run[k] for run in runs]) for k in range(len(runs[0]))]


def split_calibration(data: Any, calib_samples: int | None, seed: int,
                      labels: tuple[str, str] = ("held-out", "calibration")
                      ) -> tuple[str, list[torch.Tensor], list[torch.Tensor]]:
    """``(label, judged, calibration)`` tensors of ``data`` (the module docstring).

    ``labels``: the judged set's label when it is held out, and when it is in-sample.
    """
    shuffled = select(to_tensors(data), None, seed)
    n = shuffled[0].shape[0]
    held = min(JUDGED_MAX, n // 4 if calib_samples is None else n - min(calib_samples, n))
    if held >= HELD_OUT_MIN:
        end = None if calib_samples is None else held + calib_samples
        rest = [t[held:end] for t in shuffled]
        return labels[0], [t[:held] for t in shuffled], rest
    return (labels[1], [t[:JUDGED_MAX] for t in shuffled],
            [t[:calib_samples] for t in shuffled])


def _judged_and_calibration(calib_data: Any, calib_samples: int | None, samples: Any,
                            examples: Sequence[torch.Tensor], specs: Any, seed: int,
                            names: Sequence[str]
                            ) -> tuple[str, list[torch.Tensor], list[torch.Tensor]]:
    if calib_data is not None:
        return split_calibration(calib_data, calib_samples, seed)
    if samples is not None:
        found = make_inputs(examples, batch_sizes=(), samples=samples, specs=specs,
                            input_names=names)
        return split_calibration(list(found[0].tensors), calib_samples, seed,
                                 ("samples-held-out", "samples"))
    sets = make_inputs(examples, batch_sizes=(RANDOM_SAMPLES,), seed=seed + 1, specs=specs)
    return "random", list(sets[0].tensors), list(sets[0].tensors)


def _as_set(label: str, names: Sequence[str], out_names: Sequence[str],
            tensors: Sequence[Any], outputs: Sequence[np.ndarray]) -> JudgedSet:
    arrays = [t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in tensors]
    return JudgedSet(label, dict(zip(names, arrays)), dict(zip(out_names, outputs)))


def _write_judged(work: Path, judged: JudgedSet, out: VariantsOutcome) -> None:
    arrays = {f"input:{k}": v for k, v in judged.inputs.items()}
    arrays.update({f"output:{k}": v for k, v in judged.reference.items()})
    write_samples(work / VARIANTS_SAMPLES, arrays)
    out.files[VARIANTS_SAMPLES] = work / VARIANTS_SAMPLES


def run_variants(supernet: nn.Module, frozen: Any, plain: nn.Module, exported: Any,
                 work: Path, options: VariantOptions, *, report: ParityReport,
                 examples: Sequence[torch.Tensor], specs: Any, calib_data: Any = None,
                 calib_samples: int | None = None, samples: Any = None,
                 seed: int = 0) -> VariantsOutcome:
    """Make, judge and (with ``options.ort_format``) convert the variants of the exported model."""
    names, out_names = list(exported.input_names), list(exported.output_names)
    label, tensors, picked = _judged_and_calibration(calib_data, calib_samples, samples,
                                                     examples, specs, seed, names)
    judged = _as_set(label, names, out_names, tensors,
                     _reference(supernet, frozen, plain, tensors, options.batch))
    calibration = {n: t.numpy() for n, t in zip(names, picked)}
    shapes = [v.shape[1:] for v in judged.inputs.values()]
    randoms = [a for a in report.arrays if a.label.startswith("random-")
               and [np.asarray(x).shape[1:] for x in a.inputs] == shapes]
    others = []
    if randoms:  # the validation sets of one shape, pooled
        stacked = [np.concatenate([np.asarray(a.inputs[i]) for a in randoms])
                   for i in range(len(names))]
        refs = [np.concatenate([a.reference[k] for a in randoms]) for k in range(len(out_names))]
        others.append(_as_set("validation", names, out_names, stacked, refs))
    out = VariantsOutcome()
    out.results = make_variants(exported.path, work, judged=judged, calibration=calibration,
                                options=options, other_sets=others, scratch=work / ".variants")
    out.files = {r.file: r.path for r in out.results}
    out.files.update({n: work / n for r in out.results for n in _data_files(r)})
    if out.results:
        _write_judged(work, judged, out)
    if options.ort_format:
        models = [Path(exported.path), *(r.path for r in out.results)]
        out.ort = to_ort_format(models, work)
        for r in out.results:
            r.ort_file = ort_name(r.file)
        out.files.update({n: work / n for n in out.ort["files"].values()})
        out.files[OPERATORS_CONFIG] = work / OPERATORS_CONFIG
    return out
