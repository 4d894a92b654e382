"""The CLI's shared options, and their text read into the library's objects.

Each function turns option text into what a library call takes, or raises the
:class:`~subnet_export.errors.InputError` that says what to write instead. torch-free, so the
commands that run without torch can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .errors import InputError
from .signature import InputSpec, as_specs, parse_input, parse_shape

__all__ = ["EXIT_HELP", "INPUT_HELP", "SEED", "SUPERNET_HELP", "debug_option", "default_specs",
           "input_specs", "output_names", "providers", "require_file",
           "samples_options", "strategy_option", "tolerance_options"]

SUPERNET_HELP = ("SUPERNET is path/to/file.py:factory or package.module:factory; the factory "
                 "returns a supernet or a search space. It runs that code.")
EXIT_HELP = ("Exit codes: 0 success; 1 parity failed, bundle tampered or budget broken; 2 usage "
             "error (the message says what to fix); 3 internal error (a bug: rerun with --debug "
             "and report it); 130 interrupted.")


def debug_option(f):
    """``--debug``: tracebacks of errors too (exit codes stay the same)."""
    return click.option("--debug", is_flag=True, help="Show tracebacks of errors.")(f)


def tolerance_options(f):
    """``--atol``, ``--rtol``, ``--noise-factor``: the rule outputs are judged by."""
    for option in reversed([
        click.option("--atol", type=click.FloatRange(min=0), default=None,
                     help="Judge elementwise: |output - reference| <= atol + rtol*|reference| "
                          "(replaces the noise rule unless --noise-factor is given too)."),
        click.option("--rtol", type=click.FloatRange(min=0), default=None,
                     help="Relative part of the elementwise rule (see --atol)."),
        click.option("--noise-factor", type=click.FloatRange(min=0), default=None,
                     help="Largest error against the float64 oracle, in units of the float32 "
                          "reference's own error (default 4 on CPU; docs/parity.md)."),
    ]):
        f = option(f)
    return f


def samples_options(f):
    """``--samples`` and ``--reference-outputs``: user inputs, and a framework's own outputs."""
    f = click.option(
        "--reference-outputs", type=click.Path(dir_okay=False), default=None,
        metavar="FILE.npz",
        help="Inputs and the outputs the original framework's supernet (OFA, NNI, ...) "
             "computed for this arch (keys input/input_K and output/output_K or "
             "output:NAME); judged as the backend 'external' (docs/parity.md).")(f)
    return click.option("--samples", type=click.Path(dir_okay=False),
                        help="User inputs (.npz) to check.")(f)


def strategy_option(f):
    """``--strategy``: how a returned search space becomes a supernet."""
    return click.option("--strategy", type=click.Choice(["sampling", "differentiable"]),
                        default=None,
                        help="Strategy when the factory returns a space (default sampling).")(f)


#: ``--seed``: what torch's and numpy's generators both take.
SEED = click.IntRange(0, 2**32 - 1)

INPUT_HELP = ("Model input NAME:SHAPE[:DTYPE][:LOW..HIGH], batch first, e.g. "
              "ids:1x128:int64:0..30522 or mask:1x128:bool; random values are drawn from "
              "[LOW, HIGH). Repeat per input, in forward's order.")


def input_specs(texts: Sequence[str], shapes: Sequence[str]) -> list[InputSpec]:
    """The inputs of ``--input`` (or of ``--input-shape``: float32); empty when neither.

    Raises:
        InputError: both options given, or a value that does not parse.
    """
    if texts and shapes:
        raise InputError("give the inputs either with --input or with --input-shape, not both")
    if texts:
        return [parse_input(t) for t in texts]
    return [InputSpec(parse_shape(s)) for s in shapes]


def output_names(text: str | None) -> list[str] | None:
    """``--output-names a,b`` as a list.

    Raises:
        InputError: an empty or repeated name.
    """
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise InputError(f"--output-names {text!r}: give distinct, non-empty names separated "
                         "by commas, one per model output")
    return names


def require_file(what: str, path: str | None) -> None:
    """Raise :class:`InputError` unless ``path`` is None or an existing file."""
    if path is not None and not Path(path).is_file():
        raise InputError(f"{what} file {path!r} does not exist")


def providers(text: str | None) -> list[str] | None:
    """``--providers CPU,CUDA`` as onnxruntime provider names; None when not given.

    Raises:
        InputError: a name onnxruntime does not know at all (one it knows but this build
            lacks is reported as a skipped backend, not refused).
    """
    if not text:
        return None
    names = [p.strip() for p in text.split(",") if p.strip()]
    full = [p if p.endswith("ExecutionProvider") else f"{p}ExecutionProvider" for p in names]
    try:
        import onnxruntime
    except ImportError:
        return full
    known = onnxruntime.get_all_providers()
    unknown = [n for n, f in zip(names, full) if f not in known]
    if unknown:
        short = ", ".join(k.removesuffix("ExecutionProvider") for k in known)
        raise InputError(f"--providers: {unknown[0]!r} is not an onnxruntime execution provider; "
                         f"known: {short}")
    return full


def default_specs(net: Any, spec: str) -> list[InputSpec]:
    """The inputs the factory's module declares.

    Its ``input_specs`` (specs or ``--input`` strings), else ``input_shapes``/``input_shape``.

    Raises:
        InputError: it declares none; the message says how to give them.
    """
    declared = getattr(net, "input_specs", None)
    if declared:
        return as_specs(declared)
    shapes = getattr(net, "input_shapes", None)
    if shapes is None and getattr(net, "input_shape", None) is not None:
        shapes = [net.input_shape]
    if not shapes:
        raise InputError(
            f"no input shape: pass --input-shape (e.g. 1x3x224x224) or --input, or give the "
            f"module returned by {spec!r} an `input_shape` or `input_specs` attribute")
    return as_specs(shapes)
