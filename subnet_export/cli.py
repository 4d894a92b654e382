"""``subnet-export``: thin click commands over the library.

Human text and progress go to stderr; ``--json`` output alone goes to stdout. Every error a user
can cause prints one message and exits 2 (1 for failed parity, a tampered bundle or a broken
budget); ``--debug`` shows the traceback instead. Heavy modules (torch) are imported inside the
commands that need them, so ``verify`` and ``gate`` run where torch is not installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from .errors import SubnetExportError
from .version import __version__

__all__ = ["cli", "main"]

SUPERNET_HELP = ("SUPERNET is path/to/file.py:factory or package.module:factory; the factory "
                 "returns a supernet or a search space. It runs that code.")


def _debug_option(f):
    return click.option("--debug", is_flag=True, help="Show tracebacks of errors.")(f)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _strategy_option(f):
    return click.option("--strategy", type=click.Choice(["sampling", "differentiable"]),
                        default=None,
                        help="Strategy when the factory returns a space (default sampling).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="subnet-export")
@_debug_option
def cli(debug: bool) -> None:
    """Turn a trained weight-sharing supernet into a plain, validated ONNX model."""


@cli.command("onnx", epilog=SUPERNET_HELP)
@click.argument("supernet")
@click.option("--arch", "arch_path", type=click.Path(dir_okay=False),
              help="Arch JSON {label: value}; default: the supernet's own export.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Checkpoint: safetensors, or torch (loaded with weights_only=True).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Bundle directory to write (atomically).")
@_strategy_option
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1x3x224x224",
              help="Input shape, batch first; repeat for several inputs.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: torch's).")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo",
              show_default=True)
@click.option("--providers", default=None, metavar="CPU,CUDA",
              help="onnxruntime providers to validate on (default: CPU, and CUDA when there).")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Judge elementwise: |output - reference| <= atol + rtol*|reference| "
                   "(replaces the noise rule unless --noise-factor is given too).")
@click.option("--rtol", type=click.FloatRange(min=0), default=None,
              help="Relative part of the elementwise rule (see --atol).")
@click.option("--noise-factor", type=click.FloatRange(min=0), default=None,
              help="Largest error against the float64 oracle, in units of the float32 "
                   "reference's own error (default 4 on CPU; docs/parity.md).")
@click.option("--samples", type=click.Path(dir_okay=False), help="User inputs (.npz) to check.")
@click.option("--calib-data", type=click.Path(dir_okay=False), default=None,
              help="Inputs (.npz) to re-estimate the subnet's BatchNorm statistics on.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=None,
              help="Calibration samples to use (seeded subsample; default all).")
@click.option("--calib-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the calibration passes.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="The larger batch size checked besides 1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random inputs.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout.")
@_debug_option
def onnx_command(supernet: str, arch_path: str | None, weights: str | None, out_dir: str,
                 strategy: str | None, input_shapes: Sequence[str], opset: int | None,
                 exporter: str, providers: str | None, atol: float | None, rtol: float | None,
                 noise_factor: float | None, samples: str | None, calib_data: str | None,
                 calib_samples: int | None, calib_batch: int, batch: int, seed: int,
                 force: bool, as_json: bool, debug: bool) -> int:
    """Freeze, materialize, export, validate and bundle one subnet of SUPERNET."""
    from .arch import load_arch
    from .errors import InputError
    from .loading import build_supernet, load_weights, parse_shape
    from .parity.rule import Tolerance
    from .pipeline import STAGES, export_subnet

    shapes = [parse_shape(s) for s in input_shapes]
    arch = _read_arch(load_arch, arch_path) if arch_path else None
    for what, path in (("samples", samples), ("calibration data", calib_data)):
        if path is not None and not _is_file(path):
            raise InputError(f"{what} file {path!r} does not exist")
    net = build_supernet(supernet, strategy)
    sha = load_weights(net, weights) if weights else None
    if not shapes:
        shapes = _default_shapes(net, supernet)
    tolerance = None
    if (atol, rtol, noise_factor) != (None, None, None):
        tolerance = Tolerance(atol, rtol, noise_factor)

    stages = [s for s in STAGES if s != "recalibrate" or calib_data]

    def progress(stage: str, state: str) -> None:
        if state == "start":
            click.echo(f"[{stages.index(stage) + 1}/{len(stages)}] {stage} ...", err=True)

    result = export_subnet(
        net, out_dir, input_shapes=shapes, arch=arch, exporter=exporter, opset=opset,
        providers=_providers(providers), tolerance=tolerance, samples=samples, batch=batch,
        seed=seed, force=force, checkpoint_sha256=sha, calib_data=calib_data,
        calib_samples=calib_samples, calib_batch=calib_batch, progress=progress,
        warn=lambda message: click.echo(f"warning: {message}", err=True))
    click.echo(result.report.format_table(), err=True)
    marked = "" if result.report.passed else " (marked failed)"
    click.echo(f"bundle: {result.out_dir}{marked}", err=True)
    if as_json:
        _emit_json(result.summary())
    return result.exit_code


def _is_file(path: str) -> bool:
    from pathlib import Path
    return Path(path).is_file()


def _read_arch(load_arch, path: str) -> dict:
    from .errors import InputError
    try:
        return load_arch(path)
    except FileNotFoundError as err:
        raise InputError(f"arch file {path!r} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read arch file {path!r}: {err}") from err


def _providers(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    return [p if p.endswith("ExecutionProvider") else f"{p}ExecutionProvider" for p in names]


def _default_shapes(net: Any, spec: str) -> list[tuple[int, ...]]:
    from .errors import InputError
    shapes = getattr(net, "input_shapes", None)
    if shapes is None and getattr(net, "input_shape", None) is not None:
        shapes = [net.input_shape]
    if not shapes:
        raise InputError(
            f"no input shape: pass --input-shape (e.g. 1x3x224x224), or give the module "
            f"returned by {spec!r} an `input_shape` attribute")
    return [tuple(int(d) for d in s) for s in shapes]


@cli.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--providers", default=None, metavar="CPU,CUDA", help="onnxruntime providers.")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Judge the samples elementwise with this atol (replaces the manifest's rule).")
@click.option("--rtol", type=click.FloatRange(min=0), default=None,
              help="Relative part of the elementwise rule (replaces the manifest's rule).")
@click.option("--noise-factor", type=click.FloatRange(min=0), default=None,
              help="Noise-rule factor (replaces the manifest's rule; docs/parity.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_debug_option
def verify_command(bundle: str, providers: str | None, atol: float | None, rtol: float | None,
                   noise_factor: float | None, as_json: bool, debug: bool) -> int:
    """Check a bundle's hashes and rerun its samples (onnxruntime only; no torch)."""
    from .bundle.verify import verify_bundle

    report = verify_bundle(bundle, providers=_providers(providers), atol=atol, rtol=rtol,
                           noise_factor=noise_factor)
    click.echo(report.format_table(), err=True)
    if as_json:
        _emit_json(report.to_json())
    return report.exit_code


