"""The report as one self-contained HTML page: the data, style and script are inline, so the
page opens offline, from an e-mail attachment or a laptop on a train."""

from __future__ import annotations

import html
import json
from itertools import pairwise
from typing import Any

from hellolondon.report.assets import CSS, JS
from hellolondon.report.png import color, dt_off_scale
from hellolondon.report.rundata import PANELS, RunData, summarize, summary_cells

PAGE_MARK = "helloLondon training report"  # the title: how a report's page is told from others
MAX_POINTS = 2000  # per curve in the page; more are thinned keeping each bucket's min and max


def thin(xs: list[int], ys: list[float], limit: int = MAX_POINTS) -> tuple[list[int], list[float]]:
    """About `limit` points at most, keeping the lowest and highest of each bucket so spikes stay."""
    if len(xs) <= limit:
        return xs, ys
    buckets = limit // 2  # two points each; the bounds spread the remainder over all of them
    bounds = [len(xs) * b // buckets for b in range(buckets + 1)]
    out_x, out_y = [], []
    for start, end in pairwise(bounds):
        idx = range(start, end)
        lo, hi = min(idx, key=ys.__getitem__), max(idx, key=ys.__getitem__)
        for k in sorted({lo, hi}):
            out_x.append(xs[k])
            out_y.append(ys[k])
    if out_x[-1] != xs[-1]:  # the latest value always shows
        out_x.append(xs[-1])
        out_y.append(ys[-1])
    return out_x, out_y


def _dt_clip(runs: list[RunData]) -> tuple[float | None, str]:
    """(top of the y axis, a note) when the compile step would squash the rest of train/dt_ms."""
    clip = dt_off_scale(runs)
    if clip is None:
        return None, ""
    return clip[0], f"max {clip[1]:,.0f} ms (compilation) off scale"


def page_data(runs: list[RunData]) -> dict[str, Any]:
    keys = {k for p in PANELS for k in p.keys}
    panels = [p._asdict() for p in PANELS]
    for p in panels:
        p["clip"], p["note"] = _dt_clip(runs) if p["title"] == "train/dt_ms" else (None, "")
    events = [
        {
            "run": r.name,
            "run_index": i,
            "level": e.get("level", ""),
            "title": e.get("title", ""),
            "step": e.get("step") if isinstance(e.get("step"), int | float) else None,
        }
        for i, r in enumerate(runs)
        for e in r.events
    ]
    series = [{k: list(thin(*r.series(k))) for k in sorted(keys) if r.has(k)} for r in runs]
    return {
        "runs": [
            {"name": r.name, "color": color(i), "series": s}
            for i, (r, s) in enumerate(zip(runs, series, strict=True))
        ],
        "panels": panels,
        "events": events,
    }


def _table(head: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        tds = "".join(
            f'<td class="{html.escape(h.lower())}">{html.escape(c)}</td>'
            for h, c in zip(head, row, strict=True)
        )
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<div class="wide"><table><tr>{th}</tr>{"".join(body)}</table></div>'


def _findings(runs: list[RunData]) -> str:
    rows, classes = [], []
    for r in runs:
        for e in r.events:
            level = str(e.get("level", ""))
            step = e.get("step")
            rows.append(
                [
                    r.name,
                    level,
                    "" if step is None else str(step),
                    str(e.get("title", "")),
                    str(e.get("text", "")),
                ]
            )
            classes.append(level if level in ("INFO", "WARN", "ERROR") else "")
    if not rows:
        return '<p class="muted">No findings: the health monitor raised nothing.</p>'
    boxes = "".join(
        f'<label><input type="checkbox" value="{lv}" checked> {lv}</label>'
        for lv in ("INFO", "WARN", "ERROR")
    )
    table = _table(["run", "level", "iter", "finding", "detail"], rows, classes)
    return f'<p id="filters">{boxes}</p><div id="findings">{table}</div>'


def _comparison(runs: list[RunData]) -> str:
    """Several runs: the settings that differ and the outcomes, as `hellolondon compare` prints."""
    if len(runs) < 2:
        return ""
    from hellolondon.comparison import compare

    table = compare(runs)
    return "<h2>Comparison</h2>\n" + _table(
        table.columns, [list(c.values()) for c in table.cells()]
    )


def render_html(runs: list[RunData], notes: list[str]) -> str:
    data = json.dumps(page_data(runs), allow_nan=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # no "</script>" can end the data block early
    cells = [summary_cells(summarize(r)) for r in runs]
    summary = _table(list(cells[0]), [list(c.values()) for c in cells])
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    title = PAGE_MARK + ": " + ", ".join(r.name for r in runs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">Hover a chart for values; drag across it to zoom every chart to those steps,
double-click to zoom out; click a run below to hide or show it. Dotted lines on train/loss
mark health warnings (orange) and errors (red).</p>
{f'<ul class="muted">{note_html}</ul>' if notes else ""}
<div id="legend"></div>
<div id="panels"></div>
<h2>Summary</h2>
{summary}
{_comparison(runs)}
<h2>Health findings</h2>
{_findings(runs)}
<script type="application/json" id="data">{data}</script>
<script>{JS}</script>
</body></html>
"""
