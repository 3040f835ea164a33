"""Self-contained HTML study report: inline CSS, plots as base64 data URIs, no external requests.

The page is rendered from ``summary.json`` content only (cohort numbers, pseudonymous
group names), so it carries no more than the summary does. The markup lives in the Jinja2
template ``templates/report.html``; it is rendered with autoescape on, so every text from
the data (case keys, group and column names, reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from medimg.tasks import get_task
from medimg.templating import package_environment


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ``n/a`` for missing/NaN, integers plain, floats to ``digits`` decimals.

    Example:
        >>> fmt(0.123456), fmt(None), fmt(12.0)
        ('0.123', 'n/a', '12')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value: Any) -> str:
    """A p-value for a table cell: ``<0.0001`` below that, 4 decimals otherwise, ``n/a`` when missing.

    Example:
        >>> fmt_p(3e-8), fmt_p(0.04321), fmt_p(None)
        ('<0.0001', '0.0432', 'n/a')
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


@cache
def _environment() -> jinja2.Environment:
    """The template environment: package templates, autoescape on for every template."""
    env = package_environment("medimg.evaluation")
    env.filters["fmt"] = fmt
    env.filters["fmt_p"] = fmt_p
    return env


def _subgroup_view(column: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """One subgroup analysis for the template: its metric names and each group row's CSS class."""
    metrics = list(result["groups"][0]["metrics"]) if result["groups"] else []
    classes = []
    for g in result["groups"]:
        flagged = any(
            gap.get("flagged") and gap.get("worse_group") == g["group"] for gap in result["gaps"].values()
        )
        classes.append("flagged" if flagged else ("small" if g["too_small"] else ""))
    return {"column": column, "result": result, "metrics": metrics, "row_classes": classes}


def _embedded(plot_paths: Mapping[str, Path]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) per plot, for ``data:`` URIs: the page needs no file beside it."""
    return [
        (name.replace("_", " "), base64.b64encode(Path(path).read_bytes()).decode("ascii"))
        for name, path in plot_paths.items()
    ]


def render_report(summary: Mapping[str, Any], plot_paths: Mapping[str, Path]) -> str:
    """The study report as one HTML string with every plot embedded.

    Args:
        summary: Content of ``summary.json`` (see :func:`medimg.evaluation.report.evaluate_study`).
        plot_paths: Plot name -> PNG path; each is embedded as a base64 data URI.

    Example:
        >>> page = render_report(summary, plots)  # doctest: +SKIP
        >>> "http" in page  # doctest: +SKIP
        False
    """
    boot = summary["bootstrap"]
    subgroups = [_subgroup_view(c, r) for c, r in (summary.get("subgroups") or {}).items()]
    page = (
        _environment()
        .get_template("report.html")
        .render(
            summary=summary,
            overlap=get_task(summary["task"]).target == "mask",  # Dice/HD95, else AUROC/accuracy
            boot=boot,
            level_pct=f"{boot['level']:.0%}",
            subgroups=subgroups,
            plots=_embedded(plot_paths),
        )
    )
    return page.rstrip("\n") + "\n"
