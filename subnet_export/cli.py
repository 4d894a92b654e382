"""``subnet-export``: thin click commands over the library.

The result (tables, verdicts, the bundle path; or the ``--json`` document alone) goes to stdout;
progress, warnings and errors go to stderr. Exit codes: 0 success, 1 failed parity, a tampered
bundle or a broken budget, 2 a usage error (what to fix is said), 3 an internal error, 130
interrupted; ``--debug`` adds the traceback and changes nothing else. Heavy modules (torch) are
imported inside the commands that need them, so ``verify``, ``gate`` and ``inspect`` run where
torch is not installed.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from . import options
from .cli_sweep import sweep_command
from .cli_variants import variant_config, variant_options
from .console import report_error
from .errors import SubnetExportError
from .version import __version__

__all__ = ["cli", "main"]


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=options.EXIT_HELP)
@click.version_option(__version__, prog_name="subnet-export")
@options.debug_option
def cli(debug: bool) -> None:
    """Turn a trained weight-sharing supernet into a plain, validated ONNX model."""


@cli.command("onnx", epilog=f"{options.SUPERNET_HELP}\n\n{options.EXIT_HELP}")
@click.argument("supernet")
@click.option("--arch", "arch_path", type=click.Path(dir_okay=False),
              help="Arch JSON {label: value}; default: the supernet's own export.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Checkpoint: safetensors or torch (weights_only=True); NNI's one-shot too.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Bundle directory to write (atomically).")
@options.strategy_option
@click.option("--input", "input_texts", multiple=True, metavar="NAME:SHAPE[:DTYPE][:LOW..HIGH]",
              help=options.INPUT_HELP)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1x3x224x224",
              help="Float32 input shape, batch first; repeat for several inputs.")
@click.option("--output-names", default=None, metavar="logits,hidden",
              help="Graph output names, comma-separated, one per model output.")
@click.option("--dynamic-axes", "dynamic_axes", multiple=True, metavar="NAME:AXIS=DIM",
              help="More symbolic axes besides the batch, e.g. ids:1=seq; validated at a "
                   "second size too. Repeatable or comma-separated.")
@click.option("--opset", type=int, default=None,
              help="ONNX opset (default: torch's); one the exporter cannot write is refused.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo",
              show_default=True)
@click.option("--providers", default=None, metavar="CPU,CUDA",
              help="onnxruntime providers to validate on (default: CPU, and CUDA when there).")
@options.tolerance_options
@options.samples_options
@click.option("--calib-data", type=click.Path(dir_okay=False), default=None,
              help="Inputs (.npz) to re-estimate the subnet's BatchNorm statistics on.")
@click.option("--calib-samples", type=click.IntRange(min=1), default=None,
              help="Calibration samples to use (seeded subsample; default all).")
@click.option("--calib-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the calibration passes.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="The larger batch size checked besides 1 (default: the inputs' batch when "
                   "it is not 1, else 8).")
@click.option("--seed", type=options.SEED, default=0, show_default=True,
              help="Seed of random inputs.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out.")
@variant_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON summary on stdout (the human result goes to stderr).")
@options.debug_option
def onnx_command(supernet: str, arch_path: str | None, weights: str | None, out_dir: str,
                 strategy: str | None, input_texts: Sequence[str], input_shapes: Sequence[str],
                 output_names: str | None, dynamic_axes: Sequence[str], opset: int | None,
                 exporter: str, providers: str | None, atol: float | None, rtol: float | None,
                 noise_factor: float | None, samples: str | None,
                 reference_outputs: str | None, calib_data: str | None,
                 calib_samples: int | None, calib_batch: int, batch: int | None, seed: int,
                 force: bool, as_json: bool, debug: bool, **variant_args: Any) -> int:
    """Freeze, materialize, export, validate and bundle one subnet of SUPERNET."""
    from .bundle.atomic import check_writable
    from .bundle.layout import MANIFEST_NAME
    from .console import StageProgress, format_run
    from .loading import build_and_load
    from .parity.rule import Tolerance
    from .pipeline import STAGES, export_subnet
    from .signature import parse_dynamic_axes

    specs = options.input_specs(input_texts, input_shapes)
    axes = parse_dynamic_axes(dynamic_axes)
    names = options.output_names(output_names)
    if opset is not None:
        from .export.diagnose import check_opset
        check_opset(exporter, opset)
    check_writable(out_dir, force=force, marker=MANIFEST_NAME)
    variants = variant_config(**variant_args, calib_batch=calib_batch)
    arch = _read_arch(arch_path) if arch_path else None
    for what, path in (("samples", samples), ("reference outputs", reference_outputs),
                       ("calibration data", calib_data)):
        options.require_file(what, path)
    net, loaded = build_and_load(supernet, strategy, weights)
    if loaded.note:
        click.echo(f"weights: {loaded.note}", err=True)
    specs = specs or options.default_specs(net, supernet)
    tolerance = (None if (atol, rtol, noise_factor) == (None, None, None)
                 else Tolerance(atol, rtol, noise_factor))
    stages = [s for s in STAGES if (s != "recalibrate" or calib_data)
              and (s != "variants" or variants)]
    with StageProgress(stages) as progress:
        result = export_subnet(
            net, out_dir, inputs=specs, output_names=names, dynamic_axes=axes, arch=arch,
            exporter=exporter, opset=opset, providers=options.providers(providers),
            tolerance=tolerance, samples=samples, reference_outputs=reference_outputs,
            batch=batch, seed=seed, force=force, checkpoint_sha256=loaded.sha256,
            weights_layout=loaded.note, calib_data=calib_data, calib_samples=calib_samples,
            calib_batch=calib_batch, progress=progress, warn=lambda m: _warn(progress, m),
            variants=variants)
    click.echo(format_run(result), err=as_json)
    if as_json:
        _emit_json(result.summary())
    return result.exit_code


def _read_arch(path: str) -> dict:
    """The arch JSON at ``path``.

    Raises:
        InputError: missing or unreadable file (``ArchError`` for bad content).
    """
    from .arch import load_arch
    from .errors import InputError

    try:
        return load_arch(path)
    except FileNotFoundError as err:
        raise InputError(f"arch file {path!r} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read arch file {path!r}: {err}") from err


def _warn(progress: Any, message: str) -> None:
    progress.close()
    click.echo(f"warning: {message}", err=True)


@cli.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--providers", default=None, metavar="CPU,CUDA", help="onnxruntime providers.")
@options.tolerance_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@options.debug_option
def verify_command(bundle: str, providers: str | None, atol: float | None, rtol: float | None,
                   noise_factor: float | None, as_json: bool, debug: bool) -> int:
    """Check a bundle's hashes and rerun its samples (onnxruntime only; no torch)."""
    from .bundle.verify import verify_bundle

    report = verify_bundle(bundle, providers=options.providers(providers), atol=atol, rtol=rtol,
                           noise_factor=noise_factor)
    click.echo(report.format_table(), err=as_json)
    if as_json:
        _emit_json(report.to_json())
    return report.exit_code


