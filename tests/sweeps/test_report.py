"""``report.html``: the Pareto front, the axes, a self-contained page, and the page in Chromium."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from subnet_export.errors import InputError
from subnet_export.sweeps.report import (
    REPORT_NAME,
    VERDICT_COLOURS,
    axis_values,
    pareto_front,
    resolve_axis,
    write_report,
)

ESCAPE = "</script><script>document.title='broken'</script><!--"


def _row(pos, verdict, params, latency, accuracy, bundle=True):
    return {"position": pos, "origin": f"archs.jsonl:{pos + 1}", "verdict": verdict,
            "status": "error" if verdict == "error" else "exported",
            "bundle": f"subnet-{pos:016x}" if bundle else None, "arch": {"width": 8 + pos},
            "reason": "ExportError: no graph" if verdict == "error" else None,
            "parameters": params, "model_bytes": None if params is None else 4 * params,
            "latency_ms": latency, "timings_s": {}, "columns": {"accuracy": accuracy}}


ROWS = [_row(0, "passed", 1000, 2.0, 0.70), _row(1, "failed", 2000, 1.0, 0.72),
        _row(2, "passed", 3000, 3.0, 0.80), _row(3, "error", None, None, 0.10, bundle=False),
        _row(4, "passed", 1500, 1.5, 0.75), _row(5, "failed", 2500, 2.5, 0.60)]
ROWS[5]["arch"] = {"width": ESCAPE}
ROWS[5]["columns"]["note"] = ESCAPE
INDEX = {"supernet": "models/demo.py:supernet", "weights": None, "complete": True, "rows": ROWS}


def _brute(points, minimize):
    def better(p, q, k):
        return p[k] < q[k] if minimize[k] else p[k] > q[k]

    def dominates(p, q):
        return (not better(q, p, 0) and not better(q, p, 1)
                and (better(p, q, 0) or better(p, q, 1)))
    return [i for i, q in enumerate(points) if not any(dominates(p, q) for p in points)]


def test_pareto_front_by_hand():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]
    assert pareto_front(points, minimize=(True, True)) == [0, 1, 3, 4]  # (3, 4) is dominated
    assert pareto_front(points, minimize=(False, False)) == [0, 2, 3]  # best y, a trade, best x
    assert pareto_front([(1.0, 2.0), (1.0, 3.0)], minimize=(True, True)) == [0]  # a tie on x
    assert pareto_front([(1.0, 2.0), (2.0, 2.0)], minimize=(True, True)) == [0]  # a tie on y
    assert pareto_front([(1.0, 0.7), (2.0, 0.9), (3.0, 0.8)], minimize=(True, False)) == [0, 1]
    assert pareto_front([], minimize=(True, True)) == []


def test_pareto_front_matches_the_definition():
    rng = random.Random(7)
    for _ in range(200):
        points = [(float(rng.randint(0, 5)), float(rng.randint(0, 5)))
                  for _ in range(rng.randint(1, 12))]
        for minimize in ((True, True), (True, False), (False, True), (False, False)):
            assert pareto_front(points, minimize=minimize) == _brute(points, minimize)


def test_pareto_front_refuses_nan():
    with pytest.raises(InputError, match="finite"):
        pareto_front([(1.0, float("nan"))], minimize=(True, True))


def test_axis_values_and_directions():
    assert axis_values(ROWS, "latency_ms") == [2.0, 1.0, 3.0, None, 1.5, 2.5]
    assert axis_values(ROWS, "accuracy") == axis_values(ROWS, "columns.accuracy")
    assert axis_values(ROWS, "-accuracy")[3] == 0.10
    assert axis_values(ROWS, "note") == [None] * len(ROWS)  # a string is no value
    assert resolve_axis(ROWS, "parameters").minimize
    assert not resolve_axis(ROWS, "accuracy").minimize
    assert resolve_axis(ROWS, "-accuracy").minimize
    assert not resolve_axis(ROWS, "+latency_ms").minimize


def test_a_bad_axis_lists_the_names():
    with pytest.raises(InputError) as err:
        axis_values(ROWS, "acuracy")
    for name in ("acuracy", "parameters", "model_bytes", "latency_ms", "accuracy", "note"):
        assert name in str(err.value)
    with pytest.raises(InputError):
        write_report(Path("."), INDEX, y="columns.latency_ms")


def test_write_report_refuses_bad_input(tmp_path):
    with pytest.raises(InputError, match="rows"):
        write_report(tmp_path, {"supernet": "x"})
    with pytest.raises(InputError, match="folder"):
        write_report(tmp_path / "missing", INDEX)
    with pytest.raises(InputError):
        write_report(tmp_path, INDEX, x="nope")
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def _data(text):
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_the_page_is_self_contained_and_escaped(tmp_path):
    path = write_report(tmp_path, INDEX)
    assert path == tmp_path / REPORT_NAME and [p.name for p in tmp_path.iterdir()] == [REPORT_NAME]
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*([a-z]+:)?//""", text, re.I)
    assert text.count("</script") == text.count("<script") == 2  # no value closes a script
    assert "<!--" not in text
    data = _data(text)
    assert data["rows"][5]["columns"]["note"] == ESCAPE
    assert json.loads(data["rows"][5]["arch"]) == {"width": ESCAPE}
    assert "models/demo.py:supernet" in text and "3 passed, 2 failed, 1 error" in text


