"""The archs of a sweep: read from a JSONL or JSON-list file, or sampled from the supernet.

An entry is either a bare arch (``{label: value}``, in any format ``--arch`` accepts) or an
object with the arch under the key ``"arch"`` and the user's own columns beside it
(``{"arch": {...}, "accuracy": 0.71}``); those columns are copied into the entry's index row.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["ARCH_KEY", "SweepEntry", "entries_from", "read_archs", "sample_entries"]

#: the key that holds the arch when an entry carries user columns
ARCH_KEY = "arch"


@dataclass
class SweepEntry:
    """One arch of a sweep, as the user gave it.

    Attributes:
        position: its place in the sweep (0-based), the order of the index rows.
        arch: the arch as given (not yet validated; a bad one becomes an error row).
        columns: the user's columns of this entry (empty for a bare arch).
        origin: where it came from, for messages (``archs.jsonl:3``, ``sample seed 7``).
    """

    position: int
    arch: Any
    columns: dict[str, Any] = field(default_factory=dict)
    origin: str = ""


def _entry(position: int, item: Any, origin: str) -> SweepEntry:
    if isinstance(item, Mapping) and isinstance(item.get(ARCH_KEY), Mapping):
        columns = {k: v for k, v in item.items() if k != ARCH_KEY}
        return SweepEntry(position, dict(item[ARCH_KEY]), columns, origin)
    return SweepEntry(position, item, {}, origin)


def entries_from(items: list[Any], origin: str = "archs") -> list[SweepEntry]:
    """Sweep entries of already-parsed items (bare archs or ``{"arch": ..., column: ...}``)."""
    return [_entry(i, item, f"{origin}[{i}]") for i, item in enumerate(items)]


def read_archs(path: str | Path) -> list[SweepEntry]:
    """Read a sweep's arch file: a JSON list, or JSONL (one entry a line; blank lines skipped).

    An entry that is not an object is kept: it becomes an error row (``ArchError``) without
    stopping the sweep.

    Raises:
        InputError: the file is missing, unreadable, not JSON/JSONL, or holds no entry.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"arch file {str(path)!r} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read arch file {str(path)!r}: {err}") from err
    items = _json_list(text)
    if items is not None:
        entries = entries_from(items, path.name)
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{number} is not a JSON value ({err}); give one arch "
                                 "object a line (JSONL) or one JSON list") from err
            entries.append(_entry(len(entries), item, f"{path.name}:{number}"))
    if not entries:
        raise InputError(f"{path} holds no arch; give one arch object a line or a JSON list")
    return entries


def _json_list(text: str) -> list[Any] | None:
    # One JSON list; else None, and the text is read as JSONL (whose first line may be a list).
    if not text.lstrip().startswith("["):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, list) else None


def sample_entries(supernet: Any, n: int, seed: int, start: int = 0) -> list[SweepEntry]:
    """``n`` distinct random archs of ``supernet`` (fewer when the space is smaller).

    Draw ``i`` uses a seed drawn from ``random.Random(seed)``, so one ``(n, seed)`` always gives
    the same archs and ``n + 1`` extends the list of ``n``. The supernet is left on the last
    sample, as ``sample_arch`` leaves it.

    Args:
        supernet: the built supernet.
        n: how many archs.
        seed: the seed of the draws.
        start: the position of the first entry (after the archs of a file).
    """
    from ..arch import sample_arch

    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[SweepEntry] = []
    for _ in range(max(20 * n, 100)):
        if len(out) == n:
            break
        draw = rng.randrange(2**32)
        arch = dict(sample_arch(supernet, draw))
        key = json.dumps(arch, sort_keys=True, default=list)
        if key in seen:
            continue
        seen.add(key)
        out.append(SweepEntry(start + len(out), arch, {"sample_seed": draw},
                              f"sample seed {draw}"))
    return out
