"""The benchmark runner: discovery, a table with ratios, JSON results, and a failing benchmark that does not stop it."""

from __future__ import annotations

import json
import types

import pytest


def _fake(name: str, rows=None, error: Exception | None = None) -> types.ModuleType:
    mod = types.ModuleType(f"benchmarks.bench_{name}")
    mod.NAME = name

    def run(quick: bool = False):
        if error is not None:
            raise error
        return [dict(r, quick=quick) for r in rows]

    mod.run = run
    return mod


def test_runner_prints_table_and_writes_json(tmp_path, monkeypatch, capsys) -> None:
    import benchmarks.__main__ as runner
    from benchmarks.common import row

    good = _fake(
        "good",
        [
            row(
                "good",
                "a task",
                "s",
                2.0,
                "plain baseline",
                6.0,
                goal=2.0,
                peak_rss_mib_medimg=10.0,
                peak_rss_mib_baseline=20.0,
            )
        ],
    )
    bad = _fake("bad", error=RuntimeError("no data"))
    silent = types.ModuleType("benchmarks.bench_silent")  # an old-style script: main() only
    monkeypatch.setattr(runner, "discover", lambda: {"good": good, "bad": bad, "silent": silent})
    code = runner.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1  # one failed benchmark
    assert (
        "3.00x" in out
        and ">= 2x (not judged: --quick)" in out
        and "plain baseline" in out
        and "10 / 20" in out
    )
    assert "FAILED bad: RuntimeError: no data" in out and "skipped silent" in out
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["quick"] is True and doc["rows"][0]["quick"] is True
    assert doc["rows"][0]["ratio"] == pytest.approx(3.0)
    assert doc["machine"]["nproc"] >= 1 and "torch" in doc["machine"]
    assert len(list(tmp_path.glob("*-quick.json"))) == 1

    assert runner.main(["--only", "good", "--markdown", "--out", str(tmp_path)]) == 0
    assert "| good | a task | 2 s | plain baseline | 6 s | 3.00x | >= 2x met |" in capsys.readouterr().out


def test_runner_rejects_unknown_name(capsys) -> None:
    import benchmarks.__main__ as runner

    with pytest.raises(SystemExit):
        runner.main(["--only", "nope"])
    assert "unknown" in capsys.readouterr().err


def test_real_benchmarks_are_discovered() -> None:
    import benchmarks.__main__ as runner

    found = runner.discover()
    assert {"train", "infer", "cohort", "onnx"} <= set(found)
    assert all(callable(found[n].run) for n in ("train", "infer", "cohort", "onnx"))


def test_row_ratio_direction() -> None:
    from benchmarks.common import interleaved, row

    assert row("x", "t", "patches/s", 6.0, "b", 2.0, higher_is_better=True, goal=3.0)["goal_met"] is True
    assert row("x", "t", "s", 4.0, "b", 2.0, goal=1.0)["ratio"] == pytest.approx(0.5)
    res = interleaved({"a": lambda: 1, "b": lambda: 2}, repeat=2)
    assert len(res["a"]["times"]) == 2 and res["a"]["peak_mib"] > 0 and res["b"]["out"] == 2


def test_peak_memory_sees_a_touched_allocation() -> None:
    import mmap
    import time

    import numpy as np

    from benchmarks.common import PeakMemory, rss_bytes

    before = rss_bytes()
    with PeakMemory(interval_s=0.005) as peak:
        # fresh anonymous pages (a malloc could reuse memory freed earlier in the test session,
        # which is already resident), written so they count
        region = mmap.mmap(-1, 200 * 2**20)
        np.frombuffer(region, dtype=np.uint8)[:] = 1
        seen, deadline = peak.samples, time.monotonic() + 10
        while peak.samples < seen + 2 and time.monotonic() < deadline:  # two readings while it lives
            time.sleep(0.005)
        region.close()
    assert peak.peak >= before + 150 * 2**20


def test_inference_benchmark_outputs_agree(monkeypatch) -> None:
    """The end-to-end benchmark itself, on a tiny CT: both pipelines give the same answer."""
    from benchmarks import bench_infer

    (r,) = bench_infer.run(shape=(48, 40, 24), repeat=1)
    assert r["max_abs_diff_probs"] < 1e-4
    assert r["mask_voxels_differing"] < 1e-3
    assert r["medimg"] > 0 and r["baseline"] > 0 and r["sw_batch_size"] >= 1
    assert "sw_batch_size" in r["plan"]


@pytest.mark.slow
def test_quick_run_of_a_real_benchmark_in_its_own_process(tmp_path) -> None:
    """``python -m benchmarks --quick --only onnx``: the real command, its table and its JSON."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "onnx", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ONNX Runtime network" in proc.stdout and "torch (same network, fp32)" in proc.stdout
    (r,) = json.loads((tmp_path / "latest.json").read_text())["rows"]
    assert r["max_abs_diff_logits"] < 1e-4 and r["medimg"] > 0 and r["baseline"] > 0
    assert r["peak_rss_mib_medimg"] > 50
