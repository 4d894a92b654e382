"""``sweep``: export and validate many archs of one supernet, resumably, into one indexed folder.

One process builds the supernet and loads (and hashes) the checkpoint once; each arch then runs
the whole ``export_subnet`` pipeline, every check included. Bundles are named by a content hash
(``naming.py``), so a rerun keeps the ones that verify and redoes the rest.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InputError, SubnetExportError
from .archs import SweepEntry
from .emit import Emitter, Plan, Progress
from .index import IndexWriter, previous_rows
from .job import REUSE, export_one
from .naming import bundle_key, bundle_name
from .report import resolve_axis, write_report
from .resume import reusable
from .setup import (
    file_sha,
    load_supernet,
    shared_templates,
    sweep_entries,
    sweep_options,
    with_calibration,
)

__all__ = ["EXECUTORS", "ROW_DEFAULTS", "SweepResult", "sweep"]

#: where a sweep's exports run: this machine (``--workers`` processes) or a Ray cluster
EXECUTORS = ("local", "ray")

#: every index row has these keys (``docs/sweep.md`` says what each holds)
ROW_DEFAULTS: dict[str, Any] = {
    "position": None, "origin": "", "bundle": None, "arch": None, "verdict": None,
    "status": None, "reason": None, "exit_code": None, "parameters": None, "model_bytes": None,
    "latency_ms": None, "export_route": None, "variants": None, "template_notes": [],
    "timings_s": {}, "warnings": [], "columns": {}}


@dataclass
class SweepResult:
    """What a sweep did: one row per arch (arch-file order) and where the index is.

    ``exit_code`` is the largest of the rows' (0 all passed; 1 a parity failure; 2 an invalid
    arch or a failed export; 3 an internal error), 0 for an empty sweep.
    """

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True

    @property
    def exit_code(self) -> int:
        """The largest exit code of any row."""
        return max((int(r.get("exit_code", 0)) for r in self.rows), default=0)

    def counts(self) -> dict[str, int]:
        """Rows by verdict (``passed``, ``failed``, ``error``) and by status."""
        out: dict[str, int] = {}
        for row in self.rows:
            for key in (row["verdict"], row["status"]):
                out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary ``sweep --json`` prints."""
        return {"out": str(self.out_dir), "exit_code": self.exit_code,
                "complete": self.complete, "counts": self.counts(), "rows": self.rows}


