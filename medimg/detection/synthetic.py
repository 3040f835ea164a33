"""A synthetic detection study: several round lesions of varied size per case, on oblique grids.

Each case is a noisy "body" with an organ and 1 to ``max_lesions`` bright spherical lesions
(diameters 5 to 16 mm, placed in world millimetres inside the organ, apart from each other) on an
oblique, anisotropic grid. The truth is written twice: ``boxes.csv`` (the world centre and the
diameter of every lesion, the box-file format of :mod:`medimg.detection.boxes`) and a lesion mask
per case (connected components, for ``boxes_from_mask``). Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.data.synthetic import SyntheticGrid, world_points
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

DIAMETER_MM = (5.0, 16.0)
DETECTION_GRID = SyntheticGrid((48, 48, 24), (1.5, 1.5, 3.0), 15.0)  # the detection cases' default grid


@dataclass
class DetectionCase:
    """One generated case: image, lesion mask and the true lesions (world centre mm, diameter mm)."""

    case_key: str
    patient_key: str
    image: Volume
    mask: Volume
    centres_mm: np.ndarray
    diameters_mm: np.ndarray


def _place_lesions(rng: np.random.Generator, n: int, organ_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` lesion centres inside the organ ellipsoid, at least their radii + 3 mm apart."""
    centres: list[np.ndarray] = []
    diameters: list[float] = []
    for _ in range(200):
        if len(centres) == n:
            break
        d = float(rng.uniform(*DIAMETER_MM))
        c = rng.uniform(-1, 1, size=3) * (organ_r - d / 2 - 2)
        if ((c / (organ_r - d / 2 - 2)) ** 2).sum() > 1:
            continue
        if all(np.linalg.norm(c - o) > (d + od) / 2 + 3 for o, od in zip(centres, diameters, strict=True)):
            centres.append(c)
            diameters.append(d)
    return np.array(centres).reshape(-1, 3), np.array(diameters)


def make_detection_case(
    index: int, seed: int = 0, grid: SyntheticGrid = DETECTION_GRID, max_lesions: int = 4
) -> DetectionCase:
    """Generate case ``index`` of the detection study with ``seed``.

    Example:
        >>> c = make_detection_case(0, seed=1)
        >>> c.image.shape, len(c.centres_mm) >= 1
        ((48, 48, 24), True)
    """
    shape = grid.shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 21]))
    affine = grid.case_affine(rng)
    world = world_points(shape, affine)
    fov = np.array(shape) * np.array(grid.spacing)
    organ_r = np.minimum(fov * 0.42, np.array([34.0, 30.0, 30.0])) * (1 + 0.05 * rng.normal(size=3))
    body = ((world / (fov * 0.55).astype(np.float32)) ** 2).sum(-1) <= 1
    organ = ((world / organ_r.astype(np.float32)) ** 2).sum(-1) <= 1
    centres, diameters = _place_lesions(rng, int(rng.integers(1, max_lesions + 1)), organ_r)
    image = np.where(body, 40.0, -600.0).astype(np.float32)
    image[organ] = 100.0
    mask = np.zeros(shape, np.uint8)
    for n, (c, d) in enumerate(zip(centres, diameters, strict=True), start=1):
        dist = np.linalg.norm(world - c.astype(np.float32), axis=-1)
        lesion = dist <= d / 2
        mask[lesion] = n
        # a soft edge, so a lesion smaller than a voxel still shows
        image += (np.clip(d / 2 + 0.5 - dist, 0, 1) * 160.0).astype(np.float32)
    image += rng.normal(scale=20.0, size=shape).astype(np.float32)
    return DetectionCase(
        case_key=f"case_{index:04d}",
        patient_key=f"P{(index * 5) // 6:04d}",
        image=Volume(image, affine),
        mask=Volume(mask, affine),
        centres_mm=centres,
        diameters_mm=diameters,
    )


def write_detection_study(
    out_dir: str | Path, cases: int = 30, seed: int = 0, grid: SyntheticGrid = DETECTION_GRID
) -> Path:
    """Write the cases (NIfTI), ``boxes.csv`` and ``manifest.csv`` into ``out_dir``; return the manifest.

    The manifest has ``case_key, patient_key, image, mask`` (paths relative to ``out_dir``);
    ``boxes.csv`` has ``case_key, x, y, z, diameter`` (world RAS mm).

    Example:
        >>> manifest = write_detection_study("data/synth-det", cases=6)  # doctest: +SKIP
    """
    out = Path(out_dir)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    rows = ["case_key,patient_key,image,mask"]
    boxes = ["case_key,x,y,z,diameter"]
    for i in range(cases):
        c = make_detection_case(i, seed, grid)
        d = f"cases/{c.case_key}"
        save_nifti(c.image, out / d / "image.nii.gz")
        save_nifti(c.mask, out / d / "mask.nii.gz", dtype=np.uint8)
        rows.append(f"{c.case_key},{c.patient_key},{d}/image.nii.gz,{d}/mask.nii.gz")
        boxes += [
            f"{c.case_key},{x:.4f},{y:.4f},{z:.4f},{dia:.4f}"
            for (x, y, z), dia in zip(c.centres_mm, c.diameters_mm, strict=True)
        ]
    atomic_write_text(out / "boxes.csv", "\n".join(boxes) + "\n")
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, "\n".join(rows) + "\n")
    return manifest
