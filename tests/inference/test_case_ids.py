"""Case outputs are unique and stable: ids a file system cannot hold never share a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _models import built_model

from medimg.cli.main import main
from medimg.errors import ConfigError
from medimg.inference.cases import CaseInput, CaseOutputs, case_key, check_case_folders, folder_name
from medimg.inference.cohort import run_cohort
from medimg.inference.ledger import Ledger
from medimg.inference.writers import NiftiMaskWriter
from medimg.io.nifti import load_nifti, save_nifti
from medimg.io.volume import Volume

IDS = ("p 1", "p_1", "p:1")
SHAPES = ((20, 18, 10), (22, 16, 9), (18, 20, 11))  # a mask in the wrong folder shows by its shape


def _images(root: Path) -> list[Path]:
    paths = []
    for i, shape in enumerate(SHAPES):
        data = np.full(shape, -800.0, np.float32)
        data[4 : 8 + i, 5:10, 2:6] = 80.0 + 30 * i
        paths.append(save_nifti(Volume(data, np.diag([1.6, 1.7, 2.5, 1.0])), root / f"img{i}.nii.gz"))
    return paths


def test_folder_names_are_distinct_stable_and_documented() -> None:
    names = [folder_name(i) for i in IDS]
    assert names == ["p_1-85051de8", "p_1", "p_1-aba6e55b"]
    assert len(set(names)) == 3 and [folder_name(i) for i in IDS] == names
    assert folder_name("patient-0a1b2c3d_series-0123456789ab") == "patient-0a1b2c3d_series-0123456789ab"
    assert folder_name("..") != ".." and folder_name("Müller") != "Müller"


def test_ids_that_would_share_a_folder_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match="'Case1' and 'case1'"):
        check_case_folders([CaseInput("Case1", content_sha256="a"), CaseInput("case1", content_sha256="b")])


def test_three_colliding_keys_get_three_folders_and_a_rerun_skips_each(tmp_path: Path) -> None:
    model = built_model(tmp_path / "model")
    images = _images(tmp_path / "data")
    manifest = tmp_path / "data" / "manifest.csv"
    pd.DataFrame({"case_key": IDS, "image": [p.name for p in images]}).to_csv(manifest, index=False)
    argv = ["predict", str(model), str(manifest), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    cohort = pd.read_csv(tmp_path / "out" / "cohort.csv", keep_default_na=False)
    assert list(cohort["status"]) == ["done"] * 3
    folders = [tmp_path / "out" / "cases" / folder_name(i) for i in IDS]
    assert sorted(p.name for p in (tmp_path / "out" / "cases").iterdir()) == sorted(p.name for p in folders)
    for case_id, folder, image, shape in zip(IDS, folders, images, SHAPES, strict=True):
        mask = load_nifti(folder / "mask.nii.gz")
        assert mask.shape == shape
        np.testing.assert_allclose(mask.affine, load_nifti(image).affine)
        assert json.loads((folder / "case.json").read_text())["case_id"] == case_id
    assert main(argv) == 0
    rerun = pd.read_csv(tmp_path / "out" / "cohort.csv", keep_default_na=False)
    assert list(rerun["case_id"]) == list(IDS) and list(rerun["status"]) == ["skipped"] * 3


def test_a_case_whose_recorded_outputs_lie_in_another_cases_folder_is_computed_again(tmp_path: Path) -> None:
    images = _images(tmp_path / "data")
    cases = [CaseInput(i, (p,)) for i, p in zip(IDS, images, strict=True)]
    computed: list[str] = []

    def predict(case: CaseInput, vol: Volume) -> CaseOutputs:
        computed.append(case.case_id)
        return CaseOutputs(
            mask=Volume((np.asarray(vol.data) > 0).astype(np.uint8), vol.affine), labels={1: "x"}
        )

    def run() -> None:
        run_cohort(cases, predict, tmp_path / "out", load_fn=lambda c: load_nifti(c.paths[0]),
                   writers=[NiftiMaskWriter()], model_key="m", settings_key="s", progress=False)  # fmt: skip

    run()
    # An older layout gave "p 1" the folder of "p_1": its ledger line points there.
    Ledger(tmp_path / "out").append(
        {"case_id": "p 1", "key": case_key(cases[0], "m", "s"), "status": "done", "reason": "",
         "outputs": ["cases/p_1/mask.nii.gz", "cases/p_1/case.json"], "writers": ["nifti"]}
    )  # fmt: skip
    computed.clear()
    run()
    assert computed == ["p 1"]
    assert load_nifti(tmp_path / "out/cases" / folder_name("p 1") / "mask.nii.gz").shape == SHAPES[0]
    assert load_nifti(tmp_path / "out/cases/p_1/mask.nii.gz").shape == SHAPES[1]


def test_the_same_case_key_twice_in_a_manifest_is_refused(tmp_path: Path) -> None:
    images = _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"case_key": ["a", "a"], "image": [p.name for p in images[:2]]}).to_csv(
        manifest, index=False
    )
    model = built_model(tmp_path / "model")
    assert main(["predict", str(model), str(manifest), "--out", str(tmp_path / "out")]) != 0
    assert not (tmp_path / "out").exists()


def test_a_manifest_row_without_an_image_is_a_failed_row_naming_the_line(tmp_path: Path) -> None:
    from medimg.inference.inputs import collect_inputs

    images = _images(tmp_path)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"case_key": ["a", "b"], "image": [images[0].name, ""]}).to_csv(manifest, index=False)
    found = collect_inputs([str(manifest)])
    assert [(c.case_id, c.paths) for c in found.cases] == [("a", (images[0],))]
    (row,) = found.set_aside
    assert (row.case_id, row.status) == ("b", "failed") and f"{manifest}: line 3: empty 'image'" in row.reason


def test_a_folder_gives_its_nifti_volumes_at_any_depth(tmp_path: Path) -> None:
    """As `medimg convert` and `scan` do: a NIfTI in a subfolder of an export is a case; two
    files of one name in two folders get two distinct case ids."""
    from medimg.inference.inputs import collect_inputs

    top = _images(tmp_path / "export")
    nested = _images(tmp_path / "export/sub/deeper")  # the same three names one level down
    found = collect_inputs([str(tmp_path / "export")])
    got = sorted((c.case_id, str(c.paths[0])) for c in found.cases)
    assert sorted(p for _, p in got) == sorted(str(p) for p in (*top, *nested))
    assert len({cid for cid, _ in got}) == 6
