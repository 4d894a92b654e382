"""The sweep's bookkeeping: which rows are known, which bundles to export, and logging rows.

``Plan`` is what the runner decides before any export (``runner._plan``); ``Emitter`` hands
each finished row to the index and the progress callback, and, when a sweep ends early, gives
a bundle that is in place and verifies the row it missed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .index import IndexWriter
from .resume import reusable

__all__ = ["Emitter", "Plan", "Progress"]

Progress = Callable[[Mapping[str, Any], int, int], None]


@dataclass
class Plan:
    """Where every entry goes: rows already known, and one job per bundle to export."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[tuple[Any, Path]] = field(default_factory=list)
    waiting: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


class Emitter:
    """Hands finished rows to the index and the progress callback, counting them."""

    def __init__(self, writer: IndexWriter, plan: Plan, total: int,
                 progress: Progress | None) -> None:
        self.writer, self.plan, self.total = writer, plan, total
        self.progress = progress or (lambda row, done, total: None)
        self.done = 0
        self.logged: set[int] = set()

    def rows(self, rows: Sequence[dict[str, Any]]) -> None:
        self.writer.append(rows)
        for row in rows:
            self.done += 1
            self.progress(row, self.done, self.total)

    def recover_unlogged(self) -> None:
        """Rows for jobs whose bundle is in place and verifies but whose row was not logged."""
        for job, waiting in sorted(self.plan.waiting.items()):
            if job in self.logged:
                continue
            path = self.plan.jobs[job][1]
            facts = reusable(path, waiting[0]["arch"]) if path.is_dir() else None
            if facts is not None:
                self.job_done(job, {**facts, "status": "exported"})

    def job_done(self, job: int, facts: Mapping[str, Any]) -> None:
        self.logged.add(job)
        first = self.plan.waiting[job][0]["position"]
        self.rows([{**row, **facts, **({"duplicate_of": first} if i else {})}
                   for i, row in enumerate(self.plan.waiting[job])])
