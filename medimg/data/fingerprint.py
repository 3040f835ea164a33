"""The dataset fingerprint: what a study's data looks like, read once before planning it.

Every case's header gives its grid (shape and voxel size, in RAS axis order, so the numbers
match ``preprocessing.spacing`` after the pipeline's reorientation); a bounded, evenly spread
sample of cases is read whole for intensities (percentiles inside the foreground, label > 0,
as nnU-Net) and, for segmentation, label volumes and connected components per class. A
classification manifest also gives its class balance. The fingerprint is plain JSON: sorted
keys, rounded numbers, case keys as the manifest has them and no file path, so the same data
gives the same file (``fingerprint_hash``) and nothing identifying leaves the data.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medimg.errors import DataError

FORMAT = 1
CT_NAMES = ("CT",)
MR_NAMES = ("MR", "MRI", "T1", "T1W", "T2", "T2W", "FLAIR", "ADC", "DWI", "PD", "T1GD", "T1CE", "MPRAGE")


@dataclass(frozen=True)
class Case:
    """One case as the fingerprint reads it: key, image, and a label path or class (or nothing)."""

    key: str
    image: str
    target: str | int | None = None


def round_sig(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits (stable JSON across platforms).

    Example:
        >>> round_sig(0.70000000001), round_sig(1234567.8)
        (0.7, 1234570.0)
    """
    return float(f"{float(value):.{digits}g}")


def _rounded(values: Any) -> list[float]:
    return [round_sig(v) for v in values]


def ras_grid(shape: tuple[int, ...], affine: np.ndarray) -> tuple[list[int], list[float]]:
    """Shape and voxel size ordered by the world axis (R, A, S) each voxel axis runs closest to.

    Example:
        >>> ras_grid((10, 20, 30), np.diag([0.7, 5.0, 0.8, 1.0]))
        ([10, 20, 30], [0.7, 5.0, 0.8])
        >>> ras_grid((10, 20, 30), np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]]))
        ([30, 10, 20], [2.0, 1.0, 3.0])
    """
    from nibabel.orientations import io_orientation

    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    order = [0, 0, 0]
    for voxel_axis, (world_axis, _flip) in enumerate(io_orientation(affine)):
        order[int(world_axis)] = voxel_axis
    return [int(shape[v]) for v in order], [float(spacing[v]) for v in order]


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    return _rounded(np.percentile(values, qs)) if values.size else []


def _summary(rows: list[list[float]]) -> dict[str, list[float]]:
    """Median, 10th percentile, min and max per axis."""
    a = np.asarray(rows, dtype=float)
    return {
        "median": _rounded(np.median(a, axis=0)),
        "p10": _rounded(np.percentile(a, 10, axis=0)),
        "min": _rounded(a.min(axis=0)),
        "max": _rounded(a.max(axis=0)),
    }


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``).

    Example:
        >>> sample_indices(10, 4), sample_indices(3, 5)
        ([0, 3, 6, 9], [0, 1, 2])
    """
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def modality_name(text: str) -> str:
    """``CT``, ``MR`` or ``""`` (unknown) for a modality as a manifest or dataset.json writes it.

    Example:
        >>> modality_name("MRI"), modality_name("ct"), modality_name("PET")
        ('MR', 'CT', '')
    """
    t = str(text).strip().upper()
    return "CT" if t in CT_NAMES else "MR" if t in MR_NAMES else ""


def header_record(case: Case) -> dict[str, Any]:
    """``case_key``, ``shape`` and ``spacing`` (RAS order) from the image's header (a DICOM series is read)."""
    from medimg.io.load import is_nifti, load_image, read_nifti_geometry, split_series_path

    path, _key = split_series_path(case.image)
    if path.is_file() and is_nifti(path):
        shape, affine = read_nifti_geometry(path)
    else:
        vol = load_image(case.image)
        shape, affine = tuple(vol.shape), vol.affine
    ras_shape, ras_spacing = ras_grid(shape, affine)
    return {"case_key": case.key, "shape": ras_shape, "spacing": _rounded(ras_spacing)}


class CaseIntensities(NamedTuple):
    """What one sampled case adds to the fingerprint."""

    values: np.ndarray  # foreground values (every k-th)
    low: float  # the image's 0.5th percentile
    zero_fraction: float
    classes: dict[int, tuple[float, int]]  # label value -> (volume ml, 26-connected components)
    constant_nonzero: bool  # every non-zero voxel holds the same value (a binary image)


