"""Synthetic studies with known ground truth, for quickstarts, tests and benchmarks.

Each case is a small "abdomen": a body, an organ (label 1), a second organ (label 2)
and, in about half of the cases, a bright lesion inside organ 1 that decides the
case's class (1 = lesion present). Grids are anisotropic and oblique (rotated away
from the scanner axes), with noise and a smooth multiplicative bias field, so every
geometry bug shows. Structures are placed in millimetres (world space), so the same
anatomy is imaged on differently oriented grids. Deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.config.schema import SyntheticData
from medimg.io.atomic import atomic_write_text
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

SITES = ("site_a", "site_b")
MANUFACTURERS = ("VendorA", "VendorB")


@dataclass
class SyntheticCase:
    """One generated case: image, label map (0/1/2), lesion mask, class and metadata."""

    case_key: str
    patient_key: str
    image: Volume
    label: Volume
    lesion: Volume
    cls: int
    meta: dict[str, object]


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotation about ``axis`` by ``angle_deg`` (Rodrigues' formula)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def oblique_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    angle_deg: float,
    axis: tuple[float, float, float] = (1.0, 0.4, 0.2),
) -> np.ndarray:
    """A RAS affine for an oblique, anisotropic grid centred on the world origin.

    Example:
        >>> A = oblique_affine((10, 10, 5), (1.0, 1.0, 3.0), 15.0)
        >>> np.round(np.linalg.norm(A[:3, :3], axis=0), 6).tolist()
        [1.0, 1.0, 3.0]
    """
    rot = rotation_matrix(np.array(axis), angle_deg)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


@dataclass(frozen=True)
class SyntheticGrid:
    """The grid of a synthetic study's cases: voxels per axis, voxel size in mm, and how far it
    tilts away from the scanner axes (each case draws its own tilt, 0.6 to 1.4 times
    ``oblique_deg``, about its own axis).

    Example:
        >>> grid = SyntheticGrid((10, 10, 5), (1.0, 1.0, 3.0), 15.0)
        >>> A = grid.case_affine(np.random.default_rng(0))
        >>> np.round(np.linalg.norm(A[:3, :3], axis=0), 6).tolist()
        [1.0, 1.0, 3.0]
    """

    shape: tuple[int, int, int] = (64, 64, 40)
    spacing: tuple[float, float, float] = (1.6, 1.6, 2.5)
    oblique_deg: float = 12.0

    @classmethod
    def of(cls, spec: SyntheticData) -> SyntheticGrid:
        """The grid a workflow's ``data.synthetic`` section describes."""
        return cls(spec.shape, spec.spacing, spec.oblique_deg)

    def case_affine(self, rng: np.random.Generator) -> np.ndarray:
        """One case's oblique RAS affine, its tilt and axis drawn from ``rng``."""
        angle = self.oblique_deg * (0.6 + 0.8 * rng.random())
        axis = tuple(rng.normal(size=3) + np.array([1.0, 0.5, 0.2]))
        return oblique_affine(self.shape, self.spacing, angle, axis=axis)


def world_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """The world (RAS mm) position of every voxel of a ``shape`` grid, ``(*shape, 3)`` float32."""
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)