def test_nan_in_a_column_is_embedded_as_text(tmp_path):
    rows = [dict(ROWS[0], columns={"accuracy": float("nan")})]
    data = _data(write_report(tmp_path, {"rows": rows}).read_text(encoding="utf-8"))
    assert data["rows"][0]["columns"]["accuracy"] == "NaN"


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("SUBNET_EXPORT_REQUIRE_BROWSER") == "1":
        pytest.fail("SUBNET_EXPORT_REQUIRE_BROWSER=1 but no chromium, chromium-browser or "
                    "google-chrome is on PATH")
    pytest.skip("no headless browser: install one with `apt-get install chromium`")


def _chromium(browser, tmp, *args):
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
           f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.circles, self.fronts, self.body_rows, self.cells = [], [], 0, []
        self.title, self._in, self._tbody = "", None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "circle":
            self.circles.append(a)
        elif tag == "polyline" and a.get("class") == "front":
            self.fronts.append(a.get("points", ""))
        elif tag == "tbody":
            self._tbody = True
        elif tag == "tr" and self._tbody:
            self.body_rows += 1
        self._in = tag

    def handle_endtag(self, tag):
        self._tbody = self._tbody and tag != "tbody"
        self._in = None

    def handle_data(self, data):
        if self._in == "title" and not self.circles:
            self.title += data
        elif self._in in ("td", "code"):
            self.cells.append(data)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    browser = _browser()
    tmp = tmp_path_factory.mktemp("report")
    path = write_report(tmp, INDEX, x="parameters", y="latency_ms")
    dom = _Dom()
    dom.feed(_chromium(browser, tmp, "--dump-dom", path.as_uri()).stdout)
    return browser, tmp, path, dom


def test_the_browser_draws_the_chart(rendered):
    _, _, _, dom = rendered
    plotted = [r for r in ROWS if r["parameters"] is not None and r["latency_ms"] is not None]
    assert len(dom.circles) == len(plotted) == 5
    for circle in dom.circles:
        row = ROWS[int(circle["data-position"])]
        assert row["verdict"] in circle["class"].split()
        assert circle["fill"] == VERDICT_COLOURS[row["verdict"]]
    front = pareto_front([(r["parameters"], r["latency_ms"]) for r in plotted],
                         minimize=(True, True))
    assert len(dom.fronts) == 1 and len(dom.fronts[0].split()) == len(front)
    assert dom.body_rows == len(ROWS)
    assert ESCAPE in "".join(dom.cells)  # shown as text, not run
    assert "broken" not in dom.title


def test_the_browser_takes_a_screenshot(rendered):
    browser, tmp, path, _ = rendered
    shot = tmp / "report.png"
    _chromium(browser, tmp, "--window-size=1100,900", f"--screenshot={shot}", path.as_uri())
    data = shot.read_bytes()
    assert len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n")