def sweep(supernet: Any, out_dir: str | Path, *, archs: str | Path | Sequence[Any] | None = None,
          sample: int = 0, seed: int = 0, weights: str | Path | None = None,
          strategy: str | None = None, inputs: Sequence[Any] | None = None,
          output_names: Sequence[str] | None = None,
          dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
          exporter: str = "dynamo", opset: int | None = None,
          providers: Sequence[str] | None = None, tolerance: Any = None,
          samples: str | Path | None = None, batch: int | None = None, input_seed: int = 0,
          calib_data: str | Path | None = None, calib_samples: int | None = None,
          calib_batch: int = 32, variants: Any = None, workers: int = 1,
          latency_runs: int = 10, reuse: str = "template",
          report_axes: tuple[str, str] = ("parameters", "latency_ms"),
          executor: str = "local", address: str | None = None,
          progress: Progress | None = None) -> SweepResult:
    """Export and validate every arch into ``out_dir``, one bundle each, with an index.

    Args:
        supernet: a factory spec (``path/file.py:factory``, as the CLI takes), or a built
            supernet (then ``workers`` must be 1).
        out_dir: the sweep folder: bundles ``subnet-<hash>/``, ``index.jsonl``, ``index.json``.
        archs: an arch file (JSONL or a JSON list) or a list of entries: bare archs, or
            ``{"arch": {...}, column: value, ...}`` with user columns (``archs.py``).
        sample: also sweep this many distinct random archs, drawn with ``seed``.
        seed: seed of the random archs.
        weights: the checkpoint, hashed once; without one the supernet's tensors are hashed.
        strategy: how a factory's search space becomes a supernet.
        inputs: one ``InputSpec`` (or ``--input`` string, or shape) per model input; None:
            what the supernet declares (``input_specs`` / ``input_shape``).
        output_names: graph output names.
        dynamic_axes: ``{input name: {axis: dim name}}`` besides the batch.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset (None: torch's default).
        providers: onnxruntime providers to validate on (None: CPU, and CUDA when there).
        tolerance: one ``Tolerance`` for every backend (None: the noise rule).
        samples: an ``.npz`` of user inputs, validated for every arch.
        batch: the larger batch validated besides 1.
        input_seed: seed of the random validation inputs (``export_subnet``'s ``seed``).
        calib_data: an ``.npz`` of inputs each arch's BatchNorm statistics are re-estimated on
            before export (``export_subnet``'s ``calib_data``), every arch from the
            checkpoint's statistics; its sha256 is part of each bundle's name.
        calib_samples: use this many calibration samples (seeded subsample); None: all.
        calib_batch: batch size of the calibration passes.
        variants: a ``VariantOptions``: FP16/INT8 variants (and ORT files) in every bundle,
            judged as ``onnx --variants`` judges them; a failed variant fails its arch.
        workers: with the local executor, 1 runs here and N > 1 uses N spawned processes
            (``pool.py``); with Ray, the number of actors (``ray_pool.py``).
        latency_runs: timed onnxruntime CPU runs at batch 1 per bundle; 0 skips latency.
        reuse: ``"template"`` fits an earlier trace of the same topology to each arch
            (``export/template.py``; every arch is still validated in full), ``"off"`` traces
            every arch. Bundle names and verdicts do not depend on it.
        report_axes: the x and y of ``report.html``'s chart: ``parameters``, ``model_bytes``,
            ``latency_ms`` or a column of the arch file, ``-``/``+`` to minimize/maximize
            (``report.resolve_axis``); checked before any export.
        executor: ``"local"`` (this machine) or ``"ray"`` (a Ray cluster; the sweep folder
            must be at the same path on every node).
        address: the Ray cluster (``auto``, ``HOST:PORT``, ``ray://...``); None: ``auto``.
        progress: called as ``progress(row, done, total)`` after each row.

    Returns:
        A :class:`SweepResult`; a failed arch is a row with its reason, never an exception.

    Raises:
        InputError: no archs, an unreadable arch file, ``out_dir`` not writable, bad options.
        CheckpointError: the checkpoint does not load.
        KeyboardInterrupt: interrupted; finished bundles stay, ``index.json`` says so.
    """
    if reuse not in REUSE:
        raise InputError(f"reuse must be one of {', '.join(REUSE)}, not {reuse!r}")
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    pooled = workers > 1 or executor == "ray"
    if workers < 1 or (pooled and not isinstance(supernet, str)):
        raise InputError("workers must be >= 1, and a built supernet runs with workers=1 on "
                         "this machine only (give the factory spec to use a pool or Ray)")
    if executor == "ray":
        from .ray_pool import preflight

        preflight(address)  # refused before the supernet is built or the folder made
    net, sha, note = load_supernet(supernet, strategy, weights)
    entries = sweep_entries(net, archs, sample, seed)
    for axis in report_axes:  # an axis the report cannot draw: refused before any export
        resolve_axis([{"columns": e.columns} for e in entries], axis)
    opts = sweep_options(net, supernet, inputs, output_names, dynamic_axes, exporter, opset,
                    providers, tolerance, samples, batch, input_seed, latency_runs, reuse)
    opts = replace(with_calibration(opts, calib_data, calib_samples, calib_batch),
                   variants=variants)
    key_fields = {**opts.key_fields(file_sha(samples), file_sha(calib_data, "calibration")),
                  "strategy": strategy}
    out = _sweep_dir(out_dir)
    header = {"supernet": supernet if isinstance(supernet, str) else type(supernet).__name__,
              "weights": None if weights is None else str(weights), "checkpoint_sha256": sha,
              "options": key_fields, "workers": workers, "reuse": reuse,
              "executor": executor}
    plan = _plan(net, entries, out, sha, key_fields)
    opts, order = shared_templates(opts, out, net, [a for a, _ in plan.jobs], pooled)
    writer = IndexWriter(out, header, len(entries))
    emit = Emitter(writer, plan, len(entries), progress)
    try:
        emit.rows(plan.rows)
        def on_done(k: int, row: dict[str, Any]) -> None:
            emit.job_done(order[k], row)

        jobs = [plan.jobs[i] for i in order]
        where = {"spec": supernet, "strategy": strategy, "options": opts, "workers": workers,
                 "weights": None if weights is None else str(weights),
                 "checkpoint_sha256": sha, "on_done": on_done}
        if executor == "ray":
            from .ray_pool import run_ray

            run_ray(jobs, address=address, **where)
        elif workers > 1:
            from .pool import run_pool

            run_pool(jobs, **where)
        else:
            for i, (arch, path) in enumerate(jobs):
                on_done(i, export_one(net, arch, path, opts, checkpoint_sha256=sha,
                                      weights_layout=note))
    finally:
        try:
            # an interruption between a bundle's install and its row: the bundle is whole
            # (it verifies), so it gets its row, as a rerun would give it
            emit.recover_unlogged()
        finally:
            rows = writer.close()
            if opts.template_dir:
                shutil.rmtree(opts.template_dir, ignore_errors=True)
    # after the finally: a report that cannot be drawn never hides the sweep's own exception
    write_report(out, {**header, "complete": len(rows) == len(entries), "rows": rows},
                 x=report_axes[0], y=report_axes[1])
    return SweepResult(out, rows, len(rows) == len(entries))


