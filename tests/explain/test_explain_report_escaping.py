"""Text from the data (case keys, reasons, method names, notes, titles) is escaped in both explain pages."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np

from medimg.explain.index import IndexEntry, render_cohort_index
from medimg.explain.maps import SaliencyMap
from medimg.explain.report import CaseExplanation, MethodResult, render_case_report
from medimg.explain.sanity import FaithfulnessResult, RandomisationResult

SCRIPT = "<script>alert(1)</script>"
QUOTES = '"quotes"'
HOSTILE = f"{SCRIPT} {QUOTES} & 'single'"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt; &#34;quotes&#34; &amp; &#39;single&#39;"


class _Page(HTMLParser):
    """The tags, ``data-v`` values and texts of a page, as a browser reads them back."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.data_v: list[str] = []
        self.hrefs: list[str] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._open.append(tag)
        a = dict(attrs)
        if "data-v" in a:
            self.data_v.append(a["data-v"] or "")
        if "href" in a:
            self.hrefs.append(a["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open:
            self.texts.setdefault(self._open[-1], []).append(data)


def _case() -> CaseExplanation:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (12, 10, 8)).astype(np.float32)
    cam = np.zeros(image.shape, np.float32)
    cam[5, 4, 3] = 1.0
    structure = np.zeros(image.shape, bool)
    structure[4:7, 3:6, 2:5] = True
    res = MethodResult(
        SaliencyMap(cam, f"gradcam {HOSTILE}", {"layer": HOSTILE}, {"class": HOSTILE}, grid_note=HOSTILE),
        nifti=HOSTILE,
        peak_in_structure=True,
        randomisation=RandomisationResult(0.08, 0.03),
        faithfulness=FaithfulnessResult([0.0, 0.5, 1.0], [0.9, 0.2, 0.1], [0.1, 0.8, 0.9], 0.3, 0.7, 0.5),
    )
    return CaseExplanation(
        HOSTILE,
        "classification",
        image,
        np.eye(4),
        [res],
        prediction={"predicted class": HOSTILE, "volumes_ml": {HOSTILE: 1.5}},
        structure=structure,
        model={"model_id": HOSTILE},
        created="2024-01-01T00:00:00+00:00",
    )


def test_case_report_escapes_the_case_key_and_every_text_from_the_case():
    page = render_case_report(_case())
    assert SCRIPT not in page and QUOTES not in page and "<script" not in page
    assert f"<title>medimg explain: {ESCAPED}</title>" in page and f"<h1>Case {ESCAPED}</h1>" in page
    assert f'<p class="note">{ESCAPED}</p>' in page  # the grid note
    assert f"<th>volumes_ml [{ESCAPED}]</th>" in page and f"<td>class = {ESCAPED}</td>" in page
    assert page.count(ESCAPED) == 10  # title, h1, prediction x2, model, method, target, layer, file, note
    parsed = _Page(page)
    assert "script" not in parsed.tags and parsed.texts["h1"] == [f"Case {HOSTILE}"]
    assert parsed.texts["title"] == [f"medimg explain: {HOSTILE}"]
    assert page.count('src="data:image/png;base64,') == 3  # markup from the template is not escaped
    assert "lies <b>inside</b> the lesion/organ mask" in page


def test_cohort_index_escapes_keys_reasons_links_and_title():
    entries = [
        IndexEntry(HOSTILE, report=f"{HOSTILE}/report.html", prediction=HOSTILE, confidence=0.9, error=0.1),
        IndexEntry("case_002", status="failed", reason=f"DataError: {HOSTILE}"),
    ]
    page = render_cohort_index(entries, title=f"T {HOSTILE}", sort_by="error")
    assert SCRIPT not in page and QUOTES not in page
    assert page.count("<script") == 1  # the page's own sort script, nothing from the data
    assert f"<title>T {ESCAPED}</title>" in page and f"<h1>T {ESCAPED}</h1>" in page
    assert f'<td data-v="{ESCAPED}"><a href="{ESCAPED}/report.html">{ESCAPED}</a></td>' in page
    assert f'<td data-v="failed">failed: DataError: {ESCAPED}</td>' in page
    parsed = _Page(page)
    # a browser reads the attributes back as the original text: no attribute was broken open
    assert parsed.hrefs == [f"{HOSTILE}/report.html"]
    assert parsed.data_v[:3] == [HOSTILE, "ok", HOSTILE] and parsed.data_v[7:9] == ["case_002", "failed"]
    assert parsed.tags.count("script") == 1 and parsed.tags.count("tr") == 3
    assert 'onclick="sortBy(3, true)"' in page and 'onclick="sortBy(0, false)"' in page
