"""What ``medimg run --check`` verifies: the workflow's numbers and every case's files.

Everything training would trip over, found before it starts and said in one line per
problem: a range that makes no sense (spacing 0, a patch of size 0, a CT window whose
low end is not below its high end, a negative label value), an image that is not a
3D volume, a folder with no DICOM series, NaN voxels, a mask off its image's grid or
holding a value that is not in ``data.labels``. Images are read with medimg's strict
reader, exactly as training reads them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from medimg.config.schema import Workflow
from medimg.errors import ConfigError, DataError, MedimgError
from medimg.io.volume import Volume
from medimg.tasks import get_task

MAX_LISTED = 20


def check_ranges(wf: Workflow) -> None:
    """Refuse workflow values the schema's types allow but no study can use, naming the key.

    Example:
        >>> check_ranges(wf)  # doctest: +SKIP
    """
    problems: list[str] = []
    triples = {
        "preprocessing.spacing": wf.preprocessing.spacing,
        "preprocessing.spatial_size": wf.preprocessing.spatial_size,
        "augmentation.patch_size": wf.augmentation.patch_size,
        "inference.roi_size": wf.inference.roi_size,
    }
    if wf.data.synthetic is not None:
        triples["data.synthetic.spacing"] = wf.data.synthetic.spacing
        triples["data.synthetic.shape"] = wf.data.synthetic.shape
    for key, value in triples.items():
        if value is not None and not all(v > 0 for v in value):
            problems.append(f"{key} = {list(value)}: every value must be > 0")
    low, high = wf.preprocessing.intensity.window
    if not low < high:
        problems.append(f"preprocessing.intensity.window = [{low}, {high}]: expected low < high")
    negative = [k for k in wf.data.labels if int(k) < 0]
    if negative:
        problems.append(f"data.labels: value(s) {negative} are negative; label values are 0, 1, 2, ...")
    values = sorted(int(k) for k in wf.data.labels)
    one_channel_per_label = get_task(wf.task).channels == "labels"
    if one_channel_per_label and values and not negative and values != list(range(len(values))):
        problems.append(
            f"data.labels values {values}: expected 0 (background) to {len(values) - 1} with no gap; "
            "the network has one output channel per label"
        )
    if problems:
        raise ConfigError("workflow: " + "; ".join(problems))


def check_case_files(wf: Workflow, df: pd.DataFrame) -> None:
    """Read every case's image (and mask) as training will, and refuse with all problems listed.

    Raises:
        DataError: one line per bad case (``case <key>: <file>: <reason>``), up to 20 listed.

    Example:
        >>> check_case_files(wf, prepare_data(wf))  # doctest: +SKIP
    """
    problems: list[str] = []
    for row in df.itertuples():
        try:
            _check_case(wf, row)
        except MedimgError as exc:
            problems.append(f"case {row.case_key!r}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{len(problems)} of {len(df)} cases cannot be used:\n  {shown}{more}")


def _read(wf: Workflow, path: str, channels: int = 1) -> Volume:
    from medimg.data.loading import check_channels
    from medimg.io.load import load_image

    vol = load_image(path, allow_nonfinite=wf.data.nonfinite == "zero", affine_policy=wf.data.nifti_affine)
    check_channels(path, tuple(vol.shape), 3, channels)
    return vol


def _check_case(wf: Workflow, row: Any) -> None:
    from medimg.data.loading import label_values_outside
    from medimg.io.load import check_label_grid

    image_path = str(row.image)
    image = _read(wf, image_path, wf.data.channels)
    if get_task(wf.task).target != "mask":  # a class needs no file
        return
    label_path = str(row.target)
    label = _read(wf, label_path)
    check_label_grid(image, label, image_path, label_path)
    if wf.data.labels:
        bad = label_values_outside(label.data, wf.data.labels)
        if bad:
            raise DataError(
                f"{label_path}: label value(s) {bad[:5]} not in data.labels {sorted(wf.data.labels)}"
            )
