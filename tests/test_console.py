"""What the CLI draws: stage progress (rich on a terminal, plain lines in logs), sizes."""

from __future__ import annotations

import io

import pytest

from subnet_export.console import StageProgress, format_bytes


def _run(live: bool) -> str:
    buf = io.StringIO()
    with StageProgress(["freeze", "export"], stream=buf, live=live) as progress:
        for stage in ("freeze", "export"):
            progress(stage, "start")
            progress(stage, "done")
    return buf.getvalue()


def test_plain_progress_is_one_line_per_stage():
    assert _run(live=False) == "[1/2] freeze ...\n[2/2] export ...\n"


def test_live_progress_ends_with_every_stage_done_and_its_time():
    lines = [line.strip() for line in _run(live=True).splitlines() if line.strip()]
    assert lines[-2:] == ["done [1/2] freeze 0:00:00", "done [2/2] export 0:00:00"]


def test_a_stream_that_is_not_a_terminal_gets_plain_lines():
    assert not StageProgress(["freeze"], stream=io.StringIO()).live


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                     (5 * 2**20 + 2**19, "5.5 MiB"), (3 * 2**30, "3.0 GiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
