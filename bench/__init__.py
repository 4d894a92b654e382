"""Benchmarks of subnet-export: ``python -m bench`` runs every ``bench/bench_*.py``.

A benchmark module exposes ``run() -> dict`` (raw, JSON-serialisable results) and may expose
``markdown(result: dict) -> str`` (its section of ``docs/benchmarks.md``). The runner writes
``bench/results/<name>.json`` and replaces the section between ``<!-- bench:<name> -->`` and
``<!-- /bench:<name> -->`` in the docs, so adding a benchmark is adding a file. Benchmarks report
figures; nothing here asserts a timing.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["BENCH_DIR", "DOCS", "RESULTS", "discover", "machine", "memory_status",
           "reset_peak_rss", "update_docs"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
DOCS = BENCH_DIR.parent / "docs" / "benchmarks.md"


def discover() -> dict[str, str]:
    """``{name: module}`` of every ``bench_<name>.py`` next to this file, sorted by name."""
    return {p.stem[len("bench_"):]: f"{__name__}.{p.stem}"
            for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def load(module: str):
    """Import a benchmark module by its dotted name."""
    return importlib.import_module(module)


def machine() -> dict[str, Any]:
    """Where and when the figures were taken: CPU, core count, versions, date."""
    cpu = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in ("torch", "numpy", "subnet_export"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = "absent"
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
    }


def memory_status() -> dict[str, int]:
    """Current and peak resident memory of this process in bytes (``/proc/self/status``)."""
    text = Path("/proc/self/status").read_text(encoding="utf-8")
    out = {}
    for key in ("VmRSS", "VmHWM"):
        found = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        out[key] = int(found.group(1)) * 1024 if found else -1
    return out


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where unsupported.

    Without the reset, a transient peak while building the supernet would hide the peak of
    the step being measured.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return False
    return True


def update_docs(name: str, section: str, path: Path = DOCS) -> None:
    """Put ``section`` between the markers of benchmark ``name`` in ``docs/benchmarks.md``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{section.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else (
        "# Benchmarks\n\nWritten by `python -m bench` (`make bench`); raw figures are in "
        "`bench/results/`. Timings are measurements, never test assertions.\n")
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


if sys.platform != "linux":  # pragma: no cover - the memory figures read /proc
    import warnings

    warnings.warn("bench: memory figures need Linux /proc; they will read -1", stacklevel=1)
