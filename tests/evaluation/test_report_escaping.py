"""Text from the data (group names, column names, case keys, title) is escaped in the HTML report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medimg.evaluation.html_report import fmt_p
from medimg.evaluation.report import evaluate_study

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_subgroup_names_case_keys_and_title_are_escaped(tmp_path: Path, cls_cohort) -> None:
    df = cls_cohort(n=80)
    df["site"] = np.where(np.arange(80) % 2 == 0, SCRIPT, "A&B")
    df = df.rename(columns={"sex": "<b>sex</b>"})
    df.loc[3, "case_key"] = "<img src=x onerror=alert(2)>"
    df.loc[3, "prob"] = np.nan
    res = evaluate_study(
        df, "classification", tmp_path, by=["site", "<b>sex</b>"], n_boot=20, title=f"T {SCRIPT}"
    )
    page = res.report_html.read_text()
    assert "<script" not in page and "<img src=x" not in page and "<b>sex" not in page
    assert page.count(ESCAPED) >= 3  # the title tag, the h1 and the group row
    assert f"<title>T {ESCAPED}</title>" in page and f"<h1>T {ESCAPED}</h1>" in page
    assert (
        f"<tr><td>{ESCAPED}</td><td>40</td>" in page
        or f'<tr class="flagged"><td>{ESCAPED}</td><td>40</td>' in page
    )
    assert "<td>A&amp;B</td>" in page
    assert "<h3>By &lt;b&gt;sex&lt;/b&gt;</h3>" in page
    assert "(no label or probability): &lt;img src=x onerror=alert(2)&gt;</div>" in page


def test_small_p_values_are_escaped_once() -> None:
    assert fmt_p(1e-9) == "<0.0001"
    from medimg.evaluation.html_report import _environment

    page = _environment().from_string("<td>{{ p | fmt_p }}</td>").render(p=1e-9)
    assert page == "<td>&lt;0.0001</td>"
