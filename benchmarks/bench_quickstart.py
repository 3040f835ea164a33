"""The README's quickstarts, end to end, against the targets the project promises.

Runs ``medimg run`` on both shipped workflows in a temporary folder (synthetic data,
caching, training, test scoring in source geometry, MLflow logging) and reports wall
time against the 5-minute target and test quality against its targets (Dice 0.85,
AUROC 0.9). Here the "baseline" column is the target, so a ratio above 1 means the
target is met. Peak memory is the resident set of this process (training runs in it) and
its children. ``--quick`` runs one epoch of each (time only, quality not judged).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "quickstart"
ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; return result rows (see ``benchmarks.common.row``)."""
    from benchmarks.common import PeakMemory, row
    from medimg.cli.main import main

    extra = ["--set", "trainer.max_epochs=1"] if quick else []
    rows, total, peaks = [], 0.0, []
    with tempfile.TemporaryDirectory(prefix="bench_quickstart_") as tmp:
        old = os.getcwd()
        os.chdir(tmp)
        try:
            for name, metric, target in (("seg", "test_dice_mean", 0.85), ("cls", "test_auroc", 0.9)):
                t0 = time.perf_counter()
                with (
                    PeakMemory() as peak,
                    open(os.devnull, "w") as sink,
                    contextlib.redirect_stdout(sink),
                ):
                    rc = main(["run", str(ROOT / f"workflows/quickstart_{name}.yaml"), *extra])
                seconds = time.perf_counter() - t0
                peaks.append(peak.mib)
                total += seconds
                summary = json.loads(Path(f"runs/quickstart_{name}/test_summary.json").read_text())
                rows.append(
                    row(
                        NAME,
                        f"quickstart_{name}: {metric} on the test split",
                        metric,
                        summary[metric],
                        "target",
                        target,
                        higher_is_better=True,
                        goal=None if quick else 1.0,
                        exit_code=rc,
                        wall_s=round(seconds, 1),
                        peak_rss_mib_medimg=peak.mib,
                        **{k: summary[k] for k in ("test_accuracy", "test_brier") if k in summary},
                    )
                )
        finally:
            os.chdir(old)
    rows.append(
        row(
            NAME,
            "both quickstarts, wall time (data, training, scoring, MLflow)",
            "s",
            total,
            "target: 5 minutes",
            300.0,
            goal=None if quick else 1.0,
            peak_rss_mib_medimg=max(peaks, default=float("nan")),
        )
    )
    return rows
