"""Output writers of the cohort runner: each turns a case's outputs into files.

A writer is any object with a ``name`` and a ``__call__(case, outputs, case_dir)``
that writes its files atomically (``medimg.io.atomic``), records its main file in
``outputs.written[name]`` (so later writers can reference it) and returns the paths
it wrote. The runner marks a case done only after every writer has returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medimg.errors import ConfigError, DataError
from medimg.inference.cases import CaseInput, CaseOutputs


@runtime_checkable
class Writer(Protocol):
    """Writes one kind of output for a case and returns the paths it wrote."""

    name: str

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]: ...


class NiftiMaskWriter:
    """Write ``outputs.mask`` as ``mask.nii.gz`` (uint8/uint16, RAS affine of the input).

    Example:
        >>> run_cohort(..., writers=[NiftiMaskWriter()])  # doctest: +SKIP
    """

    name = "nifti"

    def __init__(self, filename: str = "mask.nii.gz") -> None:
        self.filename = filename

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        if outputs.mask is None:
            raise DataError(f"case {case.case_id}: the predictor returned no mask for the NIfTI writer")
        path = write_mask(outputs.mask, case_dir / self.filename)
        outputs.written[self.name] = path
        return [path]


def write_mask(mask: Any, path: Path) -> Path:
    """Write a label mask (a :class:`~medimg.io.volume.Volume`) as NIfTI: uint8, or uint16 past 255.

    The one NIfTI mask writer: ``medimg predict``, the pyfunc and the test split's predictions.

    Example:
        >>> write_mask(Volume(mask, affine), Path("out/mask.nii.gz"))  # doctest: +SKIP
    """
    from medimg.io.nifti import save_nifti

    data = np.asarray(mask.data)
    dtype = np.uint8 if data.size == 0 or int(data.max(initial=0)) < 256 else np.uint16
    return save_nifti(mask, path, dtype=dtype)


def _source_datasets(case: CaseInput, outputs: CaseOutputs) -> list[Any]:
    """Source DICOM datasets: ``outputs.source`` when it holds them, else the case's series headers.

    ``outputs.source`` may be a list of datasets or a dict with a ``"datasets"`` list.
    Otherwise the case's files (a series' files, or a folder) are grouped and
    classified like :func:`medimg.io.load.load_image` does (localizers and derived
    series set aside), narrowed to ``case.meta["series_key"]`` when the case names
    one, and exactly one volume series must remain.
    """
    import pydicom

    source = outputs.source
    if isinstance(source, dict):
        source = source.get("datasets")
    if isinstance(source, Sequence) and source and isinstance(source[0], pydicom.Dataset):
        return list(source)
    from medimg.io.dicom.discover import classify, find_files, group_series, read_headers

    headers, _excluded = read_headers([f for path in case.paths for f in find_files(path)])
    series = [s for s in map(classify, group_series(headers)) if s.kind == "volume"]
    key = case.meta.get("series_key")
    if key:
        series = [s for s in series if s.keys()["series_key"] == key]
    if len(series) != 1:
        where = case.meta.get("image") or ", ".join(str(p) for p in case.paths[:3])
        raise DataError(
            f"case {case.case_id}: {where} holds {len(series)} usable DICOM series; a DICOM SEG/SR needs "
            "exactly one (or pass the source datasets in CaseOutputs.source)"
        )
    return [pydicom.dcmread(h.path, stop_before_pixels=True) for h in series[0].headers]


class DicomSegWriter:
    """Write ``outputs.mask`` as a DICOM SEG (``seg.dcm``) referencing the source series.

    Example:
        >>> algo = AlgorithmInfo(name="liver-unet", version="1.2.0", weights_sha256="ab12...")  # doctest: +SKIP
        >>> run_cohort(..., writers=[DicomSegWriter(algo)])  # doctest: +SKIP
    """

    name = "dicom_seg"

    def __init__(self, algorithm: Any, filename: str = "seg.dcm") -> None:
        self.algorithm = algorithm
        self.filename = filename

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        from medimg.inference.dicom_seg import write_seg

        if outputs.mask is None:
            raise DataError(f"case {case.case_id}: the predictor returned no mask for the DICOM SEG writer")
        datasets = _source_datasets(case, outputs)
        path = write_seg(outputs.mask, datasets, outputs.labels, case_dir / self.filename, self.algorithm)
        outputs.written[self.name] = path
        return [path]


class DicomSrWriter:
    """Write a TID 1500 measurement report (``sr.dcm``): label volumes and class probabilities.

    When :class:`DicomSegWriter` ran before it for the same case (list it first), the
    volumes reference the SEG's segments.

    Example:
        >>> run_cohort(..., writers=[DicomSegWriter(algo), DicomSrWriter(algo)])  # doctest: +SKIP
    """

    name = "dicom_sr"

    def __init__(self, algorithm: Any, filename: str = "sr.dcm") -> None:
        self.algorithm = algorithm
        self.filename = filename

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        from medimg.inference.cases import label_volumes_ml
        from medimg.inference.dicom_sr import write_sr

        datasets = _source_datasets(case, outputs)
        seg_path = outputs.written.get(DicomSegWriter.name)
        volumes = None
        if outputs.mask is not None and outputs.labels:
            by_name = label_volumes_ml(outputs.mask, outputs.labels)
            volumes = {value: by_name[name] for value, name in outputs.labels.items()}
        path = write_sr(
            volumes,
            datasets,
            outputs.labels,
            case_dir / self.filename,
            self.algorithm,
            seg=seg_path,
            probabilities=outputs.probabilities or None,
        )
        outputs.written[self.name] = path
        return [path]


WRITERS: dict[str, Callable[[Any], Writer]] = {
    NiftiMaskWriter.name: lambda algorithm: NiftiMaskWriter(),
    DicomSegWriter.name: DicomSegWriter,
    DicomSrWriter.name: DicomSrWriter,
}


def make_writers(names: Sequence[str], algorithm: Any) -> list[Writer]:
    """The writers a task names (``Task.writers``, ``Task.dicom_writers``), in that order.

    Raises:
        ConfigError: a name is not in :data:`WRITERS` (the message lists the known ones).

    Example:
        >>> [w.name for w in make_writers(("nifti", "dicom_sr"), algorithm=None)]
        ['nifti', 'dicom_sr']
    """
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ConfigError(
            f"writer(s) {unknown} not known; medimg.inference.writers.WRITERS has {sorted(WRITERS)}"
        )
    return [WRITERS[n](algorithm) for n in names]
