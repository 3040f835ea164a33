"""Every benchmark result the documentation quotes is a committed file a reader can open.

``benchmarks/results/`` is git-ignored (every run writes there); the runs a page quotes are
copied into ``docs/results/`` and committed. This test reads every Markdown page and fails on
a quoted ``*.json`` result that is not in ``docs/results/``, or that does not parse, or that
is not small.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
CITED = re.compile(r"(?:docs/)?results/([A-Za-z0-9_.-]+\.json)(?!l)")
# Where runs write (named as output locations, not quoted as evidence).
OUTPUT_LOCATIONS = {"latest.json", "dicom_qa-latest.json"}
MAX_BYTES = 128 * 1024


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "docker" / "README.md"]


def cited_results() -> dict[str, list[str]]:
    """Result file name -> the pages that quote it."""
    found: dict[str, list[str]] = {}
    for page in _pages():
        if not page.is_file():
            continue
        for name in CITED.findall(page.read_text(encoding="utf-8")):
            if name not in OUTPUT_LOCATIONS:
                found.setdefault(name, []).append(str(page.relative_to(ROOT)))
    return found


def test_quoted_results_are_committed_and_readable():
    cited = cited_results()
    assert cited, "no page quotes a benchmark result; the pattern no longer matches the docs"
    missing = {n: pages for n, pages in cited.items() if not (RESULTS / n).is_file()}
    assert not missing, f"quoted but not in docs/results/: {missing}"
    for name in cited:
        path = RESULTS / name
        assert path.stat().st_size <= MAX_BYTES, f"{path} is {path.stat().st_size} bytes; keep results small"
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data, f"{path} is empty"


def test_every_committed_result_is_quoted():
    """A result nobody quotes is stale weight in the repository."""
    cited = cited_results()
    unquoted = sorted(p.name for p in RESULTS.glob("*.json") if p.name not in cited)
    assert not unquoted, f"docs/results/ holds files no page quotes: {unquoted}"


def test_pattern_sees_a_quote(tmp_path):
    text = "JSON `docs/results/train-20261203-1200.json` and `benchmarks/results/latest.json`"
    assert CITED.findall(text) == ["train-20261203-1200.json", "latest.json"]
