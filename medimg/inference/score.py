"""Score a trained model on labelled cases, in each case's original geometry.

Segmentation masks are predicted back onto the source grid and compared with the
reference label there (Dice, HD95 and the full set from :mod:`medimg.evaluation`);
classification yields the class probabilities, the prediction and whether it is right.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config.schema import Workflow
from medimg.inference.predictor import Prediction, Predictor
from medimg.inference.writers import write_mask
from medimg.io.load import check_label_grid, load_image
from medimg.tasks import get_task

log = logging.getLogger(__name__)
META_SKIP = {"image", "label", "target", "lesion", "class", "split"}


def score_cases(predictor: Predictor, cases: pd.DataFrame, masks_dir: Path | None = None) -> pd.DataFrame:
    """One row per case: metrics (segmentation) or probability/prediction/correct (classification).

    Manifest metadata columns (site, sex, ...) are carried over for subgroup analysis.
    A case that fails is kept with its ``error`` text; the others go on.

    Example:
        >>> per_case = score_cases(Predictor(net, wf), df[df.split == "test"])  # doctest: +SKIP
    """
    wf = predictor.wf
    masks = get_task(wf.task).target == "mask"  # scored by overlap with the label image, else by class
    rows = []
    for row in cases.itertuples(index=False):
        rec: dict[str, object] = {"case_key": row.case_key, "patient_key": row.patient_key}
        for col in cases.columns:
            if col not in META_SKIP and col not in rec:
                rec[col] = getattr(row, col)
        t0 = time.perf_counter()
        try:
            pred = predictor.predict_path(str(row.image), str(row.case_key))
            if masks:
                rec.update(_segmentation_scores(pred, row, wf, masks_dir))
            else:
                rec.update(_classification_scores(pred, row))
        except Exception as exc:  # one bad case never takes the cohort down
            log.error("case %s failed: %s", row.case_key, exc)
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(rec)
    return pd.DataFrame(rows)


def _segmentation_scores(
    pred: Prediction, row: Any, wf: Workflow, masks_dir: Path | None
) -> dict[str, object]:
    """Per-label metrics against the reference label (same grid), their means; the mask saved if asked."""
    from medimg.evaluation.seg_metrics import segmentation_case_metrics

    rec: dict[str, object] = {}
    ref = load_image(str(row.target)).to_space("RAS")  # the strict reader, as for images
    check_label_grid((pred.source_shape, pred.source_affine), ref, str(row.image), str(row.target))
    assert pred.mask is not None
    labels = [k for k in wf.data.labels if k != 0]
    m = segmentation_case_metrics(pred.mask, np.asarray(ref.data).astype(np.int64), ref.spacing, labels)
    rec.update(m)
    rec["dice_mean"] = float(np.nanmean([m[f"dice_{k}"] for k in labels]))
    rec["hd95_mean"] = float(np.nanmean([m[f"hd95_{k}"] for k in labels]))
    if masks_dir is not None:
        write_mask(pred.mask_volume(), masks_dir / f"{row.case_key}.nii.gz")
    return rec


def _classification_scores(pred: Prediction, row: Any) -> dict[str, object]:
    """Label, predicted class, probability (of class 1, or the top one), per-class probabilities, correct."""
    assert pred.probs is not None
    label = int(row.target)
    rec: dict[str, object] = {
        "label": label,
        "prediction": int(pred.probs.argmax()),
        "prob": float(pred.probs[1]) if len(pred.probs) == 2 else float(pred.probs.max()),
    }
    for k, p in enumerate(pred.probs):
        rec[f"prob_{k}"] = float(p)
    rec["correct"] = int(rec["prediction"] == label)
    return rec


def summarise(per_case: pd.DataFrame, task: str) -> dict[str, float]:
    """Headline numbers of a scored split (mean Dice/HD95, or AUROC/accuracy)."""
    ok = per_case[per_case["error"].isna()] if "error" in per_case else per_case
    out: dict[str, float] = {"n_cases": float(len(per_case)), "n_failed": float(len(per_case) - len(ok))}
    if get_task(task).target == "mask":
        for col in [c for c in ok.columns if c.startswith(("dice_", "hd95_"))]:
            out[f"test_{col}"] = float(np.nanmean(ok[col].astype(float))) if len(ok) else float("nan")
    else:
        from medimg.evaluation.cls_metrics import classification_metrics

        if len(ok) and ok["label"].nunique() > 1:
            probs = ok[[c for c in ok.columns if c.startswith("prob_")]].to_numpy()
            prob = probs[:, 1] if probs.shape[1] == 2 else probs
            m = classification_metrics(ok["label"].to_numpy().astype(int), prob)
            out.update({f"test_{k}": float(v) for k, v in m.items() if isinstance(v, (int, float))})
        out["test_accuracy"] = float(ok["correct"].mean()) if len(ok) else float("nan")
    return out
