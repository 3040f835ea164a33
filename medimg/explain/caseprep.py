"""Turning a case on disk into what the explainers need: the model input and both geometries.

A ``preprocess`` callable (a trained model's own, or :func:`default_preprocess`) returns the
``(C, D, H, W)`` tensor on the model grid and a meta dict with the grid affine and the source
image's shape and affine, so that maps can be written back onto the scan's own voxels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medimg.errors import DataError
from medimg.explain.cases import ExplainCase
from medimg.explain.geometry import map_to_source_grid

Preprocess = Callable[[str], tuple[torch.Tensor, dict[str, Any]]]


@dataclass
class PreparedCase:
    """A case ready to explain: ``tensor`` is ``(1, C, D, H, W)``; affines are RAS."""

    key: str
    tensor: torch.Tensor
    affine: np.ndarray
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    reference: int | None = None
    structure: np.ndarray | None = None


def default_preprocess(path: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """Load an image (NIfTI or DICOM folder) and z-score it on its own grid.

    Example:
        >>> tensor, meta = default_preprocess("case_001.nii.gz")  # doctest: +SKIP
        >>> tensor.shape[0], meta["source_shape"]  # doctest: +SKIP
        (1, (64, 64, 40))
    """
    from medimg.io.load import load_image

    vol = load_image(path)
    data = np.asarray(vol.data, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D image, got shape {data.shape}")
    data = (data - data.mean()) / (data.std() + 1e-6)
    affine = vol.affine_in("RAS")
    meta = {"affine": affine, "source_affine": affine, "source_shape": vol.shape}
    return torch.as_tensor(data)[None], meta


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def prepare_case(
    case: ExplainCase, preprocess: Preprocess, device: torch.device | str | None = None
) -> PreparedCase:
    """Run ``preprocess`` on the case's image, check the geometry meta, resample its mask to the grid.

    Example:
        >>> prepared = prepare_case(ExplainCase("c1", "c1.nii.gz"), default_preprocess)  # doctest: +SKIP
    """
    path = str(case.image)
    if not Path(path.split("#")[0]).exists():
        raise DataError(f"{path}: image not found (case {case.key})")
    tensor, meta = preprocess(path)
    tensor = torch.as_tensor(tensor).float()
    if tensor.ndim != 4:
        raise DataError(f"{path}: preprocessing gave shape {tuple(tensor.shape)}, expected (C, D, H, W)")
    missing = [k for k in ("affine", "source_affine", "source_shape") if k not in meta]
    if missing:
        raise DataError(
            f"{path}: preprocessing meta lacks {missing} (needed to write maps in source geometry)"
        )
    affine = _as_array(meta["affine"])
    source_shape = tuple(int(s) for s in tuple(meta["source_shape"])[:3])
    source_affine = _as_array(meta["source_affine"])
    structure = None
    if case.mask is not None:
        structure = mask_on_grid(case.mask, tuple(int(s) for s in tensor.shape[1:]), affine)
    if device is not None:
        tensor = tensor.to(device)
    return PreparedCase(
        case.key, tensor[None], affine, source_shape, source_affine, case.reference, structure
    )  # type: ignore[arg-type]


def mask_on_grid(
    mask_path: str | os.PathLike[str], grid_shape: tuple[int, ...], grid_affine: np.ndarray
) -> np.ndarray:
    """Load a lesion/organ mask (any geometry) and resample it (nearest) onto the model grid.

    Example:
        >>> m = mask_on_grid("case_001_lesion.nii.gz", (96, 96, 96), grid_affine)  # doctest: +SKIP
    """
    from medimg.io.load import load_image

    vol = load_image(mask_path)
    data = np.asarray(vol.data, dtype=np.float32) > 0
    return (
        map_to_source_grid(data.astype(np.float32), vol.affine_in("RAS"), grid_shape, grid_affine, order=0)
        > 0.5
    )
