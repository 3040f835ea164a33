"""Synthetic cohorts for the evaluation tests: real masks through real metrics, known group effects."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from medimg.evaluation.seg_metrics import segmentation_case_metrics

SPACING = (0.8, 0.8, 2.5)


def _case(rng: np.random.Generator, worse: bool, empty_pred: bool = False) -> dict[str, float]:
    """An ellipsoid lesion phantom and a prediction; the 'worse' scanner gives eroded, shifted predictions."""
    ref = np.zeros((20, 20, 10), np.uint8)
    c = rng.integers(8, 12, 3)
    r = rng.integers(4, 6)
    zz, yy, xx = np.ogrid[:20, :20, :10]
    ref[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + ((xx - c[2] // 2) * 3) ** 2) <= r**2] = 1
    pred = np.roll(ref, rng.integers(0, 2), axis=0)
    if worse:
        pred = np.roll(ndimage.binary_erosion(pred, iterations=1).astype(np.uint8), 1, axis=1)
    if empty_pred:
        pred[:] = 0
    return segmentation_case_metrics(pred, ref, SPACING, labels=[1])


def make_seg_cohort(n: int = 48, seed: int = 0, n_empty: int = 0) -> pd.DataFrame:
    """``n`` cases, one per patient, alternating VendorA / VendorB (B deliberately worse)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        vendor = "VendorB" if i % 2 else "VendorA"
        metrics = _case(rng, worse=vendor == "VendorB", empty_pred=i < n_empty)
        rows.append(
            {"case_key": f"case{i:03d}", "patient_key": f"pat{i:03d}", "manufacturer": vendor, **metrics}
        )
    return pd.DataFrame(rows)


def make_cls_cohort(n: int = 300, seed: int = 0, worse_noise: float = 0.5) -> pd.DataFrame:
    """Binary classification cohort; the model is noisier for sex 'M'."""
    rng = np.random.default_rng(seed)
    sex = np.where(np.arange(n) % 2 == 0, "F", "M")
    y = rng.integers(0, 2, n)
    noise = np.where(sex == "M", worse_noise, 0.12)
    prob = np.clip(0.5 * y + 0.25 + rng.normal(0, 1, n) * noise, 0, 1)
    return pd.DataFrame(
        {"case_key": [f"c{i:03d}" for i in range(n)], "patient_key": [f"p{i // 2:03d}" for i in range(n)],
         "sex": sex, "label": y, "prob": prob}
    )  # fmt: skip


@pytest.fixture
def seg_cohort() -> Callable[..., pd.DataFrame]:
    return make_seg_cohort


@pytest.fixture
def cls_cohort() -> Callable[..., pd.DataFrame]:
    return make_cls_cohort