@cli.command("space", epilog=SUPERNET_HELP)
@click.argument("supernet")
@_strategy_option
@click.option("--json", "as_json", is_flag=True, help="Print the space as JSON on stdout.")
@_debug_option
def space_command(supernet: str, strategy: str | None, as_json: bool, debug: bool) -> int:
    """Print the search space of SUPERNET: labels, candidates, size."""
    from .arch import search_space
    from .loading import build_supernet

    specs = search_space(build_supernet(supernet, strategy))
    size = 1
    for spec in specs.values():
        size *= spec.size
    if as_json:
        _emit_json({"labels": {k: s.to_json() for k, s in specs.items()}, "size": size})
        return 0
    width = max((len(k) for k in specs), default=5)
    for label, spec in specs.items():
        click.echo(f"{label:<{width}}  {spec.kind:<6} {spec.describe()}")
    click.echo(f"{len(specs)} labels, {size} architectures")
    return 0


@cli.command("sample", epilog=SUPERNET_HELP)
@click.argument("supernet")
@_strategy_option
@click.option("--seed", type=int, default=0, show_default=True)
@_debug_option
def sample_command(supernet: str, strategy: str | None, seed: int, debug: bool) -> int:
    """Print a random valid arch of SUPERNET as JSON."""
    from .arch import sample_arch
    from .loading import build_supernet

    _emit_json(sample_arch(build_supernet(supernet, strategy), seed))
    return 0


@cli.command("gate")
@click.argument("bundle", type=click.Path())
@click.option("--budget", required=True, type=click.Path(dir_okay=False),
              help="Budget TOML (see docs/gates.md).")
@click.option("--baseline", type=click.Path(), default=None,
              help="Baseline bundle for the latency ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_debug_option
def gate_command(bundle: str, budget: str, baseline: str | None, as_json: bool,
                 debug: bool) -> int:
    """Fail (exit 1) when BUNDLE breaks its budget; print every violation."""
    from .bundle.budget import Budget
    from .bundle.gate import gate

    report = gate(bundle, Budget.from_toml(budget), baseline)
    click.echo(report.format_table(), err=True)
    if as_json:
        _emit_json(report.to_json())
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the command's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="subnet-export", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = 130
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except SubnetExportError as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        code = err.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except Exception as err:  # a bug, not a user error: still one line unless --debug
        if debug:
            raise
        click.echo(f"internal error: {type(err).__name__}: {err} (rerun with --debug and "
                   "report it)", err=True)
        code = 3
    code = 0 if code is None else int(code)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
