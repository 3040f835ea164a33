"""The built wheel (what ``pip install .`` and the Docker image install) holds every file medimg
reads at run time: it runs the classification quickstart, explains a case and writes the HTML
reports from the wheel alone, outside the source tree.

The Docker image runs ``pip install -c requirements/constraints.txt ".[onnx,pacs]"`` (not an
editable install), so a template, schema or data file missing from the package data would break
the image while every editable-install test passes. Docker itself is not needed: the wheel is
installed into a folder put first on ``sys.path``; the dependencies come from the test's own
environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT)],
        check=True,
    )  # fmt: skip
    wheel = next((tmp / "dist").glob("medimg-*.whl"))
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def _medimg(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "MEDIMG_HOME": str(cwd / ".medimg")}
    code = "import sys, medimg.cli.main as m; sys.exit(m.main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_wheel_holds_the_templates_and_runs_from_itself(wheel_site: Path, tmp_path: Path) -> None:
    shipped = {p.relative_to(wheel_site).as_posix() for p in wheel_site.rglob("*") if p.is_file()}
    for needed in ("medimg/py.typed", "medimg/evaluation/templates/report.html",
                   "medimg/explain/templates/case_report.html", "medimg/explain/templates/cohort_index.html"):  # fmt: skip
        assert needed in shipped, f"{needed} is not in the wheel"

    res = _medimg(wheel_site, tmp_path, "--version")
    assert res.returncode == 0, res.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import medimg; print(medimg.__file__)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(wheel_site)}, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.stdout.strip().startswith(str(wheel_site)), probe.stdout  # not the source tree

    wf = tmp_path / "quickstart_cls.yaml"
    wf.write_text((ROOT / "workflows/quickstart_cls.yaml").read_text())
    res = _medimg(wheel_site, tmp_path, "run", str(wf), "--set", "trainer.max_epochs=1", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads(res.stdout)
    model = Path(run["model_dir"])
    assert (model / "model.safetensors").is_file()

    images = sorted((tmp_path / "runs/data").rglob("*.nii.gz"))
    assert images, "the quickstart wrote no synthetic images"
    res = _medimg(wheel_site, tmp_path, "explain", "--model", str(model), str(images[0]),
                  "--method", "gradcam", "--no-sanity", "--out", str(tmp_path / "ex"), "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    page = (tmp_path / "ex/index.html").read_text()
    reports = list((tmp_path / "ex").rglob("report.html"))
    assert "<table" in page and len(reports) == 1 and reports[0].parent.name in page
    report = reports[0].read_text()
    assert "<img" in report and "gradcam" in report.lower()
