"""A detection cohort killed with SIGKILL resumes: each case done exactly once, boxes.json and boxes.csv complete."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medimg.config.detection import parse_detection_workflow
from medimg.data.synthetic import oblique_affine
from medimg.detection.model_folder import save_detector
from medimg.detection.network import build_detector
from medimg.detection.plan import plan_detection
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume
from tests._cohort_kill import assert_each_case_once, kill_when_done, start

pytestmark = pytest.mark.slow  # three worker processes start torch and MONAI (about 30 s of CPU)

N_CASES = 6

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests._cohort_kill import log_calls, run_cohort_and_exit
    import medimg.detection.cohort as cohort

    root = Path(sys.argv[1])
    log_calls(root, cohort, "predict_boxes", lambda detector, plan, volume, **kw: volume.meta["case"])
    real_load = cohort.load_scan

    def load(case):
        scan = real_load(case)
        scan.volume.meta["case"] = case.case_id
        return scan

    cohort.load_scan = load
    run_cohort_and_exit(root, cohort.predict_detection_cohort)
    """
)


def test_sigkilled_detection_cohort_resumes_each_case_once(tmp_path: Path) -> None:
    plan = plan_detection([(6, 6, 6), (10, 10, 10)], [(1.5, 1.5, 3.0)] * 2, [(32, 32, 16)] * 2)
    wf = parse_detection_workflow(
        {"task": "detection", "data": {"manifest": "m.csv"}, "detection": {"box_file": "b.csv"}}
    )
    save_detector(build_detector(plan), plan, wf, tmp_path / "model")
    rng = np.random.default_rng(0)
    for i in range(N_CASES):
        affine = oblique_affine((32, 32, 16), (1.5, 1.5, 3.0), 10.0 + i)
        save_nifti(
            Volume(rng.normal(size=(32, 32, 16)).astype(np.float32), affine),
            tmp_path / "in" / f"case{i:02d}.nii.gz",
        )
    (tmp_path / "worker.py").write_text(WORKER)

    done1 = kill_when_done(tmp_path, 2)
    done2 = kill_when_done(tmp_path, 4)
    assert 2 <= len(done1) < N_CASES and done1 <= done2
    assert start(tmp_path).wait(timeout=300) == 0
    names = {f"case{i:02d}" for i in range(N_CASES)}
    assert_each_case_once(tmp_path, names, [done1, done2])

    out = tmp_path / "out"
    for i in range(N_CASES):
        folder = out / "cases" / f"case{i:02d}"
        # every file complete, none left half-written (no temporary files)
        assert sorted(p.name for p in folder.iterdir()) == ["boxes.json", "case.json", "report.html"]
        doc = json.loads((folder / "boxes.json").read_text())
        assert doc["case_id"] == f"case{i:02d}" and isinstance(doc["boxes"], list)
        page = (folder / "report.html").read_text()
        assert page.rstrip().endswith("</html>") and page.count("data:image/png") == 3 * len(doc["boxes"])
        assert json.loads((folder / "case.json").read_text())["status"] == "done"
    table = pd.read_csv(out / "boxes.csv")
    assert list(table.columns[:5]) == ["case_key", "space", "x", "y", "z"]
    n_boxes = sum(
        len(json.loads((out / "cases" / f"case{i:02d}" / "boxes.json").read_text())["boxes"])
        for i in range(N_CASES)
    )
    assert len(table) == n_boxes
