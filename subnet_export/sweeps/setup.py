"""What a sweep settles before its first export: the supernet, the archs and the options.

Each is refused here, once, when it is wrong (an unreadable arch or calibration file, no arch),
so no arch of the sweep fails for a reason they all share.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from .archs import SweepEntry, entries_from, read_archs, sample_entries
from .job import SweepOptions
from .naming import state_digest

#: where the workers of a pooled or Ray sweep share their traces, inside the sweep folder; it is
#: removed when the sweep ends
TEMPLATES_DIR = ".templates"
#: subnets with more tensor bytes than this are not materialized to order a sweep's jobs
ORDER_MAX_BYTES = 256 * 2**20

__all__ = ["TEMPLATES_DIR", "file_sha", "load_supernet", "shared_templates", "sweep_entries",
           "sweep_options", "topology_order", "with_calibration"]


def load_supernet(supernet: Any, strategy: str | None, weights: str | Path | None
          ) -> tuple[Any, str, str | None]:
    """Build (or take) the supernet, load ``weights``: ``(net, sha256, layout note)``."""
    from ..loading import build_and_load, load_checkpoint

    if isinstance(supernet, str):
        net, loaded = build_and_load(supernet, strategy, weights)
    else:
        net = supernet
        loaded = load_checkpoint(net, weights) if weights is not None else None
    sha = loaded.sha256 if loaded is not None and loaded.sha256 else state_digest(net)
    return net, sha, loaded.note if loaded is not None else None


def sweep_entries(net: Any, archs: Any, sample: int, seed: int) -> list[SweepEntry]:
    """The arch file's or list's entries, then ``sample`` random ones; none is an error."""
    entries: list[SweepEntry] = []
    if isinstance(archs, (str, Path)):
        entries = read_archs(archs)
    elif archs is not None:
        entries = entries_from(list(archs))
    if sample:
        entries += sample_entries(net, sample, seed, start=len(entries))
    if not entries:
        raise InputError("no arch to sweep: give an arch file (--archs) or --sample N")
    return entries


def sweep_options(net: Any, supernet: Any, inputs: Any, output_names: Any, dynamic_axes: Any,
             exporter: str, opset: int | None, providers: Any, tolerance: Any, samples: Any,
             batch: int | None, input_seed: int, latency_runs: int,
             reuse: str) -> SweepOptions:
    """The :class:`SweepOptions` every arch shares; inputs default to what the net declares."""
    from ..options import default_specs
    from ..signature import as_specs

    specs = as_specs(inputs) if inputs else default_specs(net, str(supernet))
    return SweepOptions(tuple(specs), None if output_names is None else tuple(output_names),
                        dict(dynamic_axes or {}), exporter, opset,
                        None if providers is None else tuple(providers), tolerance,
                        None if samples is None else str(samples), batch, input_seed,
                        latency_runs, reuse)


def with_calibration(opts: SweepOptions, calib_data: str | Path | None,
                      calib_samples: int | None, calib_batch: int) -> SweepOptions:
    """``opts`` with BatchNorm recalibration, its data read once here (refused before any arch)."""
    if calib_data is None:
        return opts
    from ..recalibrate.data import to_tensors

    if (calib_samples is not None and calib_samples < 1) or calib_batch < 1:
        raise InputError("calib_samples and calib_batch must be positive")
    to_tensors(str(calib_data))  # a missing, unreadable or non-finite file: InputError now
    return replace(opts, calib_data=str(calib_data), calib_samples=calib_samples,
                   calib_batch=calib_batch)


def file_sha(samples: str | Path | None, what: str = "samples") -> str | None:
    """The sha256 of a samples or calibration file (None without one)."""
    if samples is None:
        return None
    from ..bundle.hashing import digest_file

    try:
        return digest_file(samples).sha256
    except OSError as err:
        raise InputError(f"{what} file {str(samples)!r} cannot be read: {err}") from err


def shared_templates(opts: SweepOptions, out: Path, net: Any, archs: list[Any],
                     pooled: bool) -> tuple[SweepOptions, list[int]]:
    """The options and job order of a sweep whose workers share their traces.

    With template reuse and more than one worker: the sweep folder's template folder, emptied
    of an earlier run's files, and the archs one topology at a time (:func:`topology_order`).
    Otherwise the options as they are and the archs in their order.
    """
    if not pooled or opts.reuse != "template":
        return opts, list(range(len(archs)))
    folder = out / TEMPLATES_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return replace(opts, template_dir=str(folder)), topology_order(net, archs)


def topology_order(net: Any, archs: list[Any]) -> list[int]:
    """Job indices, one arch of each topology first, then the second of each, and so on.

    Workers that start on different topologies trace each once and share the traces; workers
    that start on the same one trace it twice. Finding an arch's topology materializes it here,
    so for subnets over :data:`ORDER_MAX_BYTES` of tensors the archs keep their order. An arch
    that does not freeze or materialize here keeps its place (its export reports why).
    """
    from collections import defaultdict

    from ..arch import freeze
    from ..export.topology import topology_key
    from ..plain.materialize import materialize

    groups: dict[str, list[int]] = defaultdict(list)
    for i, arch in enumerate(archs):
        try:
            plain = materialize(net, freeze(net, arch))
        except Exception:  # reported by the export itself
            groups[f"unknown-{i}"].append(i)
            continue
        if sum(t.numel() * t.element_size() for t in plain.state_dict().values()) \
                > ORDER_MAX_BYTES:
            return list(range(len(archs)))
        groups[topology_key(plain)].append(i)
    rounds = max((len(g) for g in groups.values()), default=0)
    return [g[r] for r in range(rounds) for g in groups.values() if r < len(g)]
