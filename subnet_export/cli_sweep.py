"""``subnet-export sweep``: many subnets of one supernet, one validated bundle each, indexed.

A thin click command over :func:`subnet_export.sweeps.runner.sweep`: it parses the options the
way ``onnx`` does, draws progress on stderr and prints one line per arch (or ``--json``) on
stdout. Its exit code is the largest of the archs' (docs/sweep.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

from . import options
from .cli_variants import variant_config, variant_options

__all__ = ["format_rows", "sweep_command"]


def format_rows(rows: Sequence[Mapping[str, Any]], out_dir: str) -> str:
    """The text ``sweep`` prints: one line per arch, the counts and where the index is."""
    from .console import format_bytes

    lines = [f"{'#':>3}  {'verdict':<7} {'status':<8} {'bundle':<23} {'params':>9} "
             f"{'model':>10} {'ms':>8}  reason"]
    for r in rows:
        size = "" if r.get("model_bytes") is None else format_bytes(r["model_bytes"])
        params = "" if r.get("parameters") is None else f"{r['parameters']:,}"
        ms = "" if r.get("latency_ms") is None else f"{r['latency_ms']:.3f}"
        reason = (r.get("reason") or "").splitlines()[0][:100] if r.get("reason") else ""
        lines.append(f"{r['position']:>3}  {r['verdict']:<7} {r['status']:<8} "
                     f"{r.get('bundle') or '-':<23} {params:>9} {size:>10} {ms:>8}  {reason}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines += ["", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no arch",
              f"index: {out_dir}/index.json"]
    return "\n".join(lines)


@click.command("sweep", epilog=f"{options.SUPERNET_HELP}\n\n{options.EXIT_HELP}")
@click.argument("supernet")
@click.option("--archs", "archs_path", type=click.Path(dir_okay=False), default=None,
              help="Archs to export: JSONL or a JSON list; each a bare arch or "
                   '{"arch": {...}, column: value} (docs/sweep.md).')
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also export this many distinct random archs.")
@click.option("--seed", type=options.SEED, default=0, show_default=True,
              help="Seed of the random archs of --sample.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Sweep folder: one bundle per arch, index.jsonl and index.json.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Checkpoint: safetensors, or torch (loaded with weights_only=True).")
@options.strategy_option
@click.option("--input", "input_texts", multiple=True, metavar="NAME:SHAPE[:DTYPE][:LOW..HIGH]",
              help=options.INPUT_HELP)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1x3x224x224",
              help="Float32 input shape, batch first; repeat for several inputs.")
@click.option("--output-names", default=None, metavar="logits,hidden",
              help="Graph output names, comma-separated, one per model output.")
@click.option("--dynamic-axes", "dynamic_axes", multiple=True, metavar="NAME:AXIS=DIM",
              help="More symbolic axes besides the batch, e.g. ids:1=seq.")
@click.option("--opset", type=int, default=None,
              help="ONNX opset (default: torch's); one the exporter cannot write is refused.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo",
              show_default=True)
@click.option("--providers", default=None, metavar="CPU,CUDA",
              help="onnxruntime providers to validate on (default: CPU, and CUDA when there).")
@options.tolerance_options
@click.option("--samples", type=click.Path(dir_okay=False),
              help="User inputs (.npz) to check every arch on.")
@click.option("--calib-data", type=click.Path(dir_okay=False), default=None,
              help="Inputs (.npz) to re-estimate each subnet's BatchNorm statistics on, each from "
                   "the checkpoint's.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=None,
              help="Calibration samples to use (seeded subsample; default all).")
@click.option("--calib-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the calibration passes.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="The larger batch size checked besides 1.")
@click.option("--input-seed", type=options.SEED, default=0, show_default=True,
              help="Seed of the random validation inputs.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes (or Ray actors) exporting at once, each building the supernet "
                   "once.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="local: this machine; ray: a Ray cluster (pip install 'subnet-export[ray]'; "
                   "--out on a filesystem every node shares).")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="The Ray cluster for --executor ray (default: auto).")
@click.option("--latency-runs", type=click.IntRange(min=0), default=10, show_default=True,
              help="Timed onnxruntime CPU runs at batch 1 per bundle (0: no latency).")
@click.option("--reuse", type=click.Choice(["template", "off"]), default="template",
              show_default=True,
              help="template: fit an earlier trace of the same topology to each arch (each is "
                   "still validated in full); off: trace every arch.")
@click.option("--report-axes", default="parameters,latency_ms", show_default=True,
              metavar="X,Y",
              help="Axes of report.html's chart: parameters, model_bytes, latency_ms or a column "
                   "of the arch file; prefix '-' to minimize, '+' to maximize.")
@variant_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON summary on stdout (the table goes to stderr).")
@options.debug_option
def sweep_command(supernet: str, archs_path: str | None, sample: int, seed: int, out_dir: str,
                  weights: str | None, strategy: str | None, input_texts: tuple[str, ...],
                  input_shapes: tuple[str, ...], output_names: str | None,
                  dynamic_axes: tuple[str, ...], opset: int | None, exporter: str,
                  providers: str | None, atol: float | None, rtol: float | None,
                  noise_factor: float | None, samples: str | None, calib_data: str | None,
                  calib_samples: int | None, calib_batch: int, batch: int | None,
                  input_seed: int, workers: int, executor: str, address: str | None,
                  latency_runs: int, reuse: str, report_axes: str, as_json: bool,
                  debug: bool, **variant_args: Any) -> int:
    """Export and validate many subnets of SUPERNET; rerun to resume (finished bundles stay)."""
    from .errors import InputError
    from .parity.rule import Tolerance
    from .signature import parse_dynamic_axes
    from .sweeps.progress import SweepProgress
    from .sweeps.runner import sweep

    if archs_path is None and not sample:
        raise InputError("nothing to sweep: give --archs FILE or --sample N (or both)")
    axes_xy = tuple(a.strip() for a in report_axes.split(","))
    if len(axes_xy) != 2 or not all(axes_xy):
        raise InputError(f"--report-axes takes two names, X,Y (e.g. parameters,latency_ms), "
                         f"not {report_axes!r}")
    specs = options.input_specs(input_texts, input_shapes)
    axes = parse_dynamic_axes(dynamic_axes)
    if opset is not None:
        from .export.diagnose import check_opset
        check_opset(exporter, opset)
    options.require_file("samples", samples)
    options.require_file("calibration data", calib_data)
    variants = variant_config(**variant_args, calib_batch=calib_batch)
    tolerance = (None if (atol, rtol, noise_factor) == (None, None, None)
                 else Tolerance(atol, rtol, noise_factor))
    with SweepProgress() as progress:
        result = sweep(supernet, out_dir, archs=archs_path, sample=sample, seed=seed,
                       weights=weights, strategy=strategy, inputs=specs or None,
                       output_names=options.output_names(output_names), dynamic_axes=axes,
                       exporter=exporter, opset=opset, providers=options.providers(providers),
                       tolerance=tolerance, samples=samples, batch=batch,
                       calib_data=calib_data, calib_samples=calib_samples,
                       calib_batch=calib_batch, variants=variants, input_seed=input_seed,
                       workers=workers,
                       latency_runs=latency_runs,
                       reuse=reuse, report_axes=axes_xy, executor=executor,
                       address=address, progress=progress)
    click.echo(format_rows(result.rows, str(result.out_dir)), err=as_json)
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2, default=str))
    return result.exit_code
