"""``task: anomaly``: train on normal cases, map and score every case, choose the threshold on validation.

The map of a case is ``|smooth(image - reconstruction)| / (normal_sd + floor)``: the smoothed
residual of the autoencoder, divided by how large that residual is, voxel by voxel, on normal
cases (``normal_sd``, the root mean square of the smoothed residual over the normal cases of the
training and validation splits, smoothed once more). Edges and other places the autoencoder
reconstructs imperfectly even on normal anatomy are damped; a residual where normal cases have
none stands out. The case score is the map's maximum (``anomaly.score``); the threshold is a
quantile of the normal validation cases' scores (``anomaly.threshold_quantile``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medimg.config.generative import GenerativeWorkflow
from medimg.generative.anomaly_maps import case_score, map_on_source_grid, residual, smooth

log = logging.getLogger(__name__)


@dataclass
class GridCase:
    """One preprocessed case: the image on the model grid and both geometries (RAS)."""

    key: str
    image: torch.Tensor  # (C, X, Y, Z) on the model grid
    grid_affine: np.ndarray
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.grid_affine[:3, :3], axis=0))


def preprocess(wf: GenerativeWorkflow, path: str, key: str) -> GridCase:
    """Read ``path`` with medimg's strict reader and the workflow's deterministic preprocessing.

    Example:
        >>> case = preprocess(wf, "case_0001/image.nii.gz", "case_0001")  # doctest: +SKIP
        >>> tuple(case.image.shape[1:]) == tuple(wf.preprocessing.spatial_size)  # doctest: +SKIP
        True
    """
    from monai.transforms import Compose

    from medimg.data.transforms import deterministic_transforms

    item = Compose(deterministic_transforms(wf, ("image",), with_label=False))({"image": path})
    img = item["image"]
    meta = img.meta
    return GridCase(
        key=key,
        image=img.as_tensor().float(),
        grid_affine=np.asarray(img.affine, dtype=np.float64),
        source_shape=tuple(int(s) for s in np.asarray(meta["spatial_shape"]).ravel()[:3]),  # type: ignore[arg-type]
        source_affine=np.asarray(meta["original_affine"], dtype=np.float64),
    )


@dataclass
class AnomalyModel:
    """The trained autoencoder, the normal residual level per voxel, and the case threshold."""

    net: nn.Module
    normal_sd: np.ndarray
    floor: float
    sigma_mm: float
    score: str
    threshold: float = float("nan")

    def grid_map(self, case: GridCase) -> np.ndarray:
        """The anomaly map of one case on the model grid."""
        r = smooth(residual(self.net, case.image), self.sigma_mm, case.spacing)
        return np.abs(r) / (self.normal_sd + self.floor)

    def source_map(self, case: GridCase) -> np.ndarray:
        """The anomaly map on the case's own voxels (its shape and affine)."""
        return map_on_source_grid(
            self.grid_map(case), case.grid_affine, case.source_shape, case.source_affine
        )

    def case_score(self, source_map: np.ndarray) -> float:
        return case_score(source_map, self.score)


def normal_level(net: nn.Module, normals: list[GridCase], sigma_mm: float) -> tuple[np.ndarray, float]:
    """``(normal_sd, floor)``: the RMS smoothed residual of normal cases per voxel, and a floor.

    The floor (half the mean of ``normal_sd``) keeps the ratio finite where normal cases have
    no residual at all (air, padding).
    """
    if not normals:
        raise ValueError("normal_level needs at least one normal case")
    sq = np.zeros(tuple(normals[0].image.shape[1:]), np.float64)
    for case in normals:
        sq += smooth(residual(net, case.image), sigma_mm, case.spacing).astype(np.float64) ** 2
    sd = smooth(np.sqrt(sq / len(normals)).astype(np.float32), sigma_mm, normals[0].spacing)
    return sd, float(0.5 * sd.mean()) + 1e-6


def choose_threshold(normal_scores: list[float], quantile: float) -> float:
    """The ``quantile`` of the normal validation cases' scores (``nan`` without any).

    Example:
        >>> choose_threshold([1.0, 2.0, 3.0, 4.0], 0.5)
        2.5
    """
    return float(np.quantile(normal_scores, quantile)) if normal_scores else float("nan")


def case_metrics(per_case: pd.DataFrame, threshold: float) -> dict[str, float]:
    """Case-level AUROC (both classes needed), sensitivity and specificity at ``threshold``.

    Example:
        >>> df = pd.DataFrame({"target": [0, 0, 1, 1], "score": [0.1, 0.2, 0.8, 0.9]})
        >>> case_metrics(df, 0.5)["auroc"]
        1.0
    """
    from medimg.evaluation.cls_metrics import auroc

    y, s = per_case["target"].to_numpy(int), per_case["score"].to_numpy(float)
    out: dict[str, float] = {"n_cases": float(len(y)), "n_abnormal": float(y.sum())}
    if 0 < y.sum() < len(y):
        out["auroc"] = auroc(y, s)
    if np.isfinite(threshold):
        flagged = s > threshold
        if y.sum():
            out["sensitivity"] = float(flagged[y == 1].mean())
        if (y == 0).any():
            out["specificity"] = float((~flagged[y == 0]).mean())
    return out


def voxel_auprc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Average precision of the voxels' map values against the lesion masks (all cases pooled).

    Example:
        >>> m = np.zeros((4, 4, 4)); m[0, 0, 0] = 1; k = m > 0
        >>> voxel_auprc([m], [k])
        1.0
    """
    from medimg.evaluation.cls_metrics import auprc

    y = np.concatenate([k.reshape(-1) for k in masks]).astype(bool)
    s = np.concatenate([m.reshape(-1) for m in maps]).astype(np.float32)
    return auprc(y, s)


def summary(per_case: pd.DataFrame) -> dict[str, Any]:
    """Peak-in-lesion rate over abnormal cases with a mask (``nan`` without any)."""
    hits = per_case["peak_in_lesion"].dropna() if "peak_in_lesion" in per_case else pd.Series([], dtype=float)
    return {"peak_in_lesion_rate": float(hits.astype(float).mean()) if len(hits) else float("nan")}
