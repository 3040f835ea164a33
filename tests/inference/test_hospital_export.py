"""A hospital export end to end: ``medimg scan`` -> ``medimg predict`` with no hand work between.

Per study the export holds one CT, a localizer, a second small series, a secondary
capture and a structured report, mixed in one folder. Each usable series gets exactly
one mask + DICOM SEG + DICOM SR; every other object is listed with its reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from _models import built_model
from _tiny import TINY
from hospital_export import PATIENTS, Study, write_export

from medimg.cli.main import main
from medimg.config.load import parse_workflow
from medimg.data.manifest import read_manifest
from medimg.inference.dicom_seg import read_seg
from medimg.inference.dicom_sr import read_sr_measurements
from medimg.inference.ledger import Ledger
from medimg.inference.series_inputs import dicom_case_id
from medimg.io.dicom.discover import Series
from medimg.io.dicom.headers import read_header
from medimg.io.dicom.pseudonym import pseudonym
from medimg.io.load import load_image

KEY = "hospital-export-test-key"
OUTPUTS = ["case.json", "mask.nii.gz", "seg.dcm", "sr.dcm"]


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDIMG_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("MEDIMG_HOME", str(tmp_path / "medimg_home"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_model(tmp_path_factory.mktemp("model") / "model")


def _series_key(root: Path, uid: str) -> str:
    """The series key of the files of series ``uid`` now under ``root`` (medimg's own key rule)."""
    headers = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:  # a planted non-DICOM file
            continue
        if str(ds.SeriesInstanceUID) == uid:
            headers.append(read_header(f))
    return Series(headers).keys(KEY)["series_key"]


def _expected(studies: list[Study], root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Case id -> source series UID of every usable series under ``root``; set-aside id -> kind."""
    cases, aside = {}, {}
    for study in studies:
        patient = pseudonym(study.patient_id, "patient", KEY)
        for uid in (study.ct_uid, study.second_uid):
            cases[dicom_case_id({"patient_key": patient, "series_key": _series_key(root, uid)})] = uid
        for uid, kind in study.set_aside.items():
            aside[_series_key(root, uid)[: len("series-") + 12]] = kind
    return cases, aside


def _check_case(folder: Path, image: str, src_uid: str, dciodvfy) -> np.ndarray:
    """Outputs of one case: geometry of the mask, SEG/SR valid, SEG reads back to the mask."""
    assert sorted(p.name for p in folder.iterdir()) == OUTPUTS
    volume = load_image(image).to_space("RAS")
    mask = nib.load(folder / "mask.nii.gz")
    assert mask.shape == volume.shape
    np.testing.assert_allclose(mask.affine, volume.affine, atol=1e-4)
    data = np.asarray(mask.dataobj)
    assert data.any(), "the untrained model predicts something on every phantom"
    assert dciodvfy(folder / "seg.dcm") == [] and dciodvfy(folder / "sr.dcm") == []
    seg = pydicom.dcmread(folder / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src_uid
    sr = pydicom.dcmread(folder / "sr.dcm")
    evidence = {
        s.SeriesInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
    }
    assert evidence == {src_uid, seg.SeriesInstanceUID}
    voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000
    measured = {group: value for group, _, value, _ in read_sr_measurements(folder / "sr.dcm")}
    assert measured["organ volume"] == pytest.approx(float((data == 1).sum() * voxel_ml), abs=1e-3)
    base = image.partition("#")[0]
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in Path(base).iterdir()]
    sources = [ds for ds in sources if ds.SeriesInstanceUID == src_uid]
    np.testing.assert_array_equal(read_seg(folder / "seg.dcm", sources, {1: "organ", 2: "kidney"}), data)
    return data


def _cohort(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "cohort.csv", keep_default_na=False, dtype={"case_id": str})


def test_scan_then_predict_from_elsewhere_gives_one_output_set_per_usable_series(
    model: Path, tmp_path: Path, dciodvfy, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    studies = write_export(site / "export")
    assert main(["scan", str(site / "export"), "--out", str(site / "q"), "-j", "1"]) == 0
    manifest = pd.read_csv(site / "q" / "manifest.csv")
    assert len(manifest) == 4 and all(not Path(p).is_absolute() for p in manifest["image"])
    moved = tmp_path / "archive" / "site-2024"  # the scan output travels with the data
    moved.parent.mkdir()
    site.rename(moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    code = main(["predict", str(model), str(moved / "q" / "manifest.csv"), "--out", "p", "--no-progress"])
    assert code == 0
    cohort = _cohort(elsewhere / "p")
    expected_cases, expected_aside = _expected(studies, moved / "export")
    done = cohort[cohort["status"] == "done"]
    assert sorted(done["case_id"]) == sorted(expected_cases)
    aside = cohort[cohort["status"] == "set_aside"]
    assert (
        dict(zip(aside["case_id"], [r.split(":")[0] for r in aside["reason"]], strict=True)) == expected_aside
    )
    words = {"localizer": "LOCALIZER", "secondary_capture": "secondary capture", "non_image": "SR Storage"}
    assert len(cohort) == 4 + 6 and all(words[r.split(":")[0]] in r for r in aside["reason"])
    assert sorted(p.name for p in (elsewhere / "p" / "cases").iterdir()) == sorted(expected_cases)
    images = dict(zip(manifest["series_key"], manifest["image"], strict=True))
    masks = {}
    for case_id, uid in expected_cases.items():
        image = str(moved / "q" / images[_series_key(moved / "export", uid)])
        masks[case_id] = _check_case(elsewhere / "p" / "cases" / case_id, image, uid, dciodvfy)
    text = b"".join(p.read_bytes() for p in (elsewhere / "p").rglob("*") if p.suffix in (".csv", ".json"))
    assert not any(pid.encode() in text for pid in PATIENTS) and b"Doe^Pat" not in text

    # the export folder itself gives the same cases and the same masks
    assert main(["predict", str(model), str(moved / "export"), "--out", "p2", "--no-progress"]) == 0
    again = _cohort(elsewhere / "p2")
    assert sorted(again[again["status"] == "done"]["case_id"]) == sorted(expected_cases)
    assert sorted(again[again["status"] == "set_aside"]["case_id"]) == sorted(expected_aside)
    for case_id, data in masks.items():
        np.testing.assert_array_equal(
            np.asarray(nib.load(elsewhere / "p2/cases" / case_id / "mask.nii.gz").dataobj), data
        )

    # one series by reference, and a rerun of the manifest skips every finished series
    one = f"{moved / 'export' / 'P000' / 'ST0'}#{_series_key(moved / 'export', studies[0].ct_uid)}"
    assert main(["predict", str(model), one, "--out", "p3", "--no-progress"]) == 0
    assert list(_cohort(elsewhere / "p3")["status"]) == ["done"]
    assert (
        main(["predict", str(model), str(moved / "q" / "manifest.csv"), "--out", "p", "--no-progress"]) == 0
    )
    rerun = _cohort(elsewhere / "p")
    assert Counter(rerun["status"]) == {"skipped": 4, "set_aside": 6}


def _predict_process(model: Path, manifest: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-m", "medimg", "predict", str(model), str(manifest), "--out", str(out)]
    return subprocess.Popen([*argv, "--no-progress", "--prefetch", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _done_lines(out: Path) -> list[str]:
    if not out.exists():
        return []
    return [e["case_id"] for e in Ledger(out).entries() if e.get("status") == "done"]


def test_sigkill_during_the_cohort_then_rerun_finishes_every_series_once(model: Path, tmp_path: Path) -> None:
    studies = write_export(tmp_path / "export")
    assert main(["scan", str(tmp_path / "export"), "--out", str(tmp_path / "q"), "-j", "1"]) == 0
    manifest, out = tmp_path / "q" / "manifest.csv", tmp_path / "p"
    proc = _predict_process(model, manifest, out)
    deadline = time.monotonic() + 300
    while not _done_lines(out):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = set(_done_lines(out))
    expected_cases, _ = _expected(studies, tmp_path / "export")
    assert 1 <= len(done_at_kill) < len(expected_cases)

    rerun = _predict_process(model, manifest, out)
    assert rerun.wait(timeout=300) == 0
    counts = Counter(_done_lines(out))
    assert counts == {case_id: 1 for case_id in expected_cases}, "every series is finished exactly once"
    cohort = _cohort(out)
    statuses = dict(zip(cohort["case_id"], cohort["status"], strict=True))
    assert {c for c, s in statuses.items() if s == "skipped"} == done_at_kill
    assert Counter(statuses.values()) == {
        "skipped": len(done_at_kill),
        "done": 4 - len(done_at_kill),
        "set_aside": 6,
    }
    for case_id in expected_cases:
        assert sorted(p.name for p in (out / "cases" / case_id).iterdir()) == OUTPUTS


def test_training_manifest_reader_finds_the_images_of_a_moved_scan(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    write_export(site / "export")
    assert main(["scan", str(site / "export"), "--out", str(site / "q"), "-j", "1"]) == 0
    moved = tmp_path / "archive" / "site-2024"
    moved.parent.mkdir()
    site.rename(moved)
    monkeypatch.chdir(tmp_path / "archive")
    manifest = pd.read_csv(moved / "q" / "manifest.csv")
    labelled = moved / "q" / "labelled.csv"
    manifest.assign(case_key=[f"c{i}" for i in range(len(manifest))], label=0).to_csv(labelled, index=False)
    cfg = parse_workflow(TINY).data.model_copy(update={"manifest": str(labelled), "label_column": "label"})
    images = read_manifest(cfg, "classification")["image"]  # what `medimg run` reads
    assert sorted(load_image(p).shape[2] for p in images) == [6, 6, 12, 12]


@pytest.mark.pacs
def test_predict_from_a_pacs_sets_aside_what_a_scan_sets_aside(
    model: Path, tmp_path: Path, orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medimg.inference.pacs import PacsClient
    from medimg.inference.pacs_cohort import series_case_id

    for k, v in orthanc.env().items():
        monkeypatch.setenv(k, v)
    study = write_export(tmp_path / "export")[0]
    pacs = PacsClient(orthanc.url)
    pacs.store(sorted(study.folder.iterdir()))
    study_uid = str(pydicom.dcmread(next(study.folder.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    argv = [
        "predict",
        str(model),
        "--pacs",
        orthanc.url,
        "--pacs-study",
        study_uid,
        "--out",
        "p",
        "--no-progress",
    ]
    assert main(argv) == 0
    cohort = _cohort(tmp_path / "p")
    statuses = dict(zip(cohort["case_id"], cohort["status"], strict=True))
    usable = {series_case_id(study.ct_uid), series_case_id(study.second_uid)}
    assert statuses == {
        **dict.fromkeys(usable, "done"),
        **{series_case_id(u): "set_aside" for u in study.set_aside},
    }
    reasons = dict(zip(cohort["case_id"], cohort["reason"], strict=True))
    words = {"localizer": "LOCALIZER", "secondary_capture": "secondary capture", "non_image": "modality SR"}
    for uid, kind in study.set_aside.items():
        assert (
            reasons[series_case_id(uid)].startswith(f"{kind}: ")
            and words[kind] in reasons[series_case_id(uid)]
        )
    for case_id in usable:
        written = sorted(p.name for p in (tmp_path / "p" / "cases" / case_id).iterdir())
        assert written == sorted([*OUTPUTS, "pacs_store.json"])
    # the rerun skips both series; the SEGs and SRs now in the study are listed, not predicted
    assert main(argv) == 0
    rerun = _cohort(tmp_path / "p")
    assert Counter(rerun["status"]) == {"skipped": 2, "set_aside": 3 + 4}


def test_a_broken_series_fails_with_its_reason_and_the_rest_goes_on(model: Path, tmp_path: Path) -> None:
    studies = write_export(tmp_path / "export")
    ct = [
        p
        for p in studies[1].folder.iterdir()
        if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == studies[1].ct_uid
    ]
    middle = sorted(ct, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation))[5]
    middle.unlink()  # a slice lost in transfer
    (studies[0].folder / "IM_BROKEN").write_bytes(b"\x00" * 300)  # could be DICOM: listed, unreadable
    (studies[0].folder / "notes.json").write_text("{}")  # a sidecar: ignored

    assert (
        main(["scan", str(tmp_path / "export"), "--out", str(tmp_path / "q"), "--absolute-paths", "-j", "1"])
        == 1
    )
    manifest = pd.read_csv(tmp_path / "q" / "manifest.csv")
    assert len(manifest) == 3 and all(Path(p.partition("#")[0]).is_absolute() for p in manifest["image"])

    assert main(["predict", str(model), str(tmp_path / "export"), "--out", "p", "--no-progress"]) != 0
    cohort = _cohort(tmp_path / "p")
    assert Counter(cohort["status"]) == {"done": 3, "failed": 1, "set_aside": 6, "unreadable": 1}
    failed = cohort[cohort["status"] == "failed"].iloc[0]
    assert failed["case_id"] == _series_key(tmp_path / "export", studies[1].ct_uid)[: len("series-") + 12]
    assert failed["reason"].startswith("unsupported: ") and "1 missing slice" in failed["reason"]
    assert "not a DICOM file" in cohort[cohort["status"] == "unreadable"].iloc[0]["reason"]


def test_a_failed_case_names_the_reader_error_not_the_transform_wrapper(model: Path, tmp_path: Path) -> None:
    from medimg.io.nifti import save_nifti
    from medimg.io.volume import Volume

    good = save_nifti(Volume(np.zeros((20, 18, 10), np.float32), np.eye(4)), tmp_path / "good.nii")
    cut = tmp_path / "cut.nii"
    cut.write_bytes(good.read_bytes()[:-400])  # truncated: fewer voxel bytes than the header promises
    assert main(["predict", str(model), str(good), str(cut), "--out", "p", "--no-progress"]) != 0
    rows = _cohort(tmp_path / "p").set_index("case_id")
    assert rows.loc["good", "status"] == "done" and rows.loc["cut", "status"] == "failed"
    reason = rows.loc["cut", "reason"]
    assert "applying transform" not in reason and str(cut) in reason and "bytes" in reason, reason
