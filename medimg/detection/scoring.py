"""A detection run's scores: FROC, AP at IoU 0.1 and 0.5, sensitivity by size, patient bootstrap CIs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medimg.detection.boxes import VoxelBox
from medimg.detection.metrics import (
    ScanBoxes,
    average_precision,
    froc,
    operating_threshold,
    sensitivity_by_size,
)
from medimg.evaluation.bootstrap import Resampling, bootstrap_ci
from medimg.io.volume import Volume


def scan_boxes(truth: Sequence[VoxelBox], pred: Sequence[VoxelBox], volume: Volume) -> ScanBoxes:
    """True and predicted voxel boxes of one scan as corners in mm along its axes."""
    scale = np.tile(np.asarray(volume.spacing[:3], float), 2)
    return ScanBoxes.make(
        [np.asarray(b.corners()) * scale for b in truth],
        [np.asarray(b.corners()) * scale for b in pred],
        [b.score for b in pred],
    )


def detection_scores(scans: Sequence[ScanBoxes]) -> dict[str, float]:
    """FROC (each rate and the mean) and AP at IoU 0.1 and 0.5.

    Example:
        >>> s = ScanBoxes.make([[0, 0, 0, 8, 8, 8]], [[0, 0, 0, 8, 8, 8]], [0.9])
        >>> detection_scores([s])["ap@0.5"]
        1.0
    """
    return {**froc(scans), "ap@0.1": average_precision(scans, 0.1), "ap@0.5": average_precision(scans, 0.5)}


def score_detection(
    scans: Sequence[ScanBoxes],
    patient_keys: Sequence[str],
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores, their patient-level bootstrap CIs (95%) and sensitivity by size at 1 FP per scan.

    Example:
        >>> report = score_detection(scans, patients, n_boot=200)  # doctest: +SKIP
        >>> report["scores"]["froc"], report["ci"]["froc"]["low"]  # doctest: +SKIP
    """
    frame = pd.DataFrame({"patient_key": list(patient_keys), "row": np.arange(len(scans))})

    def statistic(f: pd.DataFrame) -> dict[str, float]:
        return detection_scores([scans[int(r)] for r in f["row"]])

    ci = bootstrap_ci(frame, statistic, Resampling(n_boot=n_boot, seed=seed))
    threshold = operating_threshold(scans, 1.0)
    return {
        "scores": detection_scores(scans),
        "ci": {k: v.to_dict() for k, v in ci.items()},
        "threshold_1fp": threshold,
        "sensitivity_by_size": sensitivity_by_size(scans, threshold),
        "scans": len(scans),
        "lesions": int(sum(len(s.truth) for s in scans)),
        "n_boot": n_boot,
    }
