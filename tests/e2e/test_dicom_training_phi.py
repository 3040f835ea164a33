"""A study trained straight from DICOM series folders leaves no PHI in MLflow or the outputs."""

from __future__ import annotations

import numpy as np
from _tiny import tiny_workflow, write_wf

from medimg.cli.main import main
from medimg.data.synthetic import SyntheticGrid, make_case
from medimg.io.dicom.write import write_series
from medimg.io.nifti import save_nifti

PHI = ["Doe^Jane", "PID-998877", "19450312", "ACC-55443", "St Elsewhere Hospital"]


def test_dicom_manifest_trains_without_leaking_phi(tmp_path):
    rows = ["case_key,patient_key,image,label"]
    for i in range(6):
        case = make_case(i, seed=9, grid=SyntheticGrid(shape=(32, 30, 16), spacing=(1.6, 1.7, 2.5)))
        series = tmp_path / "dicom" / f"s{i}"
        write_series(
            case.image,
            series,
            rescale=(1.0, -1024.0),
            patient_name=PHI[0],
            patient_id=PHI[1],
            extra_tags={"PatientBirthDate": PHI[2], "AccessionNumber": PHI[3], "InstitutionName": PHI[4]},
        )
        save_nifti(case.label, tmp_path / "labels" / f"s{i}.nii.gz", dtype=np.uint8)
        rows.append(f"c{i},p{i // 2},dicom/s{i},labels/s{i}.nii.gz")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    wf = tiny_workflow()
    wf["data"] = {
        **wf["data"],
        "manifest": str(tmp_path / "manifest.csv"),
        "synthetic": None,
        "split": {"val_fraction": 0.34, "test_fraction": 0.34, "seed": 0},
    }
    wf["trainer"]["max_epochs"] = 1
    assert main(["run", str(write_wf(tmp_path / "wf.yaml", wf))]) == 0
    per_case = (tmp_path / "runs/tiny_seg/test_per_case.csv").read_text()
    assert "dice_1" in per_case and "error" not in per_case.splitlines()[0]
    leaks = []
    for f in (tmp_path / "runs").rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            leaks += [f"{f.relative_to(tmp_path)}: {p}" for p in PHI if p.encode() in blob]
    assert not leaks, leaks
