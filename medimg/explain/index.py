"""Cohort index page: one row per case, linking its report, sortable by any column.

Sorting is done by a few lines of inline JavaScript (no library, nothing fetched); the page
opens already sorted by ``sort_by`` so it is useful without scripts too. Failed cases are
listed with their reason.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

from medimg.io.atomic import atomic_write_text

COLUMNS = ("case", "status", "prediction", "confidence", "reference", "error", "sanity")

_SCRIPT = """
function sortBy(col, numeric){
  const tb=document.querySelector('#cases tbody');const rows=[...tb.rows];
  const th=document.querySelectorAll('#cases th')[col];const asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
  rows.sort((a,b)=>{let x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;
    if(numeric){x=x===''?-Infinity:parseFloat(x);y=y===''?-Infinity:parseFloat(y);return asc?x-y:y-x;}
    return asc?x.localeCompare(y):y.localeCompare(x);});
  rows.forEach(r=>tb.appendChild(r));}
"""


@dataclass
class IndexEntry:
    """One case row: ``report`` is a path relative to the index page."""

    case_key: str
    status: str = "ok"
    report: str | None = None
    prediction: str = ""
    confidence: float | None = None
    reference: str = ""
    error: float | None = None
    sanity: str = ""
    reason: str = ""


def _sort_key(entry: IndexEntry, sort_by: str) -> tuple:
    value = getattr(entry, sort_by if sort_by != "case" else "case_key")
    missing = value is None or value == ""
    return (missing, -value if isinstance(value, float) else str(value))


def render_cohort_index(
    entries: list[IndexEntry], title: str = "medimg explain", sort_by: str = "error"
) -> str:
    """HTML of the cohort index, rows sorted by ``sort_by`` (numbers descending, then text).

    Example:
        >>> page = render_cohort_index([IndexEntry("case_001", report="case_001/report.html")])
        >>> "case_001/report.html" in page
        True
    """
    if sort_by not in ("case", "confidence", "error", "status", "prediction"):
        raise ValueError(f"cannot sort the index by {sort_by!r}")
    rows = []
    for e in sorted(entries, key=lambda e: _sort_key(e, sort_by)):
        key = html.escape(e.case_key)
        link = f'<a href="{html.escape(e.report)}">{key}</a>' if e.report else key
        status = html.escape(e.status) + (f": {html.escape(e.reason)}" if e.reason else "")
        cells = [
            (e.case_key, link),
            (e.status, status),
            (e.prediction, html.escape(e.prediction)),
            (
                "" if e.confidence is None else f"{e.confidence:.6f}",
                "" if e.confidence is None else f"{e.confidence:.3f}",
            ),
            (e.reference, html.escape(e.reference)),
            ("" if e.error is None else f"{e.error:.6f}", "" if e.error is None else f"{e.error:.3f}"),
            (e.sanity, html.escape(e.sanity)),
        ]
        tds = "".join(f'<td data-v="{html.escape(v, quote=True)}">{shown}</td>' for v, shown in cells)
        rows.append(f'<tr class="{html.escape(e.status)}">{tds}</tr>')
    numeric = {"confidence", "error"}
    heads = "".join(
        f'<th onclick="sortBy({i}, {json.dumps(c in numeric)})" title="click to sort">{c}</th>'
        for i, c in enumerate(COLUMNS)
    )
    n_fail = sum(e.status != "ok" for e in entries)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}th{{background:#f3f4f6;cursor:pointer}}
tr.failed{{background:#fde8e8}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(entries)} cases, {n_fail} failed. Sorted by {html.escape(sort_by)}; click a column to sort.</p>
<table id="cases"><thead><tr>{heads}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_cohort_index(
    entries: list[IndexEntry],
    path: str | os.PathLike[str],
    title: str = "medimg explain",
    sort_by: str = "error",
) -> Path:
    """Write the cohort index atomically and return its path.

    Example:
        >>> write_cohort_index(entries, "explain/index.html", sort_by="confidence")  # doctest: +SKIP
    """
    return atomic_write_text(path, render_cohort_index(entries, title, sort_by))
