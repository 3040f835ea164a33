"""Manifests: one row per case (image, label or class, patient key, split, metadata).

Read from a CSV or from a Medical Segmentation Decathlon / nnU-Net ``dataset.json``
folder. Every path is checked before training; a label is checked against its image
(shape and affine), so a mismatch stops the run before the first epoch with the names
of both files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from medimg.config.schema import DataConfig
from medimg.errors import DataError, GeometryError
from medimg.io.csvsafe import read_csv_unescaped
from medimg.io.load import check_label_grid, split_series_path
from medimg.tasks import get_task

REQUIRED = ("case_key", "patient_key", "image")


def _resolve(root: Path, value: str) -> str:
    p = Path(str(value))
    return str(p if p.is_absolute() else (root / p).resolve())


def read_msd(dataset_json: Path) -> pd.DataFrame:
    """Read a Decathlon (``training: [{image, label}]``) or nnU-Net v2 (``imagesTr/*_0000``) dataset.

    Example:
        >>> df = read_msd(Path("Task09_Spleen/dataset.json"))  # doctest: +SKIP
    """
    try:
        meta = json.loads(dataset_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{dataset_json}: cannot read dataset.json ({exc})") from exc
    root = dataset_json.parent
    rows = []
    if isinstance(meta.get("training"), list):  # Decathlon layout
        for item in meta["training"]:
            if not isinstance(item, dict) or "image" not in item:
                raise DataError(f"{dataset_json}: each 'training' entry needs 'image' (and 'label')")
            img = str(item["image"])
            key = Path(img).name.split(".")[0]
            rows.append({"case_key": key, "patient_key": key, "image": img, "label": item.get("label", "")})
    elif "channel_names" in meta or "file_ending" in meta:  # nnU-Net v2 layout
        ending = meta.get("file_ending", ".nii.gz")
        for img in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
            key = img.name[: -len(f"_0000{ending}")]
            rows.append(
                {
                    "case_key": key,
                    "patient_key": key,
                    "image": str(img),
                    "label": str(root / "labelsTr" / f"{key}{ending}"),
                }
            )
    else:
        raise DataError(f"{dataset_json}: expected a Decathlon 'training' list or nnU-Net 'file_ending'")
    if not rows:
        raise DataError(f"{dataset_json}: no training cases found")
    return pd.DataFrame(rows)


def read_manifest(cfg: DataConfig, task: str) -> pd.DataFrame:
    """Read and check the manifest named in ``cfg``; return absolute paths and a ``target`` column.

    For segmentation ``target`` is the label path; for classification an ``int`` class.

    Example:
        >>> df = read_manifest(workflow.data, "segmentation")  # doctest: +SKIP
    """
    path = Path(cfg.manifest)
    df = _read_table(path, cfg)
    df = _standard_columns(df, path, cfg)
    _check_columns(df, path, cfg)
    root = Path(cfg.root) if cfg.root else path.parent
    df = df.copy()
    df["image"] = [_resolve(root, v) for v in df["image"]]
    df["patient_key"] = df["patient_key"].astype(str)
    if get_task(task).target == "mask":  # a label image, its path resolved like the image's
        df["target"] = [_resolve(root, v) for v in df[cfg.label_column]]
    else:
        df["target"] = _class_targets(df, path, cfg)
    _check_files(df, path, task, cfg.check_geometry, cfg.nifti_affine)
    return df.reset_index(drop=True)


def _read_table(path: Path, cfg: DataConfig) -> pd.DataFrame:
    """The manifest as read: an MSD ``dataset.json`` or a CSV (formula escapes undone)."""
    if not path.exists():
        raise DataError(f"{path}: manifest not found (data.manifest; expected a CSV or a dataset.json)")
    if path.suffix == ".json":
        df = read_msd(path)
        return df.rename(columns={"label": cfg.label_column}) if cfg.label_column != "label" else df
    try:
        return read_csv_unescaped(path, dtype={cfg.patient_column: str})  # scan escapes formulas
    except Exception as exc:
        raise DataError(f"{path}: cannot read manifest CSV ({exc})") from exc


def _standard_columns(df: pd.DataFrame, path: Path, cfg: DataConfig) -> pd.DataFrame:
    """Rename the configured patient and image columns; fill ``case_key`` and ``patient_key`` when absent."""
    if cfg.patient_column != "patient_key" and cfg.patient_column in df:
        df = df.rename(columns={cfg.patient_column: "patient_key"})
    if cfg.image_column != "image":
        if cfg.image_column not in df:
            raise DataError(
                f"{path}: column {cfg.image_column!r} (data.image_column) not found; "
                f"columns are {list(df.columns)}"
            )
        df = df.rename(columns={"image": "_image_orig"}) if "image" in df else df
        df = df.rename(columns={cfg.image_column: "image"})
    if "case_key" not in df and "image" in df:
        df["case_key"] = [f"case_{i:05d}" for i in range(len(df))]
    if "patient_key" not in df and "case_key" in df:
        df["patient_key"] = df["case_key"]
    return df


def _check_columns(df: pd.DataFrame, path: Path, cfg: DataConfig) -> None:
    """The required and label columns are there, and no ``case_key`` repeats."""
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; a manifest needs {list(REQUIRED)} "
            f"and {cfg.label_column!r} (data.label_column)"
        )
    if cfg.label_column not in df:
        raise DataError(
            f"{path}: label column {cfg.label_column!r} (data.label_column) not found; "
            f"columns are {list(df.columns)}"
        )
    if df["case_key"].duplicated().any():
        dup = df.loc[df["case_key"].duplicated(), "case_key"].iloc[0]
        raise DataError(f"{path}: case_key {dup!r} appears more than once")


def _class_targets(df: pd.DataFrame, path: Path, cfg: DataConfig) -> pd.Series:
    """The label column as integer classes in ``0..num_classes-1``."""
    try:
        target = df[cfg.label_column].astype(int)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: column {cfg.label_column!r} must hold integer classes ({exc})") from exc
    bad = df.loc[(target < 0) | (target >= cfg.num_classes), "case_key"]
    if len(bad):
        raise DataError(
            f"{path}: case {bad.iloc[0]!r}: class outside 0..{cfg.num_classes - 1} (data.num_classes)"
        )
    return target


def _header_geometry(path: str, affine_policy: str = "refuse") -> tuple[tuple[int, ...], np.ndarray]:
    from medimg.io.load import read_nifti_geometry

    shape, affine = read_nifti_geometry(path, affine_policy)
    return shape[:3], affine


def _check_files(
    df: pd.DataFrame, manifest: Path, task: str, check_geometry: bool, affine_policy: str = "refuse"
) -> None:
    mask = get_task(task).target == "mask"
    cols = ["image", "target"] if mask else ["image"]
    for row in df.itertuples():
        for col in cols:
            p, _key = split_series_path(getattr(row, col))  # a scan manifest's folder#series_key
            if not p.exists():
                what = "label" if col == "target" else col
                raise DataError(f"{manifest}: case {row.case_key!r}: {what} file not found: {p}")
        if mask and check_geometry and not split_series_path(row.image)[0].is_dir():
            try:
                image = _header_geometry(row.image, affine_policy)
                label = _header_geometry(row.target, affine_policy)
                check_label_grid(image, label, str(row.image), str(row.target))
            except GeometryError as exc:
                raise GeometryError(f"case {row.case_key!r}: {exc}") from None


def manifest_hash(
    df: pd.DataFrame, columns: tuple[str, ...] = ("case_key", "patient_key", "image", "target")
) -> str:
    """sha256 over the manifest's identifying columns (order independent of row order)."""
    cols = [c for c in columns if c in df]
    text = df[cols].astype(str).sort_values(cols).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()
