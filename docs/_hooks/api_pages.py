"""MkDocs hook: one API reference page per medimg package, generated from the code at build time.

Every module of ``medimg`` (``medimg.__main__`` aside) appears on its package's page through a
mkdocstrings ``::: module`` block, so the reference never lags behind the code and a module
added tomorrow is documented without editing anything here.
"""

from __future__ import annotations

import pkgutil
from collections import defaultdict
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def _accept_singular_example_sections() -> None:
    """medimg's docstrings head their doctests ``Example:``; griffe's Google parser only knows
    ``Examples:`` and would render the doctest as Markdown text. Register the singular title."""
    from griffe._internal.docstrings import google  # the parser's table of section titles

    google._section_kind.setdefault("example", google.DocstringSectionKind.examples)


_accept_singular_example_sections()


def _modules() -> dict[str, list[str]]:
    """Package name -> its modules, for every module under ``medimg/`` (found without importing)."""
    by_package: dict[str, list[str]] = defaultdict(list)
    for info in pkgutil.walk_packages([str(ROOT / "medimg")], "medimg."):
        if info.name.endswith("__main__") or info.ispkg:
            continue
        parts = info.name.split(".")
        package = ".".join(parts[:2]) if len(parts) > 2 else "medimg"
        by_package[package].append(info.name)
    return {k: sorted(v) for k, v in sorted(by_package.items())}


def _page(package: str, modules: list[str]) -> str:
    title = "Top-level modules" if package == "medimg" else f"`{package}`"
    blocks = "\n\n".join(f"::: {m}" for m in modules)
    return f"# {title}\n\n{blocks}\n"


def on_files(files: Files, config) -> Files:  # noqa: ANN001 - MkDocs hook signature
    """Add ``api/<package>.md`` pages and an ``api/index.md`` listing them."""
    packages = _modules()
    lines = ["# API reference", "", "Generated from the docstrings at build time.", ""]
    for package, modules in packages.items():
        name = f"api/{package}.md"
        files.append(File.generated(config, name, content=_page(package, modules)))
        lines.append(f"- [{package}]({package}.md): {len(modules)} modules")
    files.append(File.generated(config, "api/index.md", content="\n".join(lines) + "\n"))
    return files


def on_config(config):  # noqa: ANN001, ANN201 - MkDocs hook signature
    """Put the generated pages in the navigation, after the hand-written ones."""
    api = [{"Overview": "api/index.md"}] + [{p: f"api/{p}.md"} for p in _modules()]
    config["nav"].append({"API reference": api})
    return config
