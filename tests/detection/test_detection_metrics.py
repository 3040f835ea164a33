"""FROC and AP agree with independent brute-force definitions (and scikit-learn) on fixed boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from medimg.detection.metrics import (
    FP_RATES,
    ScanBoxes,
    average_precision,
    froc,
    sensitivity_by_size,
)
from medimg.detection.scoring import score_detection


def _fixed_scans(seed: int = 7, n_scans: int = 12) -> list[ScanBoxes]:
    """Lesions of 3-24 mm; detections near some lesions (jittered, resized) and false positives."""
    rng = np.random.default_rng(seed)
    scans = []
    for _ in range(n_scans):
        truth, pred = [], []
        for _ in range(int(rng.integers(0, 4))):
            c, s = rng.uniform(0, 100, 3), rng.uniform(3, 24, 3)
            truth.append([*(c - s / 2), *(c + s / 2)])
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections of this lesion
                pc = c + rng.normal(scale=0.12, size=3) * s
                ps = s * rng.uniform(0.75, 1.3, 3)
                pred.append([*(pc - ps / 2), *(pc + ps / 2)])
        for _ in range(int(rng.integers(0, 5))):
            c, s = rng.uniform(0, 100, 3), rng.uniform(3, 15, 3)
            pred.append([*(c - s / 2), *(c + s / 2)])
        scans.append(ScanBoxes.make(truth, pred, rng.random(len(pred))))
    return scans


def _inside(centre: np.ndarray, box: np.ndarray) -> bool:
    total = 0.0
    for axis in range(3):
        mid = (box[axis] + box[axis + 3]) / 2
        half = (box[axis + 3] - box[axis]) / 2
        total += ((centre[axis] - mid) / half) ** 2
    return total <= 1.0


def _reference_froc(scans: list[ScanBoxes], rates=FP_RATES) -> dict[str, float]:
    """By definition: for every threshold, count lesions hit and non-hitting detections, by loops."""
    n_truth = sum(len(s.truth) for s in scans)
    thresholds = sorted({float(v) for s in scans for v in s.scores})
    points = []
    for t in thresholds:
        hit_lesions, fps = 0, 0
        for s in scans:
            kept = [p for p, sc in zip(s.pred, s.scores, strict=True) if sc >= t]
            centres = [(p[:3] + p[3:]) / 2 for p in kept]
            for truth in s.truth:
                hit_lesions += any(_inside(c, truth) for c in centres)
            fps += sum(not any(_inside(c, truth) for truth in s.truth) for c in centres)
        points.append((fps / len(scans), hit_lesions / n_truth))
    out = {}
    for r in rates:
        out[f"sens@{r:g}"] = max([sens for fp, sens in points if fp <= r], default=0.0)
    out["froc"] = sum(out[f"sens@{r:g}"] for r in rates) / len(rates)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter, va, vb = 1.0, 1.0, 1.0
    for axis in range(3):
        inter *= max(0.0, min(a[axis + 3], b[axis + 3]) - max(a[axis], b[axis]))
        va *= a[axis + 3] - a[axis]
        vb *= b[axis + 3] - b[axis]
    return inter / (va + vb - inter)


def _reference_ap(scans: list[ScanBoxes], threshold: float) -> float:
    """Greedy matching by loops, then scikit-learn's AP scaled to recall over every true box."""
    flags, scores = [], []
    for s in scans:
        taken: set[int] = set()
        for k in sorted(range(len(s.pred)), key=lambda i: -s.scores[i]):
            best, best_iou = None, threshold
            for j, truth in enumerate(s.truth):
                v = _iou(s.pred[k], truth)
                if j not in taken and v >= best_iou and (best is None or v > best_iou):
                    best, best_iou = j, v
            if best is not None:
                taken.add(best)
            flags.append(best is not None)
            scores.append(s.scores[k])
    n_truth = sum(len(s.truth) for s in scans)
    if not any(flags):
        return 0.0
    return average_precision_score(flags, scores) * sum(flags) / n_truth


def test_froc_matches_the_brute_force_definition() -> None:
    for seed in (7, 8, 9):
        scans = _fixed_scans(seed)
        ours, ref = froc(scans), _reference_froc(scans)
        assert ours.keys() == ref.keys()
        for key in ref:
            assert abs(ours[key] - ref[key]) < 1e-12, (seed, key)
        assert 0.0 < ours["froc"] < 1.0


def test_ap_matches_scikit_learn_at_iou_01_and_05() -> None:
    for seed in (7, 8, 9):
        scans = _fixed_scans(seed)
        for iou in (0.1, 0.5):
            ours, ref = average_precision(scans, iou), _reference_ap(scans, iou)
            assert abs(ours - ref) < 1e-12, (seed, iou)
            assert 0.0 < ours < 1.0


def test_hand_counted_case() -> None:
    # two scans, three lesions; scores chosen so every operating point is counted by hand
    a = ScanBoxes.make(
        [[0, 0, 0, 10, 10, 10], [40, 40, 40, 46, 46, 46]],
        [[1, 1, 1, 9, 9, 9], [70, 70, 70, 80, 80, 80], [2, 2, 2, 10, 10, 10]],
        [0.9, 0.8, 0.3],
    )
    b = ScanBoxes.make([[0, 0, 0, 20, 20, 20]], [[50, 50, 50, 60, 60, 60], [5, 5, 5, 15, 15, 15]], [0.7, 0.6])
    # thresholds 0.9: 1 lesion, 0 FP; 0.8: 1 lesion, 1 FP (0.5/scan); 0.7: 2 FP (1/scan);
    # 0.6: 2 lesions, 2 FP; 0.3: the second hit of lesion 1 adds nothing
    result = froc([a, b])
    assert result["sens@0.125"] == result["sens@0.25"] == 1 / 3
    assert result["sens@0.5"] == 1 / 3 and result["sens@1"] == 2 / 3 and result["sens@8"] == 2 / 3
    assert abs(result["froc"] - (3 / 3 + 4 * 2 / 3) / 7) < 1e-12
    # AP at 0.5: detections in score order TP (IoU .512), FP, FP, TP (IoU 0.125 < .5: FP), ...
    assert abs(average_precision([a, b], 0.1) - _reference_ap([a, b], 0.1)) < 1e-12
    by_size = sensitivity_by_size([a, b], threshold=0.6)
    assert by_size["6-10mm"] == {"lesions": 1, "hit": 0, "sensitivity": 0.0}
    assert by_size["10-20mm"] == {"lesions": 1, "hit": 1, "sensitivity": 1.0}
    assert by_size[">=20mm"] == {"lesions": 1, "hit": 1, "sensitivity": 1.0}


def test_patient_bootstrap_intervals_hold_the_estimate() -> None:
    scans = _fixed_scans(11, n_scans=16)
    patients = [f"p{i // 2}" for i in range(16)]
    report = score_detection(scans, patients, n_boot=100, seed=1)
    for key in ("froc", "ap@0.1", "ap@0.5", "sens@1"):
        ci = report["ci"][key]
        assert ci["low"] <= report["scores"][key] <= ci["high"] and ci["low"] < ci["high"]
        assert ci["n_valid"] == 100
    again = score_detection(scans, patients, n_boot=100, seed=1)
    assert again["ci"] == report["ci"]
    assert report["lesions"] == sum(len(s.truth) for s in scans)
    assert set(pd.Series(patients)) == {f"p{i}" for i in range(8)}
