"""The Example sections of the evaluation modules' docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "seg_metrics",
    "cls_metrics",
    "bootstrap",
    "compare",
    "subgroups",
    "summary",
    "privacy",
    "report",
    "html_report",
    "plots",
    "cls_plots",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"medimg.evaluation.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
