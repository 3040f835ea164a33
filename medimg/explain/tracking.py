"""Cohort-level sanity numbers and their logging to the MLflow run a model came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medimg.explain.saliency import method_slug


def sanity_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method, the cohort mean of each sanity number found in the per-case ``rows``.

    ``mean_peak_in_structure`` is the fraction of cases (with a lesion/organ mask) whose map
    peaks inside the mask (the "pointing game").

    Example:
        >>> sanity_summary([{"methods": {"gradcam": {"spearman": 0.1}}}, {"methods": {"gradcam": {"spearman": 0.3}}}])
        {'gradcam': {'mean_spearman': 0.2}}
    """
    summary: dict[str, dict[str, float]] = {}
    per_method: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for method, m in row.get("methods", {}).items():
            for k in ("spearman", "ssim", "deletion_auc", "insertion_auc"):
                if m.get(k) is not None:
                    per_method.setdefault(method, {}).setdefault(k, []).append(float(m[k]))
            if m.get("peak_in_structure") is not None:  # the "pointing game"
                per_method.setdefault(method, {}).setdefault("peak_in_structure", []).append(
                    float(m["peak_in_structure"])
                )
    for method, values in per_method.items():
        summary[method] = {f"mean_{k}": float(np.mean(v)) for k, v in values.items()}
    return summary


def log_to_mlflow(run_id: str, out_dir: Path, sanity: dict[str, dict[str, float]]) -> None:
    """Log the explain outputs as artifacts (``explain/``) and the mean sanity numbers as metrics.

    Example:
        >>> log_to_mlflow(run_id, Path("out/explain"), result.sanity)  # doctest: +SKIP
    """
    import mlflow

    client = mlflow.MlflowClient()
    client.log_artifacts(run_id, str(out_dir), "explain")
    for method, values in sanity.items():
        for k, v in values.items():
            client.log_metric(run_id, f"explain.{method_slug(method)}.{k}", float(v))
