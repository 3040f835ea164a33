"""The dcm2niix QA conformance runner: its verdicts on NIfTI pairs made here, and one real repository.

The pairs are the same image written in another voxel order (flipped and permuted
axes with the affine to match), which must match, and images that differ in one
respect (a shifted affine, changed values, a wrong number of volumes, another
grid), each of which must be reported with its own category.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.dcm_qa_compare import Image, compare, read_reference

# an oblique, anisotropic affine (RAS): rotation about z by 20 degrees, voxels 0.8 x 1.1 x 2.5 mm
_C, _S = np.cos(np.radians(20)), np.sin(np.radians(20))
AFFINE = np.array(
    [[0.8 * _C, -1.1 * _S, 0.0, -40.0], [0.8 * _S, 1.1 * _C, 0.0, 12.5], [0.0, 0.0, 2.5, -7.0], [0, 0, 0, 1]]
)


def _volume(shape: tuple[int, ...] = (6, 7, 5), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-200, 900, size=shape).astype(np.float32)


def _flip_permute(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with axis 0 reversed and then axes 0 and 1 swapped (as dcm2niix may)."""
    n0 = data.shape[0]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, n0 - 1
    data2, aff2 = data[::-1], affine @ flip  # new index i' = n0-1-i
    swap = np.eye(4)[[1, 0, 2, 3]]
    return np.ascontiguousarray(np.swapaxes(data2, 0, 1)), aff2 @ swap


def _write_ref(path: Path, data: np.ndarray, affine: np.ndarray, slope: float = 1.0) -> Path:
    """A NIfTI as dcm2niix writes one: with ``slope``, int16 stored values and ``scl_slope`` set."""
    stored = np.round(data / slope).astype(np.int16) if slope != 1.0 else data
    img = nib.Nifti1Image(stored, affine)
    img.set_qform(affine, code=1)
    nib.save(img, path)
    if slope != 1.0:  # nibabel resets scl_slope for int data; set it in the header bytes (offset 112)
        raw = bytearray(path.read_bytes())
        raw[112:120] = np.array([slope, 0.0], dtype="<f4").tobytes()
        path.write_bytes(bytes(raw))
    return path


def test_flipped_and_permuted_copy_matches(tmp_path: Path) -> None:
    data = _volume()
    ref_data, ref_aff = _flip_permute(data, AFFINE)
    assert ref_data.shape == (7, 6, 5) and not np.allclose(ref_aff, AFFINE)
    ref = read_reference(str(_write_ref(tmp_path / "ref.nii", ref_data, ref_aff)))
    verdict = compare(ref, Image(data, AFFINE))
    assert verdict.category == "matched", verdict.detail
    assert verdict.affine_diff_mm < 1e-4 and verdict.value_diff == 0.0


def test_scaled_integer_reference_matches_within_quantisation(tmp_path: Path) -> None:
    data = _volume() * 0.5  # multiples of 0.5: exactly what int16 * 0.5 holds
    ref = read_reference(str(_write_ref(tmp_path / "ref.nii", data, AFFINE, slope=0.5)))
    assert ref.slope == 0.5 and ref.stored_integers
    assert compare(ref, Image(data + 0.2, AFFINE)).ok  # within half a unit of the stored scale
    far = compare(ref, Image(data + 0.3 * np.eye(6, 7)[..., None].astype(np.float32) * 10, AFFINE))
    assert far.category == "values" and "30 of 210 voxels differ" in far.detail


def test_shifted_affine_is_an_affine_mismatch(tmp_path: Path) -> None:
    data = _volume()
    ref = read_reference(str(_write_ref(tmp_path / "ref.nii", data, AFFINE)))
    shifted = AFFINE.copy()
    shifted[1, 3] += 0.004  # 4 micrometres: beyond 1e-3 mm and beyond what the float32 header explains
    verdict = compare(ref, Image(data, shifted))
    assert verdict.category == "affine" and verdict.affine_diff_mm == pytest.approx(0.004, abs=1e-5)
    assert compare(ref, Image(data, AFFINE + np.diag([0, 0, 0.0005, 0]))).ok  # under 1e-3 mm


def test_loose_affine_only_when_the_reference_header_is_that_coarse() -> None:
    data = _volume()
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.005
    coarse = compare(Image(data, AFFINE, header_error_mm=0.0045), Image(data, shifted))
    assert coarse.ok and coarse.loose and "0.005" in coarse.detail
    assert compare(Image(data, AFFINE, header_error_mm=1e-6), Image(data, shifted)).category == "affine"
    shifted[0, 3] += 0.02  # beyond 1e-2 mm: never accepted
    assert compare(Image(data, AFFINE, header_error_mm=0.05), Image(data, shifted)).category == "affine"


