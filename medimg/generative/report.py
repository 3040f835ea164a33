"""The anomaly study's HTML page: test metrics and one row per test case (rendered by medimg's Jinja2)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from medimg.io.atomic import atomic_write_text
from medimg.templating import package_environment


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(float(value)) else f"{float(value):.4g}"


def write_anomaly_report(
    path: Path,
    name: str,
    metrics: dict[str, float],
    per_case: pd.DataFrame,
    threshold: float,
    score_kind: str = "max",
) -> Path:
    """Write ``report.html``: the metrics table and the per-case table (score, flag, peak in lesion, map).

    Example:
        >>> write_anomaly_report(Path("report.html"), "study", {"test_auroc": 0.95}, per_case, 1.2)  # doctest: +SKIP
    """
    rows = []
    for r in per_case.to_dict(orient="records"):
        peak = r.get("peak_in_lesion")
        peak_text = (
            "n/a"
            if peak is None or (isinstance(peak, float) and math.isnan(peak))
            else ("yes" if peak else "no")
        )
        rows.append({**r, "peak": peak_text})
    html = (
        package_environment("medimg.generative")
        .get_template("anomaly_report.html")
        .render(
            name=name,
            threshold=threshold,
            score_kind={"max": "maximum", "p99": "99th percentile", "mean": "mean"}.get(
                score_kind, score_kind
            ),
            metrics=[(k, _fmt(v)) for k, v in sorted(metrics.items())],
            rows=rows,
        )
    )
    atomic_write_text(path, html)
    return path
