"""File digests and the listing of a bundle directory.

stdlib only, so that ``verify`` stays torch-free.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FileDigest", "digest_file", "list_files"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """Size in bytes and hex sha256 of one file."""

    size: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        """Return the manifest form, ``{"size": ..., "sha256": ...}``."""
        return {"size": self.size, "sha256": self.sha256}


def digest_file(path: str | os.PathLike[str]) -> FileDigest:
    """Hash a file in chunks, so a multi-gigabyte external-data file does not fill memory.

    Args:
        path: the file.

    Returns:
        Its size and sha256.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileDigest(size=size, sha256=h.hexdigest())


def list_files(root: str | os.PathLike[str]) -> dict[str, str]:
    """List every entry below ``root`` that is not a directory, with its kind.

    Symlinks are listed, not followed: a link inside a bundle could point anywhere, so it is
    reported rather than hashed through.

    Args:
        root: the directory to walk.

    Returns:
        POSIX-style relative path -> ``"file"``, ``"symlink"`` or ``"other"`` (fifo, socket, ...),
        sorted by path.
    """
    root = Path(root)
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        # os.walk lists symlinks to directories among dirnames; report them as entries.
        names = list(filenames) + [d for d in dirnames if (base / d).is_symlink()]
        for name in names:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "symlink"
            elif path.is_file():
                found[rel] = "file"
            else:
                found[rel] = "other"
    return dict(sorted(found.items()))