def test_changed_values_are_a_values_mismatch() -> None:
    data = _volume()
    other = data.copy()
    other[2, 3, 1] += 7.0
    verdict = compare(Image(data, AFFINE), Image(other, AFFINE))
    assert verdict.category == "values" and verdict.value_diff == pytest.approx(7.0)
    assert "1 of 210 voxels differ" in verdict.detail


def test_wrong_number_of_volumes_is_a_4d_mismatch(tmp_path: Path) -> None:
    series = np.stack([_volume(seed=s) for s in range(3)], axis=-1)
    ref = read_reference(str(_write_ref(tmp_path / "fmri.nii", series, AFFINE)))
    assert compare(ref, Image(series, AFFINE)).ok
    two = compare(ref, Image(series[..., :2], AFFINE))
    assert two.category == "4D" and "reference has 3 volume(s)" in two.detail and "medimg 2" in two.detail
    assert compare(ref, Image(series[..., 0], AFFINE)).category == "4D"


def test_other_grid_is_a_shape_mismatch() -> None:
    verdict = compare(Image(_volume((6, 7, 5)), AFFINE), Image(_volume((6, 7, 4)), AFFINE))
    assert verdict.category == "shape" and "(6, 7, 5)" in verdict.detail


def _mini_repo(root: Path) -> None:
    """A repository laid out as dcm_qa*: DICOM in In/, dcm2niix-style NIfTI + JSON in Ref/."""
    from dicom_phantoms import phantom

    from medimg.io.dicom.write import write_series

    ct = phantom("axial", shape=(12, 10, 6), oblique=(0.0, 8.0, 0.0))
    write_series(ct, root / "In" / "ct", series_number=3, series_description="ct", rescale=(1.0, -1024.0))
    loc = phantom("axial", shape=(12, 10, 1), seed=1)
    write_series(loc, root / "In" / "loc", series_number=5, series_description="scout",
                 extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})  # fmt: skip
    (root / "Ref").mkdir()
    data, aff = _flip_permute(ct.data.astype(np.float32), ct.affine_in("RAS"))
    bad = data.copy()
    bad[0, 0, 0] += 5
    for name, number, desc, voxels in [("bad_3", 3, "ct", bad), ("ct_3", 3, "ct", data),
                                       ("ghost_9", 9, "t1", data), ("scout_5", 5, "scout", data)]:  # fmt: skip
        _write_ref(root / "Ref" / f"{name}.nii", voxels, aff)
        (root / "Ref" / f"{name}.json").write_text(
            json.dumps({"SeriesNumber": number, "SeriesDescription": desc})
        )


def test_run_repo_matches_and_explains_each_reference(tmp_path: Path) -> None:
    from benchmarks.dcm_qa_run import run_repo

    _mini_repo(tmp_path / "repo")
    res = run_repo(tmp_path / "repo", "mini", missing=["Ref/lost_4.nii"])
    verdicts = {r.reference: (r.status, r.category.split(":")[0] if "localizer" in r.category else r.category)
                for r in res.references}  # fmt: skip
    scout = next(r for r in res.references if r.reference == "Ref/scout_5.nii")
    assert "LOCALIZER" in scout.category
    assert verdicts == {
        "Ref/ct_3.nii": ("matched", "matched"),
        "Ref/bad_3.nii": ("mismatch", "values"),
        "Ref/ghost_9.nii": ("mismatch", "not found"),
        "Ref/scout_5.nii": ("mismatch", "refused"),
        "Ref/lost_4.nii": ("skipped", "skipped: reference missing from snapshot"),
    }
    assert res.medimg_volumes == 1 and len(res.medimg_refused) == 1 and "scout" in res.medimg_refused[0]


