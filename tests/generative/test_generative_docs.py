"""docs/generative.md shows the keys of the anomaly and superres sections as the schema defines them."""

from __future__ import annotations

from pathlib import Path

from medimg.config.generative import AnomalyConfig, SuperresConfig
from medimg.config.reference import markdown_reference

ROOT = Path(__file__).resolve().parents[2]


def test_docs_list_every_key_of_both_sections():
    page = (ROOT / "docs/generative.md").read_text()
    for model, prefix in ((AnomalyConfig, "anomaly."), (SuperresConfig, "superres.")):
        rows = [line for line in markdown_reference(model, prefix).splitlines() if line.startswith("| `")]
        assert rows and all(row in page for row in rows), f"docs/generative.md: {prefix} keys are stale"
    assert "generative.md" in (ROOT / "mkdocs.yml").read_text()
