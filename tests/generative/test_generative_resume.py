"""A super-resolution study SIGKILLed after an epoch checkpoint resumes with ``run_generative(wf, resume=True)``:
the same MLflow run, training goes on from the saved epoch (no epoch trained twice), and the weights equal
those of a study that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import small_superres
from safetensors.torch import load_file

from medimg.config.generative import load_generative_workflow
from medimg.errors import ConfigError
from medimg.generative.checkpoint import CHECKPOINT
from medimg.generative.run import run_generative

pytestmark = pytest.mark.slow  # two studies and a killed one (about a minute of CPU)

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 5
SMALL = small_superres(EPOCHS)

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from medimg.config.generative import load_generative_workflow
    from medimg.generative import checkpoint
    from medimg.generative.run import run_generative

    root = Path(sys.argv[1])
    real_save = checkpoint.EpochCheckpoint.save

    def save(self, epoch, parts, rng, losses):
        path = real_save(self, epoch, parts, rng, losses)
        (root / "saved.txt").write_text(str(epoch))
        time.sleep(3)  # the test kills the study here, after a checkpoint, in the middle of training
        return path

    checkpoint.EpochCheckpoint.save = save
    run_generative(load_generative_workflow(sys.argv[2], sys.argv[3:]))
    """
)


def _workflow(root: Path, name: str) -> list[str]:
    return [
        *SMALL,
        f"data.manifest={root}/data/manifest.csv",
        f"tracking.uri=sqlite:///{root}/mlflow.db",
        f"outputs.dir={root}/{name}",
    ]


def test_killed_superres_study_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    path = str(ROOT / "workflows/quickstart-superres.yaml")
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "worker.py"), str(tmp_path), path, *_workflow(tmp_path, "killed")],
        env=env,
    )
    deadline = time.monotonic() + 300
    while not ((tmp_path / "saved.txt").is_file() and int((tmp_path / "saved.txt").read_text()) >= 1):
        assert proc.poll() is None, "the study ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = tmp_path / "killed"
    saved = torch.load(out / CHECKPOINT, weights_only=True)
    killed_at = int(saved["epoch"])
    assert 1 <= killed_at < EPOCHS - 1 and len(saved["losses"]) == killed_at + 1
    run_id = saved["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: never finished
    assert not (out / "model").exists()

    torch.set_num_threads(1)
    resumed = run_generative(load_generative_workflow(path, _workflow(tmp_path, "killed")), resume=True)
    assert resumed.run_id == run_id  # the same MLflow run, continued
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["medimg.resumed_from_epoch"] == str(killed_at)
    steps = Counter(m.step for m in client.get_metric_history(run_id, "train_l1"))
    assert set(steps) == set(range(EPOCHS))
    assert all(steps[s] == 1 for s in range(killed_at + 1))  # the epochs saved were not trained again
    final = torch.load(out / CHECKPOINT, weights_only=True)
    assert final["epoch"] == EPOCHS - 1 and final["losses"][: killed_at + 1] == saved["losses"]
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())

    # a study never interrupted, same workflow: the same weights and the same test PSNR
    whole = run_generative(load_generative_workflow(path, _workflow(tmp_path, "whole")))
    reference = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    for name, value in reference.items():
        np.testing.assert_allclose(weights[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-6)
    assert resumed.metrics["test_psnr_sr"] == pytest.approx(whole.metrics["test_psnr_sr"], abs=1e-3)

    # a checkpoint written by another workflow is refused by name, not loaded
    other = [*_workflow(tmp_path, "killed"), "superres.features=4"]
    with pytest.raises(ConfigError, match="written by another workflow"):
        run_generative(load_generative_workflow(path, other), resume=True)
