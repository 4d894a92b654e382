"""Pipeline cost: each stage of ``export_subnet`` against a bare ``torch.onnx.export`` + an ORT run.

Issue 6, item 3. The subnet is MobileNetV3-Large from the shipped space (224x224). For each
exporter (dynamo, TorchScript) and each repeat, in one process:

- the pipeline: ``subnet_export.pipeline.export_subnet`` (freeze, materialize, export, validate,
  bundle), its own stage timings, and its wall time (the rest is bookkeeping between stages:
  the bundle's samples are validation's own input sets, reference and float64 oracle);
- the bare route: ``torch.onnx.export`` of the same materialized model with torch's defaults,
  then one onnxruntime CPU session and one run at batch 1.

Figures are medians over the repeats; ratios are to the bare route's total.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["markdown", "render", "run"]

NAME = "pipeline"
REPEATS = 3
EXPORTERS = ("dynamo", "torchscript")


def _bare(plain: Any, shape: tuple[int, ...], path: Path, exporter: str) -> dict[str, float]:
    """A hand-rolled export: torch.onnx.export with its defaults, then one ORT run."""
    import contextlib

    import numpy as np
    import onnxruntime as ort
    import torch

    x = torch.randn(shape)
    start = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(plain, (x,), str(path), dynamo=True, verbose=False)
        else:
            torch.onnx.export(plain, (x,), str(path), dynamo=False)
    t_export = time.perf_counter() - start
    start = time.perf_counter()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})
    t_ort = time.perf_counter() - start
    return {"export": t_export, "ort_session_and_run": t_ort, "total": t_export + t_ort}


def measure(repeats: int = REPEATS) -> dict[str, Any]:
    """Time the pipeline and the bare route, ``repeats`` times per exporter."""
    import subnet_export as se
    from subnet_export.pipeline import STAGES, export_subnet

    from .export_common import mobilenetv3_large

    case = mobilenetv3_large()
    out: dict[str, Any] = {"model": case.name, "input_shape": list(case.input_shape),
                           "repeats": repeats, "exporters": {}}
    for exporter in EXPORTERS:
        runs: list[dict[str, Any]] = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
                start = time.perf_counter()
                result = export_subnet(case.supernet, Path(tmp) / "bundle",
                                       input_shapes=[case.input_shape], arch=case.arch,
                                       exporter=exporter)
                wall = time.perf_counter() - start
                plain = se.materialize(case.supernet, case.arch).eval()
                bare = _bare(plain, case.input_shape, Path(tmp) / "bare.onnx", exporter)
            runs.append({"stages": dict(result.timings), "wall": wall,
                         "passed": result.report.passed, "bare": bare})
        # only the stages this run went through (optional ones, e.g. recalibrate, may be absent)
        stages = [s for s in STAGES if all(s in r["stages"] for r in runs)]
        med = {s: statistics.median(r["stages"][s] for r in runs) for s in stages}
        wall = statistics.median(r["wall"] for r in runs)
        bare = {k: statistics.median(r["bare"][k] for r in runs) for k in runs[0]["bare"]}
        out["exporters"][exporter] = {
            "runs": runs,
            "median_s": {**med, "stages_total": sum(med.values()), "wall": wall,
                         "untimed_reference_samples": wall - sum(med.values())},
            "bare_median_s": bare,
            "stages": stages,
            "ratio_to_bare_total": {**{s: med[s] / bare["total"] for s in stages},
                                    "stages_total": sum(med.values()) / bare["total"],
                                    "wall": wall / bare["total"]},
            "export_stage_over_bare_export": med["export"] / bare["export"],
            "all_passed": all(r["passed"] for r in runs),
        }
    return out


def run() -> dict[str, Any]:
    """Measure; the runner writes ``bench/results/pipeline.json``."""
    from . import machine
    from .export_common import ort_versions

    return {"machine": {**machine(), "export_stack": ort_versions()}, **measure()}


def render(results: dict[str, Any]) -> str:
    """The markdown section of item 3."""
    m = results["machine"]
    lines = [
        "## Pipeline cost: `export_subnet` stages vs a bare `torch.onnx.export` "
        f"({results['model']})",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores; {m['date']}; torch {m['versions']['torch']}, "
        f"onnx {m['export_stack']['onnx']}, onnxruntime {m['export_stack']['onnxruntime']}. "
        f"Median of {results['repeats']} runs per exporter, seconds; ratio = time / bare total "
        "(bare: `torch.onnx.export` of the same materialized model with torch's defaults, then "
        "one onnxruntime session and run). `python -m bench.bench_pipeline`.",
        "",
    ]
    stages = next(iter(results["exporters"].values()))["stages"]
    lines += ["| exporter | " + " | ".join(stages) + " | stages | wall | bare export | bare ORT | "
              "bare total |", "|---|" + "---:|" * (len(stages) + 5)]
    for exporter, e in results["exporters"].items():
        s, r, b = e["median_s"], e["ratio_to_bare_total"], e["bare_median_s"]
        cells = [f"{s[k]:.2f} (x{r[k]:.2f})" for k in (*e["stages"], "stages_total", "wall")]
        lines.append(f"| {exporter} | " + " | ".join(cells) +
                     f" | {b['export']:.2f} | {b['ort_session_and_run']:.2f} | {b['total']:.2f} |")
    lines.append("")
    for exporter, e in results["exporters"].items():
        s = e["median_s"]
        lines.append(
            f"- {exporter}: the export stage takes x{e['export_stage_over_bare_export']:.2f} the "
            f"bare export; validate is the largest overhead ({s['validate']:.2f} s: "
            "the supernet path in float32 and float64, plain torch and onnxruntime at batch 1 "
            f"and 8); {s['untimed_reference_samples']:.2f} s of the wall time is outside the "
            "stages. Parity passed: "
            f"{e['all_passed']}.")
    return "\n".join(lines) + "\n"


markdown = render  # the name ``python -m bench`` looks for


if __name__ == "__main__":  # same as `python -m bench NAME`
    from .__main__ import main

    raise SystemExit(main([NAME]))
