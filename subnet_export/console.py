"""What the CLI shows a person: live stage progress on stderr, and results as readable text.

Progress is drawn with rich on a terminal (a spinner and the elapsed time of the running
stage) and is one plain line per stage otherwise, so logs of CI jobs stay readable. The result
texts are plain strings; the CLI decides where they go (stdout).
"""

from __future__ import annotations

import json
import sys
import textwrap
import traceback
from collections.abc import Mapping, Sequence
from typing import IO, Any

__all__ = ["StageProgress", "format_bytes", "format_run", "format_space", "report_error"]


def format_bytes(n: int) -> str:
    """``n`` bytes as ``812 B``, ``48.2 KiB``, ``3.1 MiB`` or ``1.2 GiB``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class StageProgress:
    """A ``progress(stage, state)`` callback for :func:`~subnet_export.pipeline.export_subnet`.

    Args:
        stages: the stages this run will go through, in order.
        stream: where progress goes (stderr).
        live: draw with rich (default: when ``stream`` is a terminal).
    """

    def __init__(self, stages: Sequence[str], stream: IO[str] | None = None,
                 live: bool | None = None) -> None:
        self.stages = list(stages)
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, stage: str, state: str) -> None:
        step = f"[{self.stages.index(stage) + 1}/{len(self.stages)}] {stage}"
        if not self.live:
            if state == "start":
                print(f"{step} ...", file=self.stream, flush=True)
            return
        if self._progress is None:
            self._start()
        if state == "start":
            self._task = self._progress.add_task(step, total=None)
        elif self._task is not None:
            self._progress.update(self._task, total=1, completed=1)

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(finished_text="[green]done"),
                                  TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=Console(file=self.stream))
        self._progress.start()

    def close(self) -> None:
        """Stop drawing (idempotent); call it before printing anything else."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _arch_text(arch: Mapping[str, Any], width: int = 100, indent: int = 12) -> str:
    # one label=value per word, wrapped under the row's value column
    words = [f"{k}={json.dumps(v)}" for k, v in arch.items()]
    if not words:
        return "(no labels)"
    return textwrap.fill(" ".join(words), width=width, initial_indent=" " * indent,
                         subsequent_indent=" " * indent, break_long_words=False,
                         break_on_hyphens=False)[indent:]


def _io_text(io: Sequence[Mapping[str, Any]]) -> str:
    def dims(shape: Any) -> str:
        return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d)
                                                        for d in shape) + "]"

    return "; ".join(f"{v['name']} {v['dtype']} {dims(v['shape'])}" for v in io)


def format_run(result: Any) -> str:
    """The text ``subnet-export onnx`` prints for a :class:`~subnet_export.pipeline.RunResult`.

    Arch, parameters, model size, the time per stage, the verdict table with its legend, the
    bundle path and the commands to run next.
    """
    manifest = result.manifest
    exporter = manifest.extra.get("exporter", "?")
    unused = (f" (+ {result.unused_parameter_count:,} in tensors the graph never reads)"
              if result.unused_parameter_count else "")
    total = sum(result.timings.values())
    times = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
    rows = [
        ("arch", _arch_text(result.arch)),
        ("parameters", f"{result.parameter_count:,}{unused}"),
        ("model", f"{manifest.model_file} {format_bytes(result.model_bytes)}, opset "
                  f"{manifest.opset}, {exporter} exporter"),
        ("inputs", _io_text(manifest.inputs)),
        ("outputs", _io_text(manifest.outputs)),
        ("time", f"{total:.1f} s ({times})"),
    ]
    lines = [f"{k:<11} {v}" for k, v in rows]
    lines += ["", result.report.format_table(), ""]
    lines += _variant_lines(result)
    marked = "" if result.report.passed else " (marked failed)"
    out = str(result.out_dir)
    lines.append(f"bundle: {out}{marked}")
    lines.append(f"next:   subnet-export verify {out}    # hashes, and the samples on "
                 "onnxruntime alone")
    lines.append(f"        subnet-export gate {out} --budget budget.toml    # CI budgets "
                 "(docs/gates.md)")
    lines.append(f"        subnet-export inspect {out}    # what the bundle holds")
    return "\n".join(lines)


def _variant_lines(result: Any) -> list[str]:
    """The edge variants' statistics table, sizes and verdict (nothing without variants)."""
    variants = getattr(result, "variants", [])
    if not variants:
        return []
    from .variants.stats import format_stats

    lines = [format_stats([])[0]]
    for v in variants:
        lines += v.format_lines()
    size = max(result.model_bytes, 1)
    lines.append("sizes: " + ", ".join(
        f"{v.file} {format_bytes(result.manifest.files.get(v.file, {}).get('size', 0))}"
        f" ({result.manifest.files.get(v.file, {}).get('size', 0) / size:.2f}x)"
        for v in variants))
    failed = [v.kind for v in variants if not v.passed]
    lines.append(f"variants: {'FAILED ' + ', '.join(failed) if failed else 'PASSED'} "
                 "(* the judged set; docs/edge.md)")
    return lines + [""]


def format_space(specs: Mapping[str, Any], modules: Mapping[str, Sequence[str]]) -> str:
    """The text ``subnet-export space`` prints: each label, its candidates, what it shapes."""
    size = 1
    for spec in specs.values():
        size *= spec.size
    width = max((len(k) for k in specs), default=5)
    lines = []
    for label, spec in specs.items():
        lines.append(f"{label:<{width}}  {spec.kind:<6} {spec.describe()}")
        shaped = list(modules.get(label, ()))
        if shaped:
            more = f" (+{len(shaped) - 4} more)" if len(shaped) > 4 else ""
            lines.append(f"{'':<{width}}  shapes {', '.join(shaped[:4])}{more}")
    lines.append(f"{len(specs)} labels, {size} architectures")
    return "\n".join(lines)


def report_error(err: Exception, debug: bool) -> None:
    """One ``error:`` line on stderr; ``--debug`` adds the traceback and the exporter's output.

    The exit code stays the caller's: debugging changes what is shown, not the outcome.
    """
    if debug:
        traceback.print_exc()
        details = getattr(err, "details", None)
        if details:
            print(details.rstrip(), file=sys.stderr)
    print(f"error: {err}", file=sys.stderr)
