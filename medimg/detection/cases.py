"""The boxes of a manifest's cases: from a box file (world mm) or from label-mask components."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medimg.detection.boxes import VoxelBox, WorldBox, boxes_from_mask, read_box_file, world_to_voxel
from medimg.errors import DataError
from medimg.io.load import check_label_grid, load_image
from medimg.io.volume import Volume


@dataclass
class DetectionSample:
    """One case: its keys, the image and its true boxes on the image's own grid."""

    case_key: str
    patient_key: str
    image: Volume
    boxes: list[VoxelBox]


def load_samples(
    frame: pd.DataFrame,
    root: Path,
    *,
    image_column: str = "image",
    box_file: str | Path | None = None,
    mask_column: str | None = None,
) -> list[DetectionSample]:
    """Read every case of ``frame`` with its boxes (exactly one of ``box_file`` / ``mask_column``).

    Example:
        >>> samples = load_samples(df, Path("data"), box_file="data/boxes.csv")  # doctest: +SKIP
    """
    if (box_file is None) == (mask_column is None):
        raise DataError("detection: set exactly one of detection.box_file and detection.mask_column")
    by_case: dict[str, list[WorldBox]] = {}
    if box_file is not None:
        path = Path(box_file) if Path(box_file).is_absolute() else root / box_file
        by_case = read_box_file(path)
        unknown = sorted(set(by_case) - set(frame["case_key"].astype(str)))
        if unknown and len(unknown) == len(by_case):
            raise DataError(f"{path}: no case_key of the box file is in the manifest (e.g. {unknown[0]!r})")
    for col in (image_column, *([mask_column] if mask_column else [])):
        if col not in frame:
            raise DataError(f"manifest has no column '{col}' (columns: {list(frame.columns)})")
    samples = []
    for _, row in frame.iterrows():
        image_path = root / str(row[image_column])
        image = load_image(image_path)
        if mask_column is not None:
            mask_path = root / str(row[mask_column])
            mask = load_image(mask_path)
            check_label_grid(image, mask, str(image_path), str(mask_path))
            boxes = boxes_from_mask(mask)
        else:
            boxes = [world_to_voxel(w, image) for w in by_case.get(str(row["case_key"]), [])]
        samples.append(DetectionSample(str(row["case_key"]), str(row["patient_key"]), image, boxes))
    return samples
