"""The layering in docs/architecture.md holds, and generated docs match the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "medimg"
ALLOWED = {
    "errors": set(),
    "extras": {"errors"},
    "templating": set(),
    "io": {"errors", "extras"},
    "config": {"errors", "extras"},
    "data": {"io", "config", "errors", "extras"},
    "models": {"io", "config", "errors", "extras"},
    "evaluation": {"io", "errors", "extras", "templating"},
    "training": {"data", "models", "config", "io", "errors", "extras", "inference", "evaluation"},
    "inference": {"data", "models", "config", "io", "errors", "extras", "evaluation", "training"},
    "explain": {
        "inference",
        "data",
        "models",
        "config",
        "io",
        "errors",
        "extras",
        "evaluation",
        "training",
        "templating",
    },
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medimg."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("medimg.")}
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downwards(layer):
    target = PKG / layer if (PKG / layer).is_dir() else PKG / f"{layer}.py"
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    bad = []
    for f in files:
        for imp in _imports(f) - ALLOWED[layer] - {layer}:
            if (PKG / imp).is_dir() or (PKG / f"{imp}.py").is_file():
                bad.append(f"{f.relative_to(ROOT)} imports medimg.{imp}")
    assert not bad, "\n".join(bad)


def test_generated_docs_are_current():
    from medimg.cli.reference import cli_reference
    from medimg.config.reference import reference_document

    assert (ROOT / "docs/workflow-reference.md").read_text().strip() == reference_document().strip(), (
        "docs/workflow-reference.md is stale: run `make docs`"
    )
    assert (ROOT / "docs/cli.md").read_text().strip() == cli_reference().strip(), (
        "docs/cli.md is stale: run `make docs`"
    )
