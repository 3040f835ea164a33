"""The I/O benchmark script runs end to end (tiny sizes) and prints its ratios."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_bench_io_runs(capsys) -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_io.py"
    spec = importlib.util.spec_from_file_location("bench_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--slices", "6", "--size", "32", "--repeat", "1", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.count("x |") == 3 and "SimpleITK ImageSeriesReader" in out
