"""Capturing what an exporter prints, at the file-descriptor level.

The TorchScript exporter's C++ side writes its IR dumps straight to file descriptor 1, past
``sys.stdout``, so ``contextlib.redirect_stdout`` cannot catch them and ``--json`` on stdout
would no longer be JSON. :class:`CapturedOutput` points fds 1 and 2 (and ``sys.stdout`` /
``sys.stderr``) at one temporary file while it is entered and keeps the text for error details.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import tempfile
from types import TracebackType

__all__ = ["CapturedOutput"]

#: Details keep at most this many characters: the head and the tail of a longer capture.
MAX_CAPTURED_CHARS = 1 << 20


class CapturedOutput:
    """A context manager sending everything written to fds 1 and 2 into a temporary file.

    The fds are restored on every exit, exceptions and ``KeyboardInterrupt`` included. The
    redirection is process-wide: output of other threads in that time is captured too.

    Attributes:
        text: what was printed while entered: what reached fds 1 and 2 (C-level writes, in
            the order written), then what Python code wrote to ``sys.stdout``/``sys.stderr``;
            cut in the middle past :data:`MAX_CAPTURED_CHARS`; empty before exit.
    """

    def __init__(self) -> None:
        self.text = ""
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._saved: list[tuple[int, int]] = []
        self._python: contextlib.ExitStack | None = None
        self._buffer = io.StringIO()

    def __enter__(self) -> CapturedOutput:
        _flush_all()
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        try:
            for fd in (1, 2):
                try:
                    saved = os.dup(fd)
                except OSError:  # not open (a daemon): nothing can reach the terminal there
                    continue
                self._saved.append((fd, saved))
                os.dup2(self._file.fileno(), fd)
            self._python = contextlib.ExitStack()
            # sys.stdout may not be fd 1 (pytest, click's runner): catch Python-level writes too
            self._python.enter_context(contextlib.redirect_stdout(self._buffer))
            self._python.enter_context(contextlib.redirect_stderr(self._buffer))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._python is not None:
            self._python.close()
            self._python = None
        _flush_all()
        while self._saved:
            fd, saved = self._saved.pop()
            os.dup2(saved, fd)
            os.close(saved)
        if self._file is not None:
            self._file.seek(0)
            native = self._file.read().decode("utf-8", errors="replace")
            self._file.close()
            self._file = None
            self.text = _clip(native + self._buffer.getvalue())


def _flush_all() -> None:
    # Python's buffers, then C stdio's (std::cout is synced with it): what torch wrote before a
    # switch must land on the side of it where it was written
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _clip(text: str) -> str:
    if len(text) <= MAX_CAPTURED_CHARS:
        return text
    half = MAX_CAPTURED_CHARS // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
