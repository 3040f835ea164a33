"""Self-contained HTML study report: inline CSS, plots as base64 data URIs, no external requests.

The page is rendered from ``summary.json`` content only (cohort numbers, pseudonymous
group names), so it carries no more than the summary does. Every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.flag { background: #fdecea; border-left: 4px solid #c0392b; padding: .4em .8em; margin: .3em 0; }
.ok { background: #eaf6ec; border-left: 4px solid #2e7d32; padding: .4em .8em; }
.small { color: #666; font-size: .85em; } .undefined { font-style: italic; color: #8a5a00; } tr.flagged td { background: #fdecea; } tr.small td { color: #888; }
figure { display: inline-block; margin: .5em; vertical-align: top; } img { max-width: 100%; border: 1px solid #eee; }
"""


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
    return html.escape(str(value))


def fmt_p(value: Any) -> str:
    """A p-value for a table cell: ``<0.0001`` below that, 4 decimals otherwise, ``n/a`` when missing.

    Example:
        >>> fmt_p(3e-8), fmt_p(0.04321), fmt_p(None)
        ('&lt;0.0001', '0.0432', 'n/a')
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return "&lt;0.0001" if value < 1e-4 else f"{value:.4f}"


def _ci(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    if entry.get("undefined"):
        reason = html.escape(str(entry["undefined"]))
        return (
            f'<span class="undefined" title="{reason}">undefined</span> <span class="small">({reason})</span>'
        )
    return f"{fmt(entry.get('estimate'))} [{fmt(entry.get('low'))}, {fmt(entry.get('high'))}]"


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption class="small">{alt}</figcaption></figure>'


def _metrics_section(summary: Mapping[str, Any], level_pct: str) -> str:
    metrics = summary["metrics"]
    if summary["task"] == "segmentation":
        rows = [
            [
                html.escape(k),
                _ci(m),
                fmt(m["median"]),
                f"{fmt(m['q1'])} to {fmt(m['q3'])}",
                fmt(m["n"]),
                fmt(m["n_nan"]),
            ]
            for k, m in metrics.items()
        ]
        out = _table(["metric", f"mean [{level_pct} CI]", "median", "IQR", "cases", "NaN (empty mask)"], rows)
        empty_rows = [
            [
                html.escape(str(label)),
                fmt(e["both_empty"]),
                fmt(e["reference_empty_only"]),
                fmt(e["prediction_empty_only"]),
            ]
            for label, e in summary.get("empty_cases", {}).items()
        ]
        out += "<h3>Empty masks</h3>" + _table(
            [
                "label",
                "both empty (dice 1)",
                "reference empty only (false positive)",
                "prediction empty only (missed)",
            ],
            empty_rows,
        )
        return out + (
            '<p class="small">Distance metrics (HD95, ASSD) are undefined when either mask is empty: those '
            "cases are NaN, counted above and left out of the distance means (Dice and NSD are 1 when both "
            "masks are empty, 0 when one is). A mean no case defines is shown as undefined, with the reason.</p>"
        )
    rows = [[html.escape(k), _ci(m), fmt(m.get("n_valid"))] for k, m in metrics.items()]
    out = _table(["metric", f"estimate [{level_pct} CI]", "valid replicates"], rows)
    counts = summary.get("counts", {})
    out += "<h3>Counts</h3>" + _table(
        ["count", "value"], [[html.escape(k), fmt(v)] for k, v in counts.items()]
    )
    if summary.get("threshold") is not None:
        out += f'<p class="small">Operating point: probability &ge; {fmt(summary["threshold"])} (Youden\'s J on this cohort).</p>'
    return out


def _subgroup_section(column: str, result: Mapping[str, Any], level_pct: str) -> str:
    metrics = list(result["groups"][0]["metrics"]) if result["groups"] else []
    rows, classes = [], []
    for g in result["groups"]:
        flagged = any(
            gap.get("flagged") and gap.get("worse_group") == g["group"] for gap in result["gaps"].values()
        )
        rows.append([html.escape(g["group"]), fmt(g["n_cases"]), fmt(g["n_patients"]), "yes" if g["too_small"] else "no"]
                    + [_ci(g["metrics"][m]) for m in metrics])  # fmt: skip
        classes.append("flagged" if flagged else ("small" if g["too_small"] else ""))
    binned = f" ({html.escape(result['binning'])})" if result.get("binning") else ""
    out = f"<h3>By {html.escape(column)}{binned}</h3>"
    out += _table(
        ["group", "cases", "patients", "too small"] + [html.escape(m) for m in metrics], rows, classes
    )
    gap_rows = []
    for m, gap in result["gaps"].items():
        if "gap" not in gap:
            gap_rows.append([html.escape(m), "n/a", "n/a", "n/a", html.escape(gap.get("reason", ""))])
            continue
        gap_rows.append([html.escape(m), html.escape(f"{gap['highest_group']} vs {gap['lowest_group']}"),
                         _ci(gap["gap"]), html.escape(gap["worse_group"]), "FLAGGED" if gap["flagged"] else "no"])  # fmt: skip
    out += _table(["metric", "groups", f"largest gap [{level_pct} CI]", "worse group", "CI excludes 0"], gap_rows,
                  ["flagged" if r[-1] == "FLAGGED" else "" for r in gap_rows])  # fmt: skip
    return out


def _comparison_section(comparison: Mapping[str, Any], level_pct: str) -> str:
    rows = [
        [html.escape(k), fmt(e["run"]), fmt(e["baseline"]), _ci(e["difference"]), fmt_p(e["p_value"]),
         html.escape(e["test"]), fmt(e["n"]), html.escape(e["better"])]
        for k, e in comparison["metrics"].items()
    ]  # fmt: skip
    note = (f'<p class="small">{comparison["n_pairs"]} paired cases from {comparison["n_patients"]} patients; '
            f'{comparison["n_only_in_run"]} only in this run, {comparison["n_only_in_compare"]} only in the compared run. '
            "Differences are this run minus the compared run.</p>")  # fmt: skip
    header = [
        "metric",
        "this run",
        "compared run",
        f"difference [{level_pct} CI]",
        "p-value",
        "test",
        "n",
        "better",
    ]
    return note + _table(header, rows)


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
    level_pct = f"{boot['level']:.0%}"
    parts = [f"<h1>{html.escape(summary['title'])}</h1>"]
    parts.append(
        f"<p>Task: <b>{html.escape(summary['task'])}</b> &middot; {summary['n_cases']} cases from "
        f"{summary['n_patients']} patients &middot; {level_pct} CIs: {boot['interval']} bootstrap over "
        f"{html.escape(boot['unit'])}s, {boot['n_boot']} replicates, seed {boot['seed']}.</p>"
    )
    for reason, keys in (summary.get("excluded_cases") or {}).items():
        shown = ", ".join(html.escape(k) for k in keys[:50]) + (" ..." if len(keys) > 50 else "")
        parts.append(f'<div class="flag">{len(keys)} case(s) left out ({html.escape(reason)}): {shown}</div>')
    if summary.get("dropped_columns"):
        names = ", ".join(html.escape(c) for c in summary["dropped_columns"])
        parts.append(f'<p class="small">Identifying columns left out of every output: {names}.</p>')
    flags = summary.get("flags", [])
    parts.append("<h2>Findings</h2>")
    parts += [f'<div class="flag">{html.escape(f)}</div>' for f in flags] or [
        '<div class="ok">No subgroup gap or run difference with a CI excluding zero.</div>'
    ]
    parts.append("<h2>Cohort metrics</h2>" + _metrics_section(summary, level_pct))
    if summary.get("subgroups"):
        parts.append("<h2>Subgroups</h2>")
        parts += [_subgroup_section(c, r, level_pct) for c, r in summary["subgroups"].items()]
    if summary.get("comparison"):
        parts.append("<h2>Paired comparison</h2>" + _comparison_section(summary["comparison"], level_pct))
    if plot_paths:
        parts.append(
            "<h2>Plots</h2>" + "".join(_image(p, name.replace("_", " ")) for name, p in plot_paths.items())
        )
    parts.append(
        '<h2>Methods</h2><p class="small">Segmentation metrics are computed per case and label in physical '
        "units (mm, ml) from the voxel spacing; surface distances use exact Euclidean distance transforms. "
        "Confidence intervals resample patients with replacement (all cases of a drawn patient), so cases of "
        "one patient are not treated as independent. Subgroups with fewer patients (or, for classification, "
        "events) than the minimum are marked too small and take no part in the largest-gap analysis.</p>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(summary['title'])}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
