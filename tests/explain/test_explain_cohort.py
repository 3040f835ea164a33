"""explain_cohort over 10 NIfTI cases (one unreadable): maps, reports, index, failures, no PHI."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_case

from medimg.explain.runner import ExplainCase, explain_cohort
from medimg.io.load import load_image

torch.set_num_threads(1)

# Oblique, anisotropic source grid: the maps must come back with exactly this affine.
AFFINE = np.array(
    [[0.9, 0.2, 0.0, -30.0], [-0.15, 1.1, 0.3, 12.0], [0.0, -0.25, 2.2, -40.0], [0, 0, 0, 1]],
    dtype=np.float64,
)


def raw_preprocess(path: str):
    """The tiny classifier was trained on raw intensities: no normalisation, same grid."""
    vol = load_image(path)
    aff = vol.affine_in("RAS")
    meta = {"affine": aff, "source_affine": aff, "source_shape": vol.shape}
    return torch.as_tensor(np.asarray(vol.data, np.float32))[None], meta


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, trained_classifier):
    root = tmp_path_factory.mktemp("explain_cohort")
    src = root / "DOE^JOHN_19700101"  # a PHI-looking folder name must never reach the outputs
    src.mkdir()
    rng = np.random.default_rng(7)
    cases = []
    for i in range(10):
        img, mask = make_case(rng, positive=i % 2 == 1)
        path = src / f"case_{i:02d}.nii.gz"
        mpath = None
        if i == 4:
            path.write_bytes(b"not a nifti file at all")  # the unreadable case
        else:
            nib.save(nib.Nifti1Image(img, AFFINE), str(path))
            if mask.any():
                mpath = src / f"case_{i:02d}_mask.nii.gz"
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), str(mpath))
        cases.append(ExplainCase(f"case_{i:02d}", path, reference=i % 2, mask=mpath))
    seen = []
    out = root / "out"
    result = explain_cohort(
        cases,
        trained_classifier,
        out,
        ["gradcam", "occlusion"],
        preprocess=raw_preprocess,
        target_class=1,
        method_params={"occlusion": {"mask_size": 6, "overlap": 0.0}},
        model_info={"model_id": "tiny-cube-classifier", "run_id": "0" * 32, "weights_sha256": "ab" * 32},
        faithfulness_steps=8,
        progress=True,
        on_case=lambda k, s: seen.append((k, s)),
    )
    return result, out, seen


def test_nine_reports_and_one_failure(cohort):
    result, out, seen = cohort
    assert len(result.reports) == 9
    assert list(result.failures) == ["case_04"]
    assert (
        "DataError" in result.failures["case_04"]
        and "<image of case_04>: truncated" in result.failures["case_04"]
    )
    assert result.exit_code == 1
    assert len(seen) == 10 and dict(seen)["case_04"] != "ok"
    assert json.loads((out / "failures.json").read_text()) == result.failures
    for key, report in result.reports.items():
        assert report == out / key / "report.html" and report.stat().st_size > 10_000


def test_maps_have_exactly_the_source_shape_and_affine(cohort):
    _, out, _ = cohort
    for i in (1, 2):  # a positive and a negative case
        for method in ("gradcam", "occlusion"):
            img = nib.load(str(out / f"case_{i:02d}" / f"{method}.nii.gz"))
            assert img.shape == (24, 24, 24)
            np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)
            data = np.asarray(img.dataobj)
            assert data.dtype == np.float32 and np.isfinite(data).all()
            assert data.max() > 0 or (i == 2 and method == "gradcam")  # no evidence for class 1 in a negative


def test_gradcam_map_on_disk_peaks_inside_the_cube(cohort):
    _, out, _ = cohort
    for i in (1, 3, 5, 7, 9):
        cam = np.asarray(nib.load(str(out / f"case_{i:02d}" / "gradcam.nii.gz")).dataobj)
        mask = np.asarray(
            nib.load(str(out.parent / "DOE^JOHN_19700101" / f"case_{i:02d}_mask.nii.gz")).dataobj
        )
        assert mask[np.unravel_index(np.argmax(cam), cam.shape)] == 1


def test_summary_holds_sanity_numbers_and_no_phi(cohort):
    result, out, _ = cohort
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["case_key"]: r for r in summary["cases"]}
    assert rows["case_04"]["status"] == "failed"
    pos = rows["case_03"]
    assert pos["prediction"] == 1 and pos["confidence"] > 0.9 and pos["error"] < 0.1
    g = pos["methods"]["gradcam"]
    assert g["spearman"] < 0.5 and g["deletion_auc"] < g["random_deletion_auc"]
    assert result.sanity["gradcam"]["mean_spearman"] < 0.5
    assert g["peak_in_structure"] is True
    assert result.sanity["gradcam"]["mean_peak_in_structure"] >= 0.9  # positives with a cube mask
    for path in out.rglob("*"):
        if path.suffix in (".html", ".json"):
            text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", path.read_text())  # random letters in images
            assert "DOE" not in text and "JOHN" not in text and "19700101" not in text, path


def test_report_content_is_self_contained(cohort):
    _, out, _ = cohort
    page = (out / "case_03" / "report.html").read_text()
    assert "<h1>Case case_03</h1>" in page
    assert page.count('src="data:image/png;base64,') == 6  # 2 methods x (peak, structure centre, curves)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "url(" not in page and "@import" not in page and "<script" not in page
    for text in (
        "tiny-cube-classifier",
        "ab" * 32,
        "0" * 32,
        "Spearman",
        "deletion AUC",
        "Passes the randomisation",
        "Through the lesion/organ centre",
        "lies <b>inside</b> the lesion/organ mask",
        "mask_size",
        "report created (UTC)",
    ):
        assert text in page, text
    neg = (out / "case_02" / "report.html").read_text()
    assert "No lesion/organ mask" in neg


def test_index_lists_all_cases_sorted_by_error(cohort):
    _, out, _ = cohort
    page = (out / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert sorted(links) == sorted(f"case_{i:02d}/report.html" for i in range(10) if i != 4)
    assert "case_04" in page and "failed: DataError" in page
    rows = [re.findall(r'data-v="([^"]*)"', r) for r in re.findall(r"<tr class=[^>]*>(.*?)</tr>", page)]
    assert [r[0] for r in rows][-1] == "case_04"  # failed cases (no error value) come last
    errors = [float(r[5]) for r in rows if r[5]]  # columns: case status prediction confidence reference error
    assert len(errors) == 9 and errors == sorted(errors, reverse=True)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
