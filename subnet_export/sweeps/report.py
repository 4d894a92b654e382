"""``report.html``: a sweep's index as one static page, a Pareto chart and a table of every row.

Self-contained (inline CSS and JavaScript, nothing to fetch): the rows are embedded as JSON, the
script draws the chart as SVG and fills the table. An axis is a row field (``parameters``,
``model_bytes``, ``latency_ms``: minimized) or a user column of the arch file (``accuracy`` or
``columns.accuracy``: maximized); a ``-`` prefix (``-flops``) minimizes, ``+`` maximizes.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import InputError

__all__ = ["REPORT_NAME", "VERDICT_COLOURS", "Axis", "axis_values", "pareto_front",
           "resolve_axis", "write_report"]

REPORT_NAME = "report.html"
#: row fields an axis may name, with the label the chart gives them; all are minimized
ROW_FIELDS = {"parameters": "parameters", "model_bytes": "model bytes",
              "latency_ms": "latency (ms)"}
#: the fill of a point by its row's verdict (``other`` for a verdict not listed)
VERDICT_COLOURS = {"passed": "#1a7f37", "failed": "#d4a017", "error": "#cf222e",
                   "other": "#6e7781"}


@dataclass(frozen=True)
class Axis:
    """A chart axis: a row field or a user column (``column``), its direction, its title."""

    key: str
    column: bool
    minimize: bool
    label: str

    def value(self, row: Mapping[str, Any]) -> float | None:
        """The row's value on this axis: a finite number, else None."""
        source = row.get("columns") if self.column else row
        value = source.get(self.key) if isinstance(source, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None


def _user_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names = (k for r in rows if isinstance(r.get("columns"), Mapping) for k in r["columns"])
    return list(dict.fromkeys(str(k) for k in names))


def resolve_axis(rows: Sequence[Mapping[str, Any]], name: str) -> Axis:
    """Read an axis name: a row field, or a user column of ``rows``, with an optional sign.

    ``name`` is ``parameters``, ``model_bytes``, ``latency_ms`` or a user column of ``rows``
    (``accuracy``, ``columns.accuracy``); a ``+`` before it maximizes, a ``-`` minimizes.

    Raises:
        InputError: the name is neither a row field nor a user column of these rows.
    """
    sign, bare = (name[0], name[1:]) if name[:1] in ("+", "-") else ("", name)
    columns = _user_columns(rows)
    explicit = bare.startswith("columns.")
    key = bare[len("columns."):] if explicit else bare
    if not explicit and key in ROW_FIELDS:
        column, label = False, ROW_FIELDS[key]
    elif key in columns:
        column, label = True, key
    else:
        shown = ", ".join(columns) if columns else "none"
        raise InputError(
            f"unknown report axis {name!r}: use a row field ({', '.join(ROW_FIELDS)}) or a user "
            f"column of the arch file (these rows have: {shown}); prefix it with '-' to "
            "minimize or '+' to maximize")
    minimize = sign == "-" if sign else not column
    return Axis(key, column, minimize, f"{label} ({'lower' if minimize else 'higher'} is better)")


def axis_values(rows: Sequence[Mapping[str, Any]], name: str) -> list[float | None]:
    """Each row's value on the axis ``name`` (see :func:`resolve_axis`); None where it has none.

    A value is a finite number; a missing, null, non-numeric, boolean, NaN or infinite one is
    None (an error row has no latency, a sweep run with ``--latency-runs 0`` none at all).
    """
    axis = resolve_axis(rows, name)
    return [axis.value(row) for row in rows]


def pareto_front(points: Sequence[tuple[float, float]], *,
                 minimize: tuple[bool, bool] = (True, True)) -> list[int]:
    """Indices, ascending, of the points no other point dominates.

    A point dominates another when it is at least as good on both coordinates and better on
    one, ``minimize`` saying for each coordinate whether smaller is better. Equal points do not
    dominate each other: all of them are on the front, or none.

    Raises:
        InputError: a coordinate is not a finite number.
    """
    signed = []
    for i, (a, b) in enumerate(points):
        if not (math.isfinite(a) and math.isfinite(b)):
            raise InputError(f"point {i} is ({a}, {b}): a Pareto front needs finite numbers")
        signed.append((a if minimize[0] else -a, b if minimize[1] else -b, i))
    signed.sort()
    front: list[int] = []
    best_b = math.inf  # the best second coordinate of the points with a better first one
    for k, (a, b, i) in enumerate(signed):  # sorted: a run of equal ``a`` starts at its best b
        if k == 0 or a != signed[k - 1][0]:
            group_b, dominated = b, b >= best_b
            best_b = min(best_b, b)
        if not dominated and b == group_b:
            front.append(i)
    return sorted(front)


def _page_data(index: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], x: Axis,
               y: Axis) -> dict[str, Any]:
    xs, ys = [x.value(r) for r in rows], [y.value(r) for r in rows]
    both = [i for i in range(len(rows)) if xs[i] is not None and ys[i] is not None]
    front = {both[k] for k in pareto_front([(xs[i], ys[i]) for i in both],
                                           minimize=(x.minimize, y.minimize))}
    out = []
    for i, row in enumerate(rows):
        bundle = row.get("bundle")
        out.append({
            **{k: row.get(k) for k in ("position", "verdict", "status", "reason", "parameters",
                                       "model_bytes", "latency_ms")},
            "columns": row.get("columns") if isinstance(row.get("columns"), Mapping) else {},
            "arch": json.dumps(row.get("arch"), separators=(",", ":"), default=str),
            "bundle": bundle, "href": f"{quote(str(bundle), safe='')}/manifest.json"
            if bundle else None, "x": xs[i], "y": ys[i], "front": i in front})
    return ({"supernet": index.get("supernet"), "complete": index.get("complete", True),
                   "x": x.label, "y": y.label, "colours": VERDICT_COLOURS,
                   "user_columns": _user_columns(rows), "rows": out})


