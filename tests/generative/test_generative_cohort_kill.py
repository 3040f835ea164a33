"""A super-resolution cohort killed with SIGKILL resumes: each case done exactly once, outputs and table complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medimg.generative.slices import thin_affine
from medimg.inference.ledger import Ledger
from medimg.io.load import load_image
from tests.generative.test_generative_cohort import superres_model, thick_scans

pytestmark = pytest.mark.slow  # three worker processes start torch and MONAI (about 30 s of CPU)

N_CASES = 6

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import medimg.generative.cohort as cohort
    from medimg.inference.cases import CaseInput

    root = Path(sys.argv[1])
    log = root / "computations.log"
    real = cohort.super_resolve

    def logged(net, thick, cfg):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{thick.meta['case']} {os.getpid()}\\n".encode())
        os.fsync(fd)
        os.close(fd)
        time.sleep(0.3)  # slow enough to be killed between cases and in the middle of one
        return real(net, thick, cfg)

    cohort.super_resolve = logged
    import medimg.io.load as load_module
    real_image = load_module.load_image

    def load_image(path, **kw):
        vol = real_image(path, **kw)
        vol.meta["case"] = Path(path).name.split(".")[0]
        return vol

    load_module.load_image = load_image
    cases = [CaseInput(p.name.split(".")[0], (p,)) for p in sorted((root / "in").glob("*.nii.gz"))]
    report = cohort.predict_generative_cohort(root / "model", cases, root / "out")
    sys.exit(report.exit_code)
    """
)


def _start(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(root / "worker.py"), str(root)], env=env)


def _done(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {e["case_id"] for e in Ledger(out).latest().values() if e["status"] == "done"}


def _kill_when_done(root: Path, k: int) -> set[str]:
    proc = _start(root)
    deadline = time.monotonic() + 240
    while len(_done(root / "out")) < k:
        assert proc.poll() is None, "the worker ended before it could be killed"
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _done(root / "out")


def test_sigkilled_superres_cohort_resumes_each_case_once(tmp_path: Path) -> None:
    wf, _net = superres_model(tmp_path / "model")
    inputs = thick_scans(tmp_path / "in", N_CASES)
    (tmp_path / "worker.py").write_text(WORKER)

    done1 = _kill_when_done(tmp_path, 2)
    done2 = _kill_when_done(tmp_path, 4)
    assert 2 <= len(done1) < N_CASES and done1 <= done2 and len(done2) < N_CASES
    assert _start(tmp_path).wait(timeout=300) == 0

    runs = [tuple(line.split()) for line in (tmp_path / "computations.log").read_text().splitlines()]
    pids = list(dict.fromkeys(pid for _, pid in runs))
    by_run = [[case for case, pid in runs if pid == p] for p in pids]
    assert len(by_run) == 3
    for computed in by_run:
        assert len(computed) == len(set(computed)), "a case was computed twice within one run"
    assert not {c for computed in by_run[1:] for c in computed} & done1
    assert not {c for computed in by_run[2:] for c in computed} & done2
    names = {f"thick{i}" for i in range(N_CASES)}
    assert set(Counter(case for case, _ in runs)) == names
    done_entries = Counter(e["case_id"] for e in Ledger(tmp_path / "out").entries() if e["status"] == "done")
    assert done_entries == Counter(dict.fromkeys(names, 1))  # each case done exactly once

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