def _ellipsoid(world: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    d = (world - centre.astype(np.float32)) / radii.astype(np.float32)
    return (d**2).sum(-1) <= 1.0


def make_case(
    index: int, seed: int = 0, grid: SyntheticGrid | None = None, with_lesion: bool | None = None
) -> SyntheticCase:
    """Generate case ``index`` of the study with ``seed``.

    Example:
        >>> c = make_case(0, seed=1, grid=SyntheticGrid(shape=(32, 32, 20)))
        >>> c.image.shape == c.label.shape == (32, 32, 20)
        True
    """
    grid = grid or SyntheticGrid()
    shape = grid.shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    affine = grid.case_affine(rng)
    world = world_points(shape, affine)
    fov = np.array(shape) * np.array(grid.spacing)
    scale = float(min(fov)) / 100.0  # anatomy scales with the field of view
    body, organ1, organ2, c1, r1 = _anatomy(rng, world, scale)
    has_lesion = bool(rng.random() < 0.5) if with_lesion is None else with_lesion
    lesion = np.zeros(shape, bool)
    if has_lesion:
        offset = rng.uniform(-0.45, 0.45, size=3) * r1
        rad = rng.uniform(6.0, 8.0) * scale
        lesion = _ellipsoid(world, c1 + offset, np.array([rad, rad, rad])) & organ1
    image = _intensities(rng, world, scale, shape, (body, organ1, organ2, lesion))
    label = np.zeros(shape, np.uint8)
    label[organ1] = 1
    label[organ2] = 2
    patient = f"P{(index * 5) // 6:04d}"  # about one patient in five has two scans
    return SyntheticCase(
        case_key=f"case_{index:04d}",
        patient_key=patient,
        image=Volume(image.astype(np.float32), affine),
        label=Volume(label, affine),
        lesion=Volume(lesion.astype(np.uint8), affine),
        cls=int(has_lesion),
        meta=_case_meta(rng, index),
    )


def _anatomy(
    rng: np.random.Generator, world: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Body, organ 1 and organ 2 (inside the body, not overlapping), and organ 1's centre and radii."""
    jitter = lambda s: rng.normal(scale=s * scale, size=3)  # noqa: E731
    body = _ellipsoid(world, jitter(2), np.array([46, 40, 60]) * scale)
    c1 = np.array([-14.0, 2.0, 0.0]) * scale + jitter(3)
    r1 = np.array([22.0, 17.0, 19.0]) * scale * (1 + 0.1 * rng.normal(size=3)).clip(0.8, 1.2)
    organ1 = _ellipsoid(world, c1, r1) & body
    c2 = np.array([22.0, 6.0, -6.0]) * scale + jitter(3)
    r2 = np.array([11.0, 10.0, 15.0]) * scale * (1 + 0.1 * rng.normal(size=3)).clip(0.8, 1.2)
    organ2 = _ellipsoid(world, c2, r2) & body & ~organ1
    return body, organ1, organ2, c1, r1


def _intensities(
    rng: np.random.Generator,
    world: np.ndarray,
    scale: float,
    shape: tuple[int, int, int],
    regions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """CT-like values per region (body, organ 1, organ 2, lesion), a smooth bias field inside the body and noise."""
    body, organ1, organ2, lesion = regions
    image = np.where(body, 40.0, -900.0).astype(np.float32)
    image[organ1] = 120.0
    image[organ2] = 220.0
    image[lesion] = 320.0
    bias_coef = rng.normal(scale=0.08, size=3)
    bias = 1.0 + (world / (50.0 * scale)) @ bias_coef.astype(np.float32)
    return image * np.where(body, bias, 1.0) + rng.normal(scale=18.0, size=shape).astype(np.float32)


def _case_meta(rng: np.random.Generator, index: int) -> dict[str, object]:
    """Site (alternating), manufacturer, sex and age, for subgroup analyses."""
    return {
        "site": SITES[index % 2],
        "manufacturer": MANUFACTURERS[int(rng.random() < 0.5)],
        "sex": "F" if rng.random() < 0.5 else "M",
        "age": int(rng.integers(25, 85)),
    }


def write_synthetic_study(
    out_dir: str | Path, cases: int = 24, seed: int = 0, grid: SyntheticGrid | None = None
) -> Path:
    """Write ``cases`` NIfTI cases and a ``manifest.csv`` into ``out_dir``; return the manifest path.

    The manifest has one row per case: ``case_key, patient_key, image, label`` (mask path),
    ``class`` (lesion present), ``lesion`` (mask path) and metadata columns
    (``site, manufacturer, sex, age``). Paths are relative to ``out_dir``.

    Example:
        >>> manifest = write_synthetic_study("data/synth", cases=8, seed=0)  # doctest: +SKIP
    """
    out = Path(out_dir)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    rows = ["case_key,patient_key,image,label,class,lesion,site,manufacturer,sex,age"]
    for i in range(cases):
        c = make_case(i, seed, grid, with_lesion=(i % 2 == 0))
        d = f"cases/{c.case_key}"
        save_nifti(c.image, out / d / "image.nii.gz")
        save_nifti(c.label, out / d / "label.nii.gz", dtype=np.uint8)
        save_nifti(c.lesion, out / d / "lesion.nii.gz", dtype=np.uint8)
        m = c.meta
        rows.append(
            f"{c.case_key},{c.patient_key},{d}/image.nii.gz,{d}/label.nii.gz,{c.cls},"
            f"{d}/lesion.nii.gz,{m['site']},{m['manufacturer']},{m['sex']},{m['age']}"
        )
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, "\n".join(rows) + "\n")
    return manifest


def write_configured_study(out_dir: str | Path, spec: SyntheticData) -> Path:
    """:func:`write_synthetic_study` as a workflow's ``data.synthetic`` section describes it.

    Example:
        >>> write_configured_study("data/synth", SyntheticData(cases=8))  # doctest: +SKIP
    """
    return write_synthetic_study(out_dir, spec.cases, spec.seed, SyntheticGrid.of(spec))
