"""A super-resolution cohort killed with SIGKILL resumes: each case done exactly once, outputs and table complete."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medimg.generative.slices import thin_affine
from medimg.io.load import load_image
from tests._cohort_kill import assert_each_case_once, kill_when_done, start
from tests.generative.test_generative_cohort import superres_model, thick_scans

pytestmark = pytest.mark.slow  # three worker processes start torch and MONAI (about 30 s of CPU)

N_CASES = 6

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests._cohort_kill import log_calls, run_cohort_and_exit
    import medimg.generative.cohort as cohort
    import medimg.io.load as load_module

    root = Path(sys.argv[1])
    log_calls(root, cohort, "super_resolve", lambda net, thick, cfg: thick.meta["case"], delay=0.3)
    real_image = load_module.load_image

    def load_image(path, **kw):
        vol = real_image(path, **kw)
        vol.meta["case"] = Path(path).name.split(".")[0]
        return vol

    load_module.load_image = load_image
    run_cohort_and_exit(root, cohort.predict_generative_cohort)
    """
)


def test_sigkilled_superres_cohort_resumes_each_case_once(tmp_path: Path) -> None:
    wf, _net = superres_model(tmp_path / "model")
    inputs = thick_scans(tmp_path / "in", N_CASES)
    (tmp_path / "worker.py").write_text(WORKER)

    done1 = kill_when_done(tmp_path, 2)
    done2 = kill_when_done(tmp_path, 4)
    assert 2 <= len(done1) < N_CASES and done1 <= done2 and len(done2) < N_CASES
    assert start(tmp_path).wait(timeout=300) == 0
    names = {f"thick{i}" for i in range(N_CASES)}
    assert_each_case_once(tmp_path, names, [done1, done2])

    out = tmp_path / "out"
    for path in inputs:
        folder = out / "cases" / path.name.split(".")[0]
        assert sorted(p.name for p in folder.iterdir()) == ["case.json", "sr.json", "sr.nii.gz"]
        sr, thick = load_image(folder / "sr.nii.gz"), load_image(path)
        assert sr.shape == (20, 18, 20) and np.isfinite(sr.data).all()
        np.testing.assert_allclose(sr.affine, thin_affine(thick.affine, 2, 4), atol=1e-5)
        assert json.loads((folder / "case.json").read_text())["status"] == "done"
    table = pd.read_csv(out / "superres.csv")
    assert sorted(table["case_id"]) == sorted(names) and (table["output_shape"] == "20x18x20").all()
    assert not list(out.rglob("*.tmp*"))  # nothing half-written left behind
