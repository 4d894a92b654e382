"""Progress of a sweep on stderr: archs done of all, rate and time left.

Drawn with rich on a terminal (a bar, ``done/total``, the elapsed and the remaining time), one
plain line per finished arch otherwise, as :class:`~subnet_export.console.StageProgress` does
for the stages of one export.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["SweepProgress"]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class SweepProgress:
    """A ``progress(row, done, total)`` callback for :func:`~subnet_export.sweeps.runner.sweep`.

    The rate and the time left count only archs exported in this run (a reused bundle costs a
    verification, not an export).

    Args:
        stream: where progress goes (stderr).
        live: draw with rich (default: when ``stream`` is a terminal).
    """

    def __init__(self, stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self._start = time.monotonic()
        self._worked = 0
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, row: Mapping[str, Any], done: int, total: int) -> None:
        if row.get("bundle") and row.get("status") != "reused":
            self._worked += 1  # an export ran (an arch refused before any work costs nothing)
        elapsed = time.monotonic() - self._start
        rate = self._worked / elapsed if elapsed > 0 else 0.0
        left = total - done
        eta = _duration(left / rate) if rate > 0 and left else ("0s" if not left else "?")
        if self.live:
            self._draw(done, total, f"{rate * 60:.1f} archs/min, ETA {eta}")
            return
        what = row.get("bundle") or row.get("origin", "")
        note = f" ({row['reason']})" if row.get("reason") and row.get("verdict") == "error" else ""
        reused = " (reused)" if row.get("status") == "reused" else ""
        print(f"[{done}/{total}] {row.get('verdict')}{reused} {what}{note}  "
              f"{rate * 60:.1f} archs/min, ETA {eta}", file=self.stream, flush=True)

    def _draw(self, done: int, total: int, text: str) -> None:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"),
                                      console=Console(file=self.stream))
            self._progress.start()
            self._task = self._progress.add_task(text, total=total)
        self._progress.update(self._task, completed=done, description=text)

    def close(self) -> None:
        """Stop drawing (idempotent); call it before printing anything else."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
