"""A generated hospital export: per study one CT, a localizer, a second small series, a
secondary capture and a structured report, all mixed in one folder with random file names."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from medimg.inference.dicom_seg import AlgorithmInfo
from medimg.inference.dicom_sr import write_sr
from medimg.io.dicom.write import write_series

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from dicom_phantoms import phantom  # the I/O tests' phantom writers

PATIENTS = ("PID-0001", "PID-0002")


@dataclass
class Study:
    """What one study folder holds, by kind."""

    folder: Path
    patient_id: str
    ct_uid: str
    second_uid: str
    set_aside: dict[str, str] = field(default_factory=dict)  # series UID -> kind


def write_study(folder: Path, index: int, patient_id: str) -> Study:
    """Write the five objects of one study into ``folder`` (shuffled names, one folder)."""
    study_uid, frame_uid = generate_uid(), generate_uid()
    common = {"study_uid": study_uid, "patient_id": patient_id, "patient_name": f"Doe^Pat{index}"}
    ct_uid, second_uid, loc_uid, sc_uid = (generate_uid() for _ in range(4))
    ct = phantom("axial", shape=(32, 30, 12), spacing=(1.6, 1.7, 2.5), oblique=(0, 0, 8), seed=index)
    ct_files = write_series(
        ct, folder, series_uid=ct_uid, series_number=2, rescale=(1.0, -1024.0),
        shuffle_names=True, frame_of_reference_uid=frame_uid, **common,
    )  # fmt: skip
    second = phantom("coronal", shape=(20, 16, 6), spacing=(2.0, 2.0, 3.0), seed=index + 10)
    write_series(second, folder, series_uid=second_uid, series_number=3, rescale=(1.0, -1024.0),
                 shuffle_names=True, frame_of_reference_uid=frame_uid, **common)  # fmt: skip
    loc = phantom("sagittal", shape=(24, 20, 1), spacing=(1.5, 1.5, 1.5))
    write_series(loc, folder, series_uid=loc_uid, series_number=1, rescale=(1.0, -1024.0), shuffle_names=True,
                 extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, **common)  # fmt: skip
    sc = phantom("axial", shape=(16, 12, 1))
    write_series(sc, folder, modality="OT", series_uid=sc_uid, series_number=99, rescale=(1.0, -1024.0),
                 shuffle_names=True, **common)  # fmt: skip
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_files]
    algo = AlgorithmInfo(name="reading-room", version="1.0", weights_sha256="0" * 64)
    sr = write_sr({1: 12.5}, sources, {1: "organ"}, folder / f"sr_{index}.dcm", algo)
    sr_uid = str(pydicom.dcmread(sr, stop_before_pixels=True).SeriesInstanceUID)
    kinds = {loc_uid: "localizer", sc_uid: "secondary_capture", sr_uid: "non_image"}
    return Study(folder, patient_id, ct_uid, second_uid, kinds)


def write_export(root: Path) -> list[Study]:
    """Two patients, one study each, under ``root/<patient>/<study>/`` (names carry no PHI)."""
    return [write_study(root / f"P{i:03d}" / "ST0", i, patient_id) for i, patient_id in enumerate(PATIENTS)]