def case_intensities(case: Case, voxels_per_case: int, with_label: bool) -> CaseIntensities:
    """One sampled case: its foreground values, 0.5th percentile, zero fraction, classes, binary or not.

    The classes map each label value to its volume (ml) and connected components (26-connected).
    """
    from scipy import ndimage

    from medimg.io.load import load_image

    vol = load_image(case.image)
    image = np.asarray(vol.data, dtype=np.float32)
    image = image[..., 0] if image.ndim == 4 else image  # the first channel of a 4D image
    zero_fraction = float(np.mean(image == 0))
    classes: dict[int, tuple[float, int]] = {}
    mask = None
    if with_label and isinstance(case.target, str):
        label = np.asarray(load_image(case.target).data)
        label = np.rint(label[..., 0] if label.ndim == 4 else label).astype(np.int64)
        voxel_ml = float(np.prod(vol.spacing[:3])) / 1000.0
        structure = ndimage.generate_binary_structure(3, 3)
        for value in sorted(int(v) for v in np.unique(label) if v > 0):
            region = label == value
            _, n_components = ndimage.label(region, structure=structure)
            classes[value] = (float(region.sum()) * voxel_ml, int(n_components))
        mask = label > 0
    values = image[mask] if mask is not None and mask.any() else image.ravel()
    step = max(1, values.size // voxels_per_case)
    nonzero = image[image != 0]
    constant = bool(nonzero.size and nonzero.min() == nonzero.max())
    return CaseIntensities(values[::step], float(np.percentile(image, 0.5)), zero_fraction, classes, constant)


def fingerprint_cases(
    cases: list[Case],
    task: str,
    modality: str = "",
    max_intensity_cases: int = 16,
    voxels_per_case: int = 10000,
    source: str = "",
    label_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """The fingerprint of ``cases`` (see the module docstring); a JSON-ready dict.

    Example:
        >>> fp = fingerprint_cases([Case("c0", "c0/image.nii.gz", "c0/label.nii.gz")], "segmentation")  # doctest: +SKIP
        >>> fp["spacing"]["median"]  # doctest: +SKIP
        [1.0, 1.0, 1.0]
    """
    if not cases:
        raise DataError(f"{source or 'data'}: no cases to fingerprint")
    from medimg.tasks import get_task

    mask_task = get_task(task).target == "mask"
    cases = sorted(cases, key=lambda c: c.key)
    headers = [header_record(c) for c in cases]
    sample = [cases[i] for i in sample_indices(len(cases), max_intensity_cases)]
    read = [case_intensities(case, voxels_per_case, mask_task) for case in sample]
    per_class: dict[int, list[tuple[float, int]]] = {}
    for one in read:
        for value, stats in one.classes.items():
            per_class.setdefault(value, []).append(stats)
    voxels = np.concatenate([one.values for one in read]).astype(np.float64)
    lows, zeros = [one.low for one in read], [one.zero_fraction for one in read]
    fp: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "task": task,
        "n_cases": len(cases),
        "cases": headers,
        "spacing": _summary([h["spacing"] for h in headers]),
        "shape": _summary([[float(s) for s in h["shape"]] for h in headers]),
        "intensity": {
            "sampled_cases": [c.key for c in sample],
            "region": "foreground (label > 0)" if mask_task else "whole image",
            "percentiles": dict(zip(("p00_5", "p01", "p50", "p99", "p99_5"), _percentiles(voxels, (0.5, 1, 50, 99, 99.5)), strict=True)),
            "mean": round_sig(voxels.mean()),
            "std": round_sig(voxels.std()),
            "zero_fraction_median": round_sig(float(np.median(zeros))),
            "constant_nonzero_fraction": round_sig(float(np.mean([one.constant_nonzero for one in read]))),
        },
    }  # fmt: skip
    fp["intensity"]["image_p00_5_median"] = round_sig(float(np.median(lows)))
    fp["modality"], fp["modality_from"] = _modality(modality, float(np.median(lows)))
    if mask_task:
        fp["labels"] = _label_stats(per_class, len(sample), label_names or {})
    else:
        counts = Counter(int(c.target) for c in cases if c.target is not None and str(c.target) != "")
        fp["classes"] = {str(k): counts[k] for k in sorted(counts)}
    return fp


def _modality(declared: str, image_low: float) -> tuple[str, str]:
    """The declared modality, else CT when the images' darkest voxels look like air in HU (< -500)."""
    if modality_name(declared):
        return modality_name(declared), "declared"
    if image_low < -500:
        return "CT", "intensities (images' 0.5th percentile below -500: Hounsfield units)"
    return "MR", "intensities (not Hounsfield units; treated like MR: per-case z-score)"


def _label_stats(
    per_class: dict[int, list[tuple[float, int]]], n_sampled: int, names: dict[int, str]
) -> dict:
    """Per class: name, share of sampled cases holding it, volume (ml) and components (median, max)."""
    out = {}
    for value in sorted(set(per_class) | {v for v in names if v > 0}):
        stats = per_class.get(value, [])
        vols = np.asarray([s[0] for s in stats] or [0.0])
        comps = np.asarray([s[1] for s in stats] or [0])
        out[str(value)] = {
            "name": names.get(value, f"label_{value}"),
            "present_fraction": round_sig(len(stats) / max(1, n_sampled)),
            "volume_ml": {"median": round_sig(np.median(vols)), "min": round_sig(vols.min()), "max": round_sig(vols.max())},
            "components": {"median": round_sig(np.median(comps)), "max": int(comps.max())},
        }  # fmt: skip
    return out


def fingerprint_hash(fp: dict[str, Any]) -> str:
    """sha256 of the fingerprint's canonical JSON (the plan records it).

    Example:
        >>> fingerprint_hash({"a": 1}) == fingerprint_hash({"a": 1})
        True
    """
    return hashlib.sha256(fingerprint_json(fp).encode()).hexdigest()


def fingerprint_json(fp: dict[str, Any]) -> str:
    """The canonical JSON text: sorted keys, two-space indent, a final newline."""
    return json.dumps(fp, indent=2, sort_keys=True) + "\n"


def write_fingerprint(fp: dict[str, Any], path: str | Path) -> Path:
    """Write the fingerprint JSON atomically; return its path."""
    from medimg.io.atomic import atomic_write_text

    atomic_write_text(Path(path), fingerprint_json(fp))
    return Path(path)


def read_fingerprint(path: str | Path) -> dict[str, Any]:
    """Read a fingerprint JSON written by :func:`write_fingerprint`, naming the file on error."""
    p = Path(path)
    try:
        fp = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{p}: cannot read the fingerprint JSON (data.fingerprint; {exc})") from exc
    if not isinstance(fp, dict) or fp.get("format") != FORMAT:
        raise DataError(f"{p}: not a medimg fingerprint (data.fingerprint; expected 'format': {FORMAT})")
    return fp


def dataset_cases(
    data: str | Path, task: str, label_column: str = "label", image_column: str = "image"
) -> tuple[list[Case], str, dict[int, str]]:
    """The cases of a manifest CSV, a dataset.json (or its folder) or a DICOM root.

    Returns the cases, the declared modality (``""`` when none) and label names. A manifest is
    read and checked by :func:`medimg.data.manifest.read_manifest` (every file exists, every
    label on its image's grid). A DICOM root is scanned (:func:`medimg.io.scan.scan`); its
    series have no labels.

    Raises:
        DataError: ``data`` does not exist or is none of these (naming it and what was expected).
    """
    path = Path(data)
    if path.is_dir() and (path / "dataset.json").is_file():
        path = path / "dataset.json"
    if not path.exists():
        raise DataError(f"{path}: not found (expected a manifest CSV, a dataset.json or a DICOM folder)")
    if path.is_dir():
        return _dicom_cases(path)
    from medimg.config.schema import DataConfig
    from medimg.data.manifest import read_manifest

    cfg = DataConfig(
        manifest=str(path), label_column=label_column, image_column=image_column, num_classes=1_000_000
    )
    df = read_manifest(cfg, task)
    cases = [Case(str(r.case_key), str(r.image), r.target) for r in df.itertuples()]
    modality, names = "", {}
    if "modality" in df and df["modality"].notna().any():
        modality = Counter(str(m) for m in df["modality"].dropna()).most_common(1)[0][0]
    if path.suffix == ".json":
        modality, names = _msd_meta(path)
    return cases, modality, names


def _msd_meta(path: Path) -> tuple[str, dict[int, str]]:
    """The first channel's modality and the label names of a Decathlon or nnU-Net v2 dataset.json."""
    meta = json.loads(path.read_text())
    channels = meta.get("modality") or meta.get("channel_names") or {}
    modality = str(channels.get("0", "")) if isinstance(channels, dict) else ""
    labels = meta.get("labels") or {}
    names: dict[int, str] = {}
    for k, v in labels.items() if isinstance(labels, dict) else ():
        if str(k).lstrip("-").isdigit():  # Decathlon: {"1": "name"}
            names[int(k)] = str(v)
        elif isinstance(v, int):  # nnU-Net v2: {"name": 1}
            names[v] = str(k)
    return modality, names


def _dicom_cases(root: Path) -> tuple[list[Case], str, dict[int, str]]:
    """The usable series under a DICOM root, keyed by their pseudonymous series key."""
    from medimg.io.scan import scan

    result = scan(root, nifti=False)
    if not result.manifest:
        raise DataError(f"{root}: no usable DICOM series found (expected a folder of DICOM series)")
    cases = [Case(str(r["series_key"]), str(r["image"])) for r in result.manifest]
    modality = Counter(str(r.get("modality", "")) for r in result.manifest).most_common(1)[0][0]
    return cases, modality, {}


def fingerprint_dataset(
    data: str | Path,
    task: str,
    label_column: str = "label",
    image_column: str = "image",
    max_intensity_cases: int = 16,
    voxels_per_case: int = 10000,
) -> dict[str, Any]:
    """Fingerprint the dataset at ``data`` (a manifest CSV, a dataset.json or a DICOM root).

    Every case's header is read; ``max_intensity_cases`` cases (spread evenly over the sorted
    case keys) are read whole for intensities and label statistics, ``voxels_per_case``
    foreground voxels from each.

    Example:
        >>> fp = fingerprint_dataset("data/synth/manifest.csv", "segmentation")  # doctest: +SKIP
        >>> fp["n_cases"], fp["modality"]  # doctest: +SKIP
        (24, 'CT')
    """
    cases, modality, names = dataset_cases(data, task, label_column, image_column)
    return fingerprint_cases(
        cases,
        task,
        modality=modality,
        max_intensity_cases=max_intensity_cases,
        voxels_per_case=voxels_per_case,
        source=Path(data).name,
        label_names=names,
    )