def test_paired_copies_are_judged_against_each_other(tmp_path: Path) -> None:
    from dicom_phantoms import phantom

    from benchmarks.dcm_qa_paired import run_paired
    from medimg.io.dicom.write import write_series

    vol = phantom("sagittal", shape=(10, 8, 5))
    changed = phantom("sagittal", shape=(10, 8, 5))
    changed.data[1, 1, 1] += 3
    for folder in ("Siemens", "Agfa"):
        write_series(vol, tmp_path / folder / "t1", modality="MR", series_number=11, series_description="t1")
        write_series(vol, tmp_path / folder / "t2", modality="MR", series_number=12, series_description="t2")
    write_series(
        changed, tmp_path / "Agfa" / "t2b", modality="MR", series_number=13, series_description="t2b"
    )
    write_series(vol, tmp_path / "Siemens" / "t2b", modality="MR", series_number=13, series_description="t2b")
    res = run_paired(tmp_path, "pair", "Siemens", "Agfa")
    verdicts = sorted((r.reference.split(" (")[0], r.category) for r in res.references)
    assert verdicts == [("Siemens/ series 11", "matched"), ("Siemens/ series 12", "matched"),
                        ("Siemens/ series 13", "values")]  # fmt: skip
    assert res.reference_kind == "medimg's Siemens/ conversion" and res.medimg_volumes == 6


def test_prepare_copies_inflates_and_lists_what_the_snapshot_lacks(tmp_path: Path) -> None:
    import gzip
    import subprocess

    from benchmarks.dcm_qa_data import missing_inputs, prepare_repo

    work = tmp_path / "work"
    (work / "In" / "s1").mkdir(parents=True)
    (work / "Ref").mkdir()
    (work / "In" / "s1" / "a.dcm").write_bytes(b"slice a")
    (work / "In" / "s1" / "b.dcm.gz").write_bytes(gzip.compress(b"slice b"))
    (work / "Ref" / "x.nii").write_bytes(b"lost blob")
    (work / "README.md").write_text("not copied")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C"]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, str(work), "add", "."], check=True)
    subprocess.run([*git, str(work), "commit", "-qm", "corpus"], check=True)
    mirror = tmp_path / "mirror"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(mirror / "neurolabusc+dcm_qa_x" / "repo")], check=True
    )
    bare = mirror / "neurolabusc+dcm_qa_x" / "repo"
    sha = subprocess.run(
        [*git, str(bare), "rev-parse", "HEAD:Ref/x.nii"], capture_output=True, text=True
    ).stdout
    (bare / "objects" / sha[:2] / sha[2:].strip()).unlink()  # a snapshot without this file's contents

    done = prepare_repo(mirror, "dcm_qa_x", root=tmp_path / "cache")
    dest = tmp_path / "cache" / "dcm_qa_x"
    assert done.written == 2 and done.missing == ["Ref/x.nii"]
    assert (dest / "In" / "s1" / "a.dcm").read_bytes() == b"slice a"
    assert (dest / "In" / "s1" / "b.dcm").read_bytes() == b"slice b"  # inflated as batch.sh does
    assert not (dest / "README.md").exists() and not (dest / "Ref" / "x.nii").exists()
    assert missing_inputs("dcm_qa_x", root=tmp_path / "cache") == ["Ref/x.nii"]


def _cache() -> Path:
    from benchmarks.dcm_qa_data import cache_root

    return cache_root()


def _expected_stc_matches() -> int:
    """Reference volumes of dcm_qa_stc the reader matches, as measured on 2026-12-03.

    The reader with Siemens mosaic, 4D, enhanced multi-frame and United Imaging support
    (it has ``medimg.io.dicom.mosaic``) matches all 16; the reader before it matched 1
    (mosaics and 4D series were not read).
    """
    import importlib.util

    return 16 if importlib.util.find_spec("medimg.io.dicom.mosaic") else 1


@pytest.mark.slow
@pytest.mark.skipif(
    not (_cache() / "dcm_qa_stc" / "prepared.json").is_file(),
    reason="dcm2niix QA corpus not prepared: run 'python -m benchmarks.bench_dicom_qa prepare "
    "--repo dcm_qa_stc' (needs a git clone of github.com/neurolabusc/dcm_qa_stc; see docs/dicom.md)",
)
def test_runner_on_dcm_qa_stc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.bench_dicom_qa import main

    args = ["run", "--repo", "dcm_qa_stc", "--out", str(tmp_path), "--report", str(tmp_path / "r.md")]
    assert main(args) == 0
    doc = json.loads((tmp_path / "dicom_qa-latest.json").read_text())
    (repo,) = doc["repos"]
    expected = _expected_stc_matches()
    assert doc["total"] == 16 and doc["skipped"] == 2  # one reference and one input absent from the snapshot
    assert doc["matched"] >= expected, f"matched {doc['matched']} of 16, {expected} before"
    matched = [r for r in repo["references"] if r["status"] == "matched"]
    assert all(r["affine_diff_mm"] < 1e-3 for r in matched)
    assert f"matched {doc['matched']} of 16 reference volumes" in capsys.readouterr().out
    assert "| dcm_qa_stc |" in (tmp_path / "r.md").read_text()
