"""Cohort index page: one row per case, linking its report, sortable by any column.

Sorting is done by a few lines of inline JavaScript (no library, nothing fetched); the page
opens already sorted by ``sort_by`` so it is useful without scripts too. Failed cases are
listed with their reason. The markup is the Jinja2 template ``templates/cohort_index.html``,
rendered with autoescape on: case keys, reasons and the title are HTML-escaped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medimg.io.atomic import atomic_write_text
from medimg.templating import package_environment

COLUMNS = ("case", "status", "prediction", "confidence", "reference", "error", "sanity")
NUMERIC = ("confidence", "error")  # sorted as numbers by the page's script, the rest as text


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
    page = (
        package_environment("medimg.explain")
        .get_template("cohort_index.html")
        .render(
            entries=sorted(entries, key=lambda e: _sort_key(e, sort_by)),
            n_failed=sum(e.status != "ok" for e in entries),
            title=title,
            sort_by=sort_by,
            columns=COLUMNS,
            numeric=NUMERIC,
        )
    )
    return page.rstrip("\n") + "\n"


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