def _embed(data: Any) -> str:
    """JSON no value can break out of its ``<script>`` with (``<``, ``>``, ``&`` escaped).

    NaN and infinities become strings (JSON.parse reads none); other types their ``str``.
    """
    text = json.dumps(json.loads(json.dumps(data, default=str), parse_constant=str))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _heading(index: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    counts = {v: sum(r.get("verdict") == v for r in rows) for v in ("passed", "failed", "error")}
    told = ", ".join(f"{n} {v}" for v, n in counts.items())
    state = "" if index.get("complete", True) else " (interrupted: not every arch ran)"
    return (f"Sweep of {index.get('supernet') or 'a supernet'}: {len(rows)} archs, "
            f"{told}{state}")


_STYLE = """body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
margin:24px auto;max-width:1100px;padding:0 16px}h1{font-size:22px;margin:0 0 4px}.meta{margin:0
0 16px;color:#57606a}#chart{width:100%;max-width:820px;height:auto;display:block}
#chart text{font-size:12px;fill:#3d444d}#chart .title{font-size:13px;fill:#1f2328}
.grid{stroke:#eaeef2}.ax{stroke:#57606a;fill:none}.front{fill:none;stroke:#0969da;stroke-width:1.5}
.pt{stroke:#fff;stroke-width:1;fill-opacity:.85}.pt.on{stroke:#0969da;stroke-width:2}
#legend span{margin-right:16px}#legend i{display:inline-block;width:11px;height:11px;
margin-right:5px;border-radius:50%;vertical-align:-1px}#note{color:#57606a;font-size:13px}table{width:100%;
border-collapse:collapse;margin-top:16px;font-size:13px}th{background:#f6f8fa}
th,td{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}td code{font-size:12px;word-break:break-all}
tr.on td:first-child{font-weight:600}
"""

_SCRIPT = """const D = JSON.parse(document.getElementById("data").textContent);
const svg = document.getElementById("chart"), NS = svg.namespaceURI;
const W = 820, H = 460, L = 84, R = 20, T = 16, B = 60;
const compact = new Intl.NumberFormat("en", {notation: "compact", maximumSignificantDigits: 4});
const el = (tag, attrs, parent, text) => { const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text; return parent.appendChild(e); };
function scale(values) {
  let [lo, hi] = values.length ? [Math.min(...values), Math.max(...values)] : [0, 1];
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / 6, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = p * [1, 2, 5, 10].find(m => m * p >= raw);
  const a = Math.floor(lo / step) * step, b = Math.ceil(hi / step) * step, ticks = [];
  for (let i = 0; a + i * step <= b + step / 2; i++) ticks.push(a + i * step);
  return {a, b, ticks};
}
const pts = D.rows.filter(r => r.x !== null && r.y !== null);
const X = scale(pts.map(r => r.x)), Y = scale(pts.map(r => r.y));
const sx = v => L + (v - X.a) / (X.b - X.a) * (W - L - R);
const sy = v => H - B - (v - Y.a) / (Y.b - Y.a) * (H - T - B);
const grid = (x1, x2, y1, y2) => el("line", {class: "grid", x1, x2, y1, y2}, svg);
for (const t of X.ticks) { grid(sx(t), sx(t), T, H - B);
  el("text", {x: sx(t), y: H - B + 18, "text-anchor": "middle"}, svg, compact.format(t)); }
for (const t of Y.ticks) { grid(L, W - R, sy(t), sy(t));
  el("text", {x: L - 8, y: sy(t) + 4, "text-anchor": "end"}, svg, compact.format(t)); }
el("polyline", {class: "ax", points: `${L},${T} ${L},${H - B} ${W - R},${H - B}`}, svg);
el("text", {class: "title", x: (L + W - R) / 2, y: H - 14, "text-anchor": "middle"}, svg, D.x);
el("text", {class: "title", transform: `translate(20 ${(T + H - B) / 2}) rotate(-90)`,
            "text-anchor": "middle"}, svg, D.y);
const front = pts.filter(r => r.front).sort((p, q) => p.x - q.x || p.y - q.y);
el("polyline", {class: "front", points: front.map(r => `${sx(r.x)},${sy(r.y)}`).join(" ")}, svg);
const colour = v => D.colours[v] || D.colours.other;
for (const r of pts) {
  const known = r.verdict in D.colours ? r.verdict : "other";
  el("title", {}, el("circle", {class: `pt ${known}${r.front ? " on" : ""}`, cx: sx(r.x),
     cy: sy(r.y), r: 5.5, fill: colour(r.verdict), "data-position": r.position}, svg),
     `#${r.position} ${r.verdict}: ${r.arch}`);
}
const legend = document.getElementById("legend");
for (const v of ["passed", "failed", "error"]) {
  const s = legend.appendChild(document.createElement("span"));
  s.appendChild(document.createElement("i")).style.background = colour(v);
  s.append(`${v} (${D.rows.filter(r => r.verdict === v).length})`);
}
legend.appendChild(document.createElement("span")).textContent = "blue line: Pareto front";
const hidden = D.rows.length - pts.length;
document.getElementById("note").textContent = hidden ? `${hidden} of ${D.rows.length} rows ` +
  "have no value on both axes (an error, or no latency measured): they are in the table only."
  : `Every row is on the chart; ${front.length} on the Pareto front.`;
const num = v => v == null ? "" : typeof v === "number" ? v.toLocaleString("en",
  {maximumFractionDigits: 4}) : typeof v === "object" ? JSON.stringify(v) : String(v);
const hr = document.querySelector("#rows thead").insertRow();
for (const h of ["#", "verdict", "status", "parameters", "bytes", "latency (ms)",
                 ...D.user_columns, "reason", "arch", "bundle"])
  hr.appendChild(document.createElement("th")).textContent = h;
const body = document.querySelector("#rows tbody");
for (const r of D.rows) {
  const tr = body.insertRow(); tr.className = r.front ? "on" : "";
  const cell = (text, cls) => { const td = tr.insertCell(); td.textContent = text;
                                if (cls) td.className = cls; return td; };
  cell(r.position, "n"); cell(r.verdict); cell(r.status);
  for (const k of ["parameters", "model_bytes", "latency_ms"]) cell(num(r[k]), "n");
  for (const k of D.user_columns) cell(num(r.columns[k]), "n"); cell(r.reason || "");
  cell("").appendChild(document.createElement("code")).textContent = r.arch;
  const link = cell("").appendChild(document.createElement("a"));
  if (r.href) Object.assign(link, {href: r.href, textContent: r.bundle});
}
"""


def _page(index: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], x: Axis, y: Axis) -> str:
    title = html.escape(_heading(index, rows))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">\n'
            f"<title>{title}</title><style>{_STYLE}</style></head><body>\n<h1>{title}</h1>\n"
            f'<p class="meta">{html.escape(y.label)} against {html.escape(x.label)}; a bold row '
            "is on the Pareto front. Bundle links open each bundle's manifest.json.</p>\n"
            "<noscript><p>This report draws its chart and table with JavaScript, which is "
            "off: the same rows are in index.json beside it.</p></noscript>\n"
            '<svg id="chart" viewBox="0 0 820 460" role="img" aria-label="Pareto chart"></svg>\n'
            '<div id="legend"></div><p id="note"></p>\n'
            '<table id="rows"><thead></thead><tbody></tbody></table>\n'
            '<script type="application/json" id="data">'
            f"{_embed(_page_data(index, rows, x, y))}</script>\n"
            f"<script>{_SCRIPT}</script>\n</body></html>\n")


def write_report(out_dir: Path, index: Mapping[str, Any], *, x: str = "parameters",
                 y: str = "latency_ms") -> Path:
    """Write ``out_dir/report.html`` atomically from a sweep's index; return its path.

    Args:
        out_dir: the sweep directory (bundle links are relative to it).
        index: the contents of ``index.json``: the sweep's settings and ``rows``.
        x: the horizontal axis (see :func:`resolve_axis`).
        y: the vertical axis.

    Raises:
        InputError: ``out_dir`` is not a folder, ``index`` has no list of rows, or an axis
            names neither a row field nor a user column.
    """
    out_dir = Path(out_dir)
    rows = index.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise InputError("the sweep index has no list of rows under 'rows': pass the "
                         "contents of the sweep's index.json")
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a folder: write the report into the sweep's folder")
    page = _page(index, rows, resolve_axis(rows, x), resolve_axis(rows, y))
    path = out_dir / REPORT_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