@cli.command("space", epilog=options.SUPERNET_HELP)
@click.argument("supernet")
@options.strategy_option
@click.option("--json", "as_json", is_flag=True, help="Print the space as JSON on stdout.")
@options.debug_option
def space_command(supernet: str, strategy: str | None, as_json: bool, debug: bool) -> int:
    """Print the search space of SUPERNET: labels, candidates, the modules each shapes."""
    from .arch import search_space
    from .console import format_space
    from .loading import build_supernet
    from .supernet.walk import label_modules

    net = build_supernet(supernet, strategy)
    specs = search_space(net)
    modules = label_modules(net)
    if as_json:
        size = 1
        for spec in specs.values():
            size *= spec.size
        _emit_json({"labels": {k: {**s.to_json(), "modules": modules.get(k, [])}
                               for k, s in specs.items()}, "size": size})
        return 0
    click.echo(format_space(specs, modules))
    return 0


@cli.command("sample", epilog=options.SUPERNET_HELP)
@click.argument("supernet")
@options.strategy_option
@click.option("--seed", type=options.SEED, default=0, show_default=True)
@options.debug_option
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
@options.debug_option
def gate_command(bundle: str, budget: str, baseline: str | None, as_json: bool,
                 debug: bool) -> int:
    """Fail (exit 1) when BUNDLE breaks its budget; print every violation."""
    from .bundle.budget import Budget
    from .bundle.gate import gate

    report = gate(bundle, Budget.from_toml(budget), baseline)
    click.echo(report.format_table(), err=as_json)
    if as_json:
        _emit_json(report.to_json())
    return report.exit_code


@cli.command("inspect")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON on stdout.")
@options.debug_option
def inspect_command(bundle: str, as_json: bool, debug: bool) -> int:
    """Show what BUNDLE holds: arch, parameters, IO, operators, verdicts (no torch)."""
    from .bundle.inspect import inspect_bundle

    found = inspect_bundle(bundle)
    if as_json:
        _emit_json(found.to_json())
    else:
        click.echo(found.format_text())
    return 0


cli.add_command(sweep_command)


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so every ``finally`` removes its work files."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns (and exits with) the command's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = cli.main(args=args, prog_name="subnet-export", standalone_mode=False)
    except _Terminated:
        click.echo("terminated", err=True)
        code = 128 + signal.SIGTERM
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        code = 130
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except SubnetExportError as err:
        report_error(err, debug)
        code = err.exit_code
    except Exception as err:  # a bug, not a user error: still one line unless --debug
        if debug:
            traceback.print_exc()
        click.echo(f"internal error: {type(err).__name__}: {err} (rerun with --debug and "
                   "report it)", err=True)
        code = 3
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = 0 if code is None else int(code)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
