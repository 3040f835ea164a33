"""DICOM SEG from a label mask on the source series' grid (highdicom), and back.

The mask is either a :class:`~medimg.io.volume.Volume` (preferred: its affine is
matched to the source series, so any axis order or flip is mapped exactly) or a bare
array in medimg's DICOM voxel order: ``mask[i, j, k]`` is column ``i``, row ``j`` of
the ``k``-th source slice sorted along the slice normal (``ImageOrientationPatient``
row x column direction). Frame ``k`` of the SEG references the SOP instance of that
slice, so viewers overlay it where it belongs whatever the file names or instance
numbers say.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from medimg.errors import DataError, GeometryError
from medimg.io.atomic import atomic_write
from medimg.io.volume import Volume

SEG_SERIES_NUMBER = 9900


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identification of the model that made an output, carried by every DICOM object.

    Example:
        >>> algo = AlgorithmInfo(name="liver-unet", version="1.2.0", weights_sha256="ab" * 32)
        >>> algo.parameters()["weights_sha256"][:4]
        'abab'
    """

    name: str
    version: str
    weights_sha256: str
    manufacturer: str = "medimg"
    members: tuple[str, ...] = ()  # an ensemble: every member's weights sha256

    def parameters(self) -> dict[str, str]:
        members = {f"member{i}_weights_sha256": sha for i, sha in enumerate(self.members, start=1)}
        return {"weights_sha256": self.weights_sha256, **members}

    @property
    def software_versions(self) -> str:
        from medimg import __version__

        return f"medimg {__version__}"

    def new_instance(self, kind: str, series_number: int) -> dict[str, Any]:
        """The identity of a new object (``kind``: SEG, SR) in a series of its own, as highdicom keywords.

        Example:
            >>> ids = AlgorithmInfo("liver-unet", "1.2.0", "ab" * 32).new_instance("SR", 901)
            >>> ids["series_description"], ids["instance_number"]
            ('SR liver-unet', 1)
        """
        import highdicom as hd

        return {
            "series_instance_uid": hd.UID(),
            "series_number": series_number,
            "sop_instance_uid": hd.UID(),
            "instance_number": 1,
            "manufacturer": self.manufacturer[:64],
            "series_description": f"{kind} {self.name}"[:64],
        }


