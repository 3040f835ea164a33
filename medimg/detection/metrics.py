"""Detection metrics: FROC (LUNA16 protocol), average precision at an IoU, sensitivity by size.

Every function takes, per scan, the true boxes and the predicted boxes (with scores) as corners
``(x1, y1, z1, x2, y2, z2)`` in millimetres along the scan's axes (voxel corners times spacing;
a rotation of the world frame, so distances and IoUs are those of the world).

- **FROC** (LUNA16): a detection is a hit when its centre lies inside the ellipsoid inscribed in a
  true box (for a round lesion: within its radius of the centre). At a score threshold, the
  sensitivity is the fraction of lesions hit by at least one detection at or above it; the false
  positives are the detections at or above it that hit no lesion (a second hit on a lesion is
  neither). The sensitivity at ``r`` false positives per scan is the highest sensitivity of any
  threshold with at most ``r`` per scan (0 when none); the FROC score is its mean over
  ``1/8, 1/4, 1/2, 1, 2, 4, 8``.
- **AP at IoU t**: detections of all scans in score order, each matched greedily to the unmatched
  true box of its scan with the highest IoU >= t; AP is the sum over distinct scores of the recall
  gain times the precision (non-interpolated, like scikit-learn's ``average_precision_score``),
  recall counted over every true box (a lesion never detected keeps AP below 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SIZE_BINS_MM = (0.0, 6.0, 10.0, 20.0, np.inf)


@dataclass(frozen=True)
class ScanBoxes:
    """True and predicted boxes of one scan (corners in mm along the scan's axes)."""

    truth: np.ndarray
    pred: np.ndarray
    scores: np.ndarray

    @classmethod
    def make(cls, truth: Sequence, pred: Sequence, scores: Sequence) -> ScanBoxes:
        """From lists (empty allowed)."""
        return cls(
            np.asarray(truth, float).reshape(-1, 6),
            np.asarray(pred, float).reshape(-1, 6),
            np.asarray(scores, float).reshape(-1),
        )


def centre_hits(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``(n_pred, n_truth)``: the prediction's centre is inside the truth box's inscribed ellipsoid."""
    if len(truth) == 0 or len(pred) == 0:
        return np.zeros((len(pred), len(truth)), bool)
    c_pred = (pred[:, None, :3] + pred[:, None, 3:]) / 2
    c_true = (truth[None, :, :3] + truth[None, :, 3:]) / 2
    half = np.maximum((truth[None, :, 3:] - truth[None, :, :3]) / 2, 1e-9)
    return (((c_pred - c_true) / half) ** 2).sum(-1) <= 1.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` intersection over union of corner boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lo = np.maximum(a[:, None, :3], b[None, :, :3])
    hi = np.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    vol_a = (a[:, 3:] - a[:, :3]).prod(-1)
    vol_b = (b[:, 3:] - b[:, :3]).prod(-1)
    return inter / (vol_a[:, None] + vol_b[None, :] - inter)


def froc_curve(scans: Sequence[ScanBoxes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, fp_per_scan, sensitivity)`` at every distinct score, highest first."""
    n_truth = sum(len(s.truth) for s in scans)
    scores, lesion, fp = [], [], []
    offset = 0
    for s in scans:
        hits = centre_hits(s.truth, s.pred)
        for k in range(len(s.pred)):
            scores.append(s.scores[k])
            found = np.flatnonzero(hits[k])
            lesion.append([offset + int(j) for j in found])
            fp.append(len(found) == 0)
        offset += len(s.truth)
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    thresholds, fps, sens = [], [], []
    seen: set[int] = set()
    n_fp = 0
    for rank, k in enumerate(order):
        n_fp += int(fp[k])
        seen.update(lesion[k])
        last = rank == len(order) - 1 or scores[order[rank + 1]] != scores[k]
        if last:
            thresholds.append(float(scores[k]))
            fps.append(n_fp / max(len(scans), 1))
            sens.append(len(seen) / n_truth if n_truth else float("nan"))
    return np.asarray(thresholds), np.asarray(fps), np.asarray(sens)


def froc(scans: Sequence[ScanBoxes], rates: Sequence[float] = FP_RATES) -> dict[str, float]:
    """Sensitivity at each false-positive rate per scan and their mean (``froc``).

    Example:
        >>> s = ScanBoxes.make([[0, 0, 0, 10, 10, 10]], [[1, 1, 1, 9, 9, 9], [50, 50, 50, 60, 60, 60]], [0.9, 0.8])
        >>> froc([s])["froc"]
        1.0
    """
    _, fps, sens = froc_curve(scans)
    out = {}
    for r in rates:
        ok = sens[fps <= r + 1e-12]
        out[f"sens@{r:g}"] = float(ok.max()) if ok.size else 0.0
    out["froc"] = float(np.mean([out[f"sens@{r:g}"] for r in rates]))
    return out


def average_precision(scans: Sequence[ScanBoxes], iou: float) -> float:
    """Average precision at IoU ``iou`` (see the module docstring); NaN without true boxes.

    Example:
        >>> s = ScanBoxes.make([[0, 0, 0, 10, 10, 10]], [[0, 0, 0, 10, 10, 9], [20, 20, 20, 30, 30, 30]], [0.9, 0.95])
        >>> round(average_precision([s], 0.5), 3)
        0.5
    """
    n_truth = sum(len(s.truth) for s in scans)
    if n_truth == 0:
        return float("nan")
    flags, scores = [], []
    for s in scans:
        overlap = box_iou(s.pred, s.truth)
        free = np.ones(len(s.truth), bool)
        for k in np.argsort(-s.scores, kind="stable"):
            cand = np.where(free & (overlap[k] >= iou), overlap[k], -1.0) if len(s.truth) else np.array([])
            hit = cand.size > 0 and cand.max() >= 0
            if hit:
                free[int(cand.argmax())] = False
            flags.append(hit)
            scores.append(s.scores[k])
    if not scores:
        return 0.0
    sc, fl = np.asarray(scores, float), np.asarray(flags, bool)
    ap, tp, n, prev_recall = 0.0, 0, 0, 0.0
    for value in np.unique(sc)[::-1]:
        at = sc == value
        tp += int(fl[at].sum())
        n += int(at.sum())
        recall = tp / n_truth
        ap += (recall - prev_recall) * (tp / n)
        prev_recall = recall
    return float(ap)


def operating_threshold(scans: Sequence[ScanBoxes], fp_per_scan: float = 1.0) -> float:
    """The lowest score threshold with at most ``fp_per_scan`` false positives per scan (inf: none)."""
    thresholds, fps, _ = froc_curve(scans)
    ok = thresholds[fps <= fp_per_scan + 1e-12]
    return float(ok.min()) if ok.size else float("inf")


def sensitivity_by_size(
    scans: Sequence[ScanBoxes], threshold: float, bins: Sequence[float] = SIZE_BINS_MM
) -> dict[str, dict[str, float]]:
    """Per size bin (largest box side in mm): lesions, lesions hit at ``threshold``, sensitivity."""
    sizes, hit = [], []
    for s in scans:
        keep = s.scores >= threshold
        hits = centre_hits(s.truth, s.pred[keep]).any(axis=0) if len(s.truth) else np.zeros(0, bool)
        sizes += list((s.truth[:, 3:] - s.truth[:, :3]).max(axis=1))
        hit += list(hits)
    out = {}
    sz, ht = np.asarray(sizes), np.asarray(hit, bool)
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = (sz >= lo) & (sz < hi)
        name = f"{lo:g}-{hi:g}mm" if np.isfinite(hi) else f">={lo:g}mm"
        n = int(sel.sum())
        out[name] = {
            "lesions": n,
            "hit": int(ht[sel].sum()),
            "sensitivity": float(ht[sel].mean()) if n else float("nan"),
        }
    return out
