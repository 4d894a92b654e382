"""The sweep's index: ``index.jsonl`` appended row by row, ``index.json`` written at the end.

``index.jsonl`` holds this run's rows in the order the archs finish, one JSON object a line,
flushed and fsynced after each, so an interrupted sweep still says what it finished.
``index.json`` is written atomically when the sweep stops (finished or interrupted): the sweep's
settings and every row in arch-file order, ``"complete": false`` when it was interrupted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["INDEX_JSON", "INDEX_JSONL", "IndexWriter", "previous_rows", "write_json_atomic"]

INDEX_JSONL = "index.jsonl"
INDEX_JSON = "index.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a fsynced temporary file and one rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the index is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def previous_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier sweep in ``out_dir`` by bundle name (``index.json``, else the JSONL).

    Only facts a rerun cannot read back from a bundle (latency, stage times) are taken from
    them; a row whose bundle does not verify is ignored by the caller. Unreadable lines are
    skipped: the log of a killed run may end in half a line.
    """
    rows: list[Any] = []
    try:
        rows = json.loads((out_dir / INDEX_JSON).read_text(encoding="utf-8")).get("rows", [])
    except (OSError, ValueError, AttributeError):
        try:
            lines = (out_dir / INDEX_JSONL).read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return {r["bundle"]: r for r in rows if isinstance(r, dict) and r.get("bundle")}


class IndexWriter:
    """Append rows to ``index.jsonl`` as they finish; write ``index.json`` on :meth:`close`.

    Args:
        out_dir: the sweep directory.
        header: the sweep's settings, the top of ``index.json``.
        total: how many rows the sweep will have (``index.json`` sorts them by ``position``).
    """

    def __init__(self, out_dir: Path, header: Mapping[str, Any], total: int) -> None:
        self.out_dir = out_dir
        self.header = dict(header)
        self.total = total
        self.rows: list[dict[str, Any]] = []
        self._log: IO[str] = open(out_dir / INDEX_JSONL, "w", encoding="utf-8")  # noqa: SIM115

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Add finished rows: one line each in ``index.jsonl``, on disk before this returns."""
        for row in rows:
            self.rows.append(row)
            self._log.write(json.dumps(row, default=str) + "\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def close(self) -> list[dict[str, Any]]:
        """Write ``index.json`` atomically and close the log; return the rows in order."""
        if not self._log.closed:
            self._log.close()
        ordered = sorted(self.rows, key=lambda r: r["position"])
        complete = len(ordered) == self.total
        write_json_atomic(self.out_dir / INDEX_JSON,
                          {**self.header, "complete": complete, "rows": ordered})
        return ordered