def sort_source_datasets(datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Single-frame slices of one series sorted along their normal (ascending).

    Example:
        >>> ordered = sort_source_datasets([pydicom.dcmread(p) for p in files])  # doctest: +SKIP
    """
    if not datasets:
        raise DataError("no source DICOM datasets given (expected the slices of the source series)")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) != 1:
        raise DataError(f"source datasets come from {len(series)} series; expected exactly one")
    for ds in datasets:
        for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
            if keyword not in ds:
                raise DataError(f"source instance {ds.get('SOPInstanceUID', '?')}: missing {keyword}")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(
                "multi-frame source images are not supported for SEG output; expected single-frame slices"
            )
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    if any(np.abs(np.asarray(ds.ImageOrientationPatient, float) - iop).max() > 1e-4 for ds in datasets):
        raise GeometryError("source slices have different ImageOrientationPatient; expected one orientation")
    return sorted(datasets, key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal))


def source_affine_lps(ordered: Sequence[pydicom.Dataset]) -> np.ndarray:
    """LPS affine of voxel ``(column, row, slice)`` of the sorted source series.

    Example:
        >>> source_affine_lps(sort_source_datasets(datasets))  # doctest: +SKIP
    """
    first = ordered[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    origin = np.asarray(first.ImagePositionPatient, dtype=np.float64)
    if len(ordered) > 1:
        step = (np.asarray(ordered[-1].ImagePositionPatient, float) - origin) / (len(ordered) - 1)
    else:
        step = np.cross(iop[:3], iop[3:]) * float(first.get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing
    affine[:3, 1] = iop[3:] * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return affine


def mask_on_source_grid(mask: np.ndarray | Volume, ordered: Sequence[pydicom.Dataset]) -> np.ndarray:
    """The mask as an array ``(columns, rows, slices)`` of the sorted source series.

    A :class:`Volume` is mapped by its affine (any permutation or flip of the source
    axes); anything else that is not on the source grid raises :class:`GeometryError`.
    """
    shape = (int(ordered[0].Columns), int(ordered[0].Rows), len(ordered))
    if not isinstance(mask, Volume):
        array = np.asarray(mask)
        if array.shape != shape:
            raise GeometryError(
                f"mask shape {array.shape} is not the source grid (columns, rows, slices) = {shape}; "
                "pass a Volume to have its axes matched by affine"
            )
        return array
    source = source_affine_lps(ordered)
    mapping = np.linalg.inv(source) @ mask.affine_in("LPS")  # mask voxel -> source voxel
    rotation = np.rint(mapping[:3, :3])
    if (
        np.abs(mapping[:3, :3] - rotation).max() > 1e-3
        or not np.array_equal(np.abs(rotation).sum(axis=0), np.ones(3))
        or not np.array_equal(np.abs(rotation).sum(axis=1), np.ones(3))
    ):
        raise GeometryError("mask affine is not on the source series grid (resample it to the source first)")
    data = np.asarray(mask.data)
    perm = [int(np.argmax(np.abs(rotation[a]))) for a in range(3)]  # source axis a <- mask axis perm[a]
    out = np.transpose(data, perm)
    for a in range(3):
        if rotation[a, perm[a]] < 0:
            out = np.flip(out, axis=a)
    # Where does mask voxel 0 land? It must be a corner of the source grid.
    corner = mapping[:3, 3]
    expected = np.array([0.0 if rotation[a, perm[a]] > 0 else out.shape[a] - 1 for a in range(3)])
    if out.shape != shape or np.abs(corner - expected).max() > 1e-2:
        raise GeometryError(
            f"mask (shape {data.shape}) does not cover the source grid {shape} exactly "
            f"(offset {np.round(corner - expected, 3).tolist()} voxels)"
        )
    return np.ascontiguousarray(out)


def write_seg(
    mask: np.ndarray | Volume,
    source_datasets: Sequence[pydicom.Dataset],
    labels: Mapping[int, str],
    out_path: str | os.PathLike[str],
    algorithm: AlgorithmInfo,
    *,
    series_number: int = SEG_SERIES_NUMBER,
) -> Path:
    """Write a binary DICOM SEG (one segment per label) referencing the source series.

    Args:
        mask: label map on the source grid (see the module docstring for the axis order).
        source_datasets: the slices of the source series (headers suffice), any order.
        labels: mask value -> segment label; every non-zero mask value needs one.
        out_path: the ``.dcm`` file to write (atomically).
        algorithm: model name, version and weights sha256 (Algorithm Identification).
        series_number: series number of the new SEG series.

    Example:
        >>> write_seg(mask_volume, datasets, {1: "liver", 2: "tumor"}, "out/seg.dcm", algo)  # doctest: +SKIP
    """
    ordered = sort_source_datasets(source_datasets)
    array = mask_on_source_grid(mask, ordered)
    values, present, frames = _segment_frames(array, labels)
    descriptions = _segment_descriptions(values, labels, algorithm)
    seg = _segmentation(ordered, frames, descriptions, algorithm, series_number, bool(present))
    with atomic_write(out_path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(out_path)


def _segment_frames(array: np.ndarray, labels: Mapping[int, str]) -> tuple[list[int], set[int], np.ndarray]:
    """The labelled mask values, the values present, and the frames of segment numbers (slice, row, col)."""
    values = sorted(int(v) for v in labels if int(v) != 0)
    if not values:
        raise DataError("labels is empty; expected at least one mask value -> name")
    present = {int(v) for v in np.unique(array)} - {0}
    if present - set(values):
        raise DataError(f"mask values {sorted(present - set(values))} have no name in labels {dict(labels)}")
    lut = np.zeros(max(values) + 1, dtype=np.uint16)
    lut[values] = np.arange(1, len(values) + 1)
    segment_numbers = lut[array.astype(np.int64)]
    frames = np.ascontiguousarray(np.transpose(segment_numbers, (2, 1, 0))).astype(np.uint16)
    return values, present, frames


def _segment_descriptions(values: list[int], labels: Mapping[int, str], algorithm: AlgorithmInfo) -> list:
    """One automatic segment per labelled value, numbered from 1, with the algorithm identification."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version[:64],
        source=algorithm.manufacturer[:64],
        parameters=algorithm.parameters(),
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(labels[value])[:64],
            segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            tracking_uid=hd.UID(),
            tracking_id=f"{algorithm.name} label {value}"[:64],
        )
        for number, value in enumerate(values, start=1)
    ]


def _segmentation(
    ordered: Sequence[pydicom.Dataset],
    frames: np.ndarray,
    descriptions: list,
    algorithm: AlgorithmInfo,
    series_number: int,
    omit_empty_frames: bool,
) -> Any:
    """The binary SEG instance of a new series referencing the source slices."""
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **algorithm.new_instance("SEG", series_number),
        manufacturer_model_name=f"{algorithm.name} {algorithm.version}"[:64],
        software_versions=algorithm.software_versions,
        device_serial_number=algorithm.weights_sha256[:16] or "unknown",
        content_description=f"{algorithm.name} {algorithm.version}"[:64],
        omit_empty_frames=omit_empty_frames,
    )


def read_seg(
    path: str | os.PathLike[str],
    source_datasets: Sequence[pydicom.Dataset],
    labels: Mapping[int, str] | None = None,
) -> np.ndarray:
    """Read a SEG back as a label array ``(columns, rows, slices)`` of the sorted source series.

    With ``labels``, segments are mapped back to their mask values by segment label;
    without, the array holds segment numbers.

    Example:
        >>> mask = read_seg("out/seg.dcm", datasets, {1: "liver"})  # doctest: +SKIP
    """
    import highdicom as hd

    ordered = sort_source_datasets(source_datasets)
    seg = hd.seg.segread(str(path))
    uids = [str(ds.SOPInstanceUID) for ds in ordered]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    numbers = np.transpose(np.asarray(frames), (2, 1, 0)).astype(np.int64)
    if labels is None:
        return numbers.astype(np.uint16)
    by_name = {str(name)[:64]: int(value) for value, name in labels.items()}
    lut = np.zeros(int(numbers.max(initial=0)) + 1, dtype=np.uint16)
    for number in seg.get_segment_numbers():
        name = seg.get_segment_description(number).segment_label
        if name not in by_name:
            raise DataError(f"{path}: segment {number} ({name!r}) is not in labels {dict(labels)}")
        if number < lut.size:
            lut[number] = by_name[name]
    return lut[numbers]