def _sweep_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir).absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot make the sweep folder {out}: {err.strerror or err}; choose "
                         "an --out in a writable folder") from err
    return out












def _plan(net: Any, entries: Sequence[SweepEntry], out: Path, sha: str,
          key_fields: Mapping[str, Any]) -> Plan:
    from ..arch import freeze
    from ..bundle.atomic import clean_stale

    plan, jobs_by_name = Plan(), {}
    reused: dict[str, tuple[dict[str, Any], int]] = {}
    before = previous_rows(out)
    for entry in entries:
        row = {**ROW_DEFAULTS, "position": entry.position, "origin": entry.origin,
               "columns": dict(entry.columns)}
        try:
            frozen = freeze(net, entry.arch)
        except SubnetExportError as err:
            plan.rows.append({**row, "arch": entry.arch, "verdict": "error", "status": "error",
                              "reason": str(err), "error_type": type(err).__name__,
                              "exit_code": err.exit_code})
            continue
        name = bundle_name(bundle_key(sha, frozen, key_fields))
        row.update(bundle=name, arch=dict(frozen))
        if name in reused:
            plan.rows.append({**row, **reused[name][0], "duplicate_of": reused[name][1]})
            continue
        if name in jobs_by_name:
            plan.waiting[jobs_by_name[name]].append(row)
            continue
        facts = reusable(out / name, frozen)
        if facts is not None:
            old = before.get(name, {})
            facts = {**facts, "status": "reused", "latency_ms": old.get("latency_ms"),
                     "timings_s": old.get("timings_s", {}), "warnings": old.get("warnings", []),
                     "template_notes": old.get("template_notes", [])}
            plan.rows.append({**row, **facts})
            reused[name] = (facts, entry.position)
            continue
        clean_stale(out / name)
        jobs_by_name[name] = len(plan.jobs)
        plan.jobs.append((entry.arch, out / name))
        plan.waiting[len(plan.jobs) - 1] = [row]
    return plan
