"""Install a directory atomically: build it beside its destination, then rename it into place.

Protocol for ``out`` (its parent ``P``, its name ``N``):

1. Stale work dirs ``P/.N.partial-<pid>-<token>`` (and ``.N.work-...``, the scratch space of
   :func:`work_directory`) left by runs whose process is dead are removed.
2. The new directory is built in a fresh ``P/.N.partial-<pid>-<token>``; every file and the
   directory itself are fsynced. ``out`` is untouched, and the work dir's hidden name never
   equals ``out``, so no reader takes it for a bundle.
3. ``out`` absent: one ``rename`` puts the work dir at ``out``.
   ``out`` present (``force``): on Linux ``renameat2(RENAME_EXCHANGE)`` swaps the two paths in
   one step, then the work dir (now holding the old bundle) is deleted. Elsewhere ``out`` is
   first renamed to ``P/.N.old-<pid>-<token>``, then the work dir to ``out``; a crash between the
   two leaves ``out`` absent (never partial) and the old bundle under the ``.old`` name.
4. The parent is fsynced so the rename survives a power cut.

At every instant a reader of ``out`` sees the old complete directory, the new complete one, or
(only with the non-Linux fallback, and only after a crash) nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from .hashing import FileDigest

__all__ = ["atomic_directory", "check_destination", "check_writable", "clean_stale", "copy_file",
           "work_directory", "write_file"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_CHUNK = 1 << 20
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def write_file(path: Path, data: bytes) -> FileDigest:
    """Write ``data`` to ``path`` and fsync it; return the digest of what was written."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return FileDigest(size=len(data), sha256=hashlib.sha256(data).hexdigest())


def copy_file(src: Path, dst: Path) -> FileDigest:
    """Copy ``src`` to ``dst`` (contents only, not mode or times) and fsync the copy.

    Returns:
        The size and sha256 of the bytes copied, hashed as they pass, so a caller that
        records the copy's digest need not read it back.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while chunk := fi.read(_CHUNK):
            h.update(chunk)
            fo.write(chunk)
            size += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return FileDigest(size=size, sha256=h.hexdigest())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        _fsync_dir(Path(dirpath))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _work_pattern(out: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(out.name)}\.(?:partial|old|work)-(\d+)-[A-Za-z0-9_]+$")


def clean_stale(out: Path) -> list[Path]:
    """Delete the work dirs of earlier runs on ``out`` whose process is dead.

    A live process's work dir is left alone: it may be writing the same destination now.

    Args:
        out: the destination directory.

    Returns:
        The paths removed.
    """
    pattern = _work_pattern(out)
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when the platform or filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _check_replaceable(out: Path, marker: str) -> None:
    if out.is_symlink() or not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another --out")
    if any(out.iterdir()) and not (out / marker).is_file():
        # --force must never wipe a directory that is not one of ours (say, a home directory).
        raise InputError(
            f"{out} exists and is not a bundle (no {marker}); refusing to replace it even with "
            "--force: choose another --out or remove it yourself"
        )


def check_destination(out: Path, *, force: bool, marker: str) -> None:
    """Fail early when ``out`` exists and may not be replaced.

    Raises:
        InputError: ``out`` exists and ``force`` is false, or it is not a replaceable bundle.
    """
    if out.exists() or out.is_symlink():
        if not force:
            raise InputError(f"{out} already exists; pass --force to replace it")
        _check_replaceable(out, marker)


def _install(work: Path, out: Path, *, force: bool, marker: str) -> None:
    check_destination(out, force=force, marker=marker)
    if not out.exists():
        os.rename(work, out)
    elif _exchange(work, out):
        shutil.rmtree(work, ignore_errors=True)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        os.rename(out, old)  # replaces the empty placeholder mkdtemp made
        try:
            os.rename(work, out)
        except OSError:
            os.rename(old, out)  # put the old bundle back rather than leave --out empty
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out.parent)


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str], *, force: bool, marker: str) -> Iterator[Path]:
    """Yield an empty work dir beside ``out``; on clean exit install it at ``out`` atomically.

    On any exception the work dir is deleted and ``out`` keeps what it had.

    Args:
        out: the destination directory; its parents are created if needed.
        force: replace an existing ``out`` (only if it is empty or holds ``marker``).
        marker: a file name that marks a directory as replaceable (``manifest.json``).

    Yields:
        The work directory to fill.

    Raises:
        InputError: ``out`` exists without ``force``, is not replaceable, or cannot be written
            (permissions, full disk, a parent that is a file); the message names the path.
    """
    out = Path(out).absolute()
    check_destination(out, force=force, marker=marker)
    work: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
        os.chmod(work, 0o755)  # mkdtemp makes 0700; a bundle is meant to be shared
        yield work
        _fsync_tree(work)
        _install(work, out, force=force, marker=marker)
        work = None
    except OSError as e:
        reason = e.strerror or str(e)
        where = e.filename or out
        raise InputError(
            f"cannot write the bundle to {out}: {reason} ({where}); check that the destination "
            "is a writable directory with free space"
        ) from e
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def work_directory(out: str | os.PathLike[str], *, force: bool, marker: str) -> Iterator[Path]:
    """Yield a scratch dir ``P/.N.work-<pid>-<token>`` beside ``out``, deleted on exit.

    Made before any work, it proves ``out`` can be written; a run killed by SIGKILL leaves it
    where the next run on ``out`` removes it (:func:`clean_stale`), never in ``$TMPDIR``.

    Raises:
        InputError: ``out`` exists without ``force``, is not replaceable, or its folder cannot
            be written.
    """
    out = Path(out).absolute()
    check_destination(out, force=force, marker=marker)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise InputError(
            f"cannot write to {out.parent}: {e.strerror or e}; choose an --out in a writable "
            "folder") from e
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_writable(out: str | os.PathLike[str], *, force: bool, marker: str) -> None:
    """Fail before any work when ``out`` cannot be written.

    That is: it exists (without ``force``) or is not replaceable, or its nearest existing
    folder is not writable.

    Raises:
        InputError: naming the path and what to do.
    """
    out = Path(out).absolute()
    check_destination(out, force=force, marker=marker)
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write the bundle to {out}: {folder} is not a directory; "
                         "choose another --out")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the bundle to {out}: {folder} is not writable; choose "
                         "an --out in a folder you can write")
