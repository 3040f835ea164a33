"""A cohort run killed with SIGKILL resumes: one complete output set per case, none computed twice."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from medimg.io.nifti import load_nifti, save_nifti
from medimg.io.volume import Volume
from tests._cohort_kill import assert_each_case_once, kill_when_done, start

N_CASES = 10

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests._cohort_kill import input_cases, record_computation
    import numpy as np
    from medimg.inference.cases import CaseOutputs
    from medimg.inference.cohort import run_cohort
    from medimg.inference.writers import NiftiMaskWriter
    from medimg.io.atomic import atomic_write_text
    from medimg.io.nifti import load_nifti
    from medimg.io.volume import Volume

    root = Path(sys.argv[1])
    cases = input_cases(root)

    def predict(case, vol):
        record_computation(root, case.case_id)
        time.sleep(0.12)
        return CaseOutputs(mask=Volume((vol.data > 0).astype(np.uint8), vol.affine), labels={1: "lesion"})

    class SlowReport:
        name = "report"
        def __call__(self, case, outputs, case_dir):
            time.sleep(0.05)
            return [atomic_write_text(case_dir / "report.txt", "x" * 200000)]

    report = run_cohort(cases, predict, root / "out", load_fn=lambda c: load_nifti(c.paths[0]),
                        writers=[NiftiMaskWriter(), SlowReport()], model_key="m", settings_key="s",
                        progress=False)
    sys.exit(report.exit_code)
    """
)


def test_sigkill_then_rerun_completes_each_case_once(tmp_path: Path) -> None:
    for i in range(N_CASES):
        data = np.zeros((12, 7, 5), np.float32)
        data[: i + 1, 2, 1] = 1.0
        save_nifti(Volume(data, np.diag([0.7, 0.8, 2.0, 1.0])), tmp_path / "in" / f"case{i:02d}.nii.gz")
    (tmp_path / "worker.py").write_text(WORKER)

    done_after_kill1 = kill_when_done(tmp_path, 3, timeout=60, threads=None)
    done_after_kill2 = kill_when_done(tmp_path, 7, timeout=60, threads=None)
    assert 3 <= len(done_after_kill1) < N_CASES and done_after_kill1 <= done_after_kill2
    assert start(tmp_path, threads=None).wait(timeout=120) == 0
    names = {f"case{i:02d}" for i in range(N_CASES)}
    assert_each_case_once(tmp_path, names, [done_after_kill1, done_after_kill2])

    for i in range(N_CASES):
        folder = tmp_path / "out" / "cases" / f"case{i:02d}"
        assert sorted(p.name for p in folder.iterdir()) == ["case.json", "mask.nii.gz", "report.txt"]
        assert int(load_nifti(folder / "mask.nii.gz").data.sum()) == i + 1
        assert (folder / "report.txt").stat().st_size == 200000
        assert json.loads((folder / "case.json").read_text())["status"] == "done"
