"""Cross-validation and repeated seeds as child runs under one parent MLflow run.

The parent run logs, for each test metric, the mean, the standard deviation and a 95%
t-interval over the child runs, plus a CSV of every child's metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medimg.config.schema import Workflow
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_frame


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sd and the t-based confidence interval of ``values``.

    Example:
        >>> m, sd, lo, hi = t_interval([0.8, 0.9, 1.0])
        >>> round(m, 3), round(sd, 3), round(lo, 3), round(hi, 3)
        (0.9, 0.1, 0.652, 1.148)
    """
    from scipy import stats

    n = len(values)
    mean = float(sum(values) / n)
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def run_repeats(wf: Workflow, folds: int | None, seeds: Sequence[int]) -> tuple[str, pd.DataFrame]:
    """Run every (fold, seed) as a child run; return the parent run id and the per-child table.

    Example:
        >>> parent, table = run_repeats(wf, folds=5, seeds=[0])  # doctest: +SKIP
    """
    import mlflow

    from medimg.training.run import run_workflow
    from medimg.training.tracking import make_logger, resolve_tracking_uri

    uri = resolve_tracking_uri(wf.tracking.uri)
    parent_logger = make_logger(uri, wf.tracking.experiment, f"{wf.tracking.run_name or wf.name}-repeats")
    parent = parent_logger.run_id
    client = mlflow.MlflowClient(uri)
    client.log_param(parent, "repeats.folds", str(folds))
    client.log_param(parent, "repeats.seeds", ",".join(map(str, seeds)))
    rows = []
    base_out = Path(wf.outputs.dir)
    for fold in range(folds) if folds else [None]:
        for seed in seeds:
            tag = (f"fold{fold}_" if fold is not None else "") + f"seed{seed}"
            raw = json.loads(wf.model_dump_json())
            raw["seed"] = seed
            raw["outputs"]["dir"] = str(base_out / tag)
            raw["tracking"]["run_name"] = f"{wf.name}-{tag}"
            if fold is not None:
                raw["data"]["split"].update({"folds": folds, "fold": fold, "use_manifest_split": False})
            child = Workflow.model_validate(raw)
            res = run_workflow(child, parent_run_id=parent)
            rows.append({"fold": fold, "seed": seed, "run_id": res.run_id, **res.metrics})
    table = pd.DataFrame(rows)
    summary = {}
    for col in [c for c in table.columns if c.startswith("test_") and table[c].notna().all()]:
        mean, sd, lo, hi = t_interval(table[col].astype(float).tolist())
        summary[col] = {"mean": mean, "sd": sd, "ci95_low": lo, "ci95_high": hi}
        for suffix, v in (("mean", mean), ("sd", sd), ("ci95_low", lo), ("ci95_high", hi)):
            if v == v:
                client.log_metric(parent, f"{col}_{suffix}", v)
    base_out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base_out / "repeats.csv", escape_frame(table).to_csv(index=False))
    atomic_write_text(base_out / "repeats_summary.json", json.dumps(summary, indent=2))
    client.log_artifact(parent, str(base_out / "repeats.csv"))
    client.log_artifact(parent, str(base_out / "repeats_summary.json"))
    client.set_terminated(parent, "FINISHED")
    return parent, table
