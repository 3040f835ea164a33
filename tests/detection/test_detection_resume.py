"""A detection study killed in an epoch resumes from its last epoch checkpoint: the same MLflow run,
the same weights and loss history as a study never stopped; another workflow's checkpoint is refused
by name, and without resume an old checkpoint is not picked up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medimg.config.detection import load_detection_workflow
from medimg.detection.lightning_task import DetectionTask
from medimg.detection.study import CHECKPOINT, run_detection_study
from medimg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # four small studies end to end
EPOCHS, KILLED_IN = 4, 2  # killed during the third epoch: the checkpoint holds epochs 0 and 1


def _workflow(tmp: Path, out: str, *extra: str):
    return load_detection_workflow(
        ROOT / "workflows/quickstart-detection.yaml",
        [
            f"data.manifest={tmp}/data/manifest.csv",
            "data.synthetic.cases=8",
            "data.synthetic.shape=[32,32,16]",
            f"outputs.dir={tmp}/{out}",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"trainer.max_epochs={EPOCHS}",
            "optim.batch_size=2",
            "detection.flip_tta=false",
            "detection.n_boot=10",
            *extra,
        ],
    )


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _losses(client, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train_loss"))


def test_killed_detection_study_resumes_to_the_same_weights_in_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    whole = run_detection_study(_workflow(tmp_path, "whole"))

    step = DetectionTask.training_step

    def killed(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.current_epoch == KILLED_IN:
            raise RuntimeError("killed")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DetectionTask, "training_step", killed)
    with pytest.raises(RuntimeError, match="killed"):
        run_detection_study(_workflow(tmp_path, "resumed"))
    monkeypatch.undo()
    checkpoint = tmp_path / "resumed" / CHECKPOINT
    assert checkpoint.is_file() and not (tmp_path / "resumed/model").exists()
    client = mlflow.MlflowClient(whole.tracking_uri)
    killed_run = [r for r in client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
                  if r.info.run_id != whole.run_id]  # fmt: skip
    assert len(killed_run) == 1 and killed_run[0].info.status == "FAILED"
    assert len(_losses(client, killed_run[0].info.run_id)) == KILLED_IN  # epochs 0 and 1 logged

    # another workflow (another seed: another config hash) does not take this checkpoint
    with pytest.raises(ConfigError, match=rf"{checkpoint}: written by another workflow"):
        run_detection_study(_workflow(tmp_path, "resumed", "seed=7"), resume=True)

    resumed = run_detection_study(_workflow(tmp_path, "resumed"), resume=True)
    assert resumed.run_id == killed_run[0].info.run_id
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["medimg.resumed_from_epoch"] == str(KILLED_IN - 1)
    a, b = _weights(whole.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run's by up to {worst}"
    whole_losses, resumed_losses = _losses(client, whole.run_id), _losses(client, resumed.run_id)
    assert [s for s, _ in resumed_losses] == [s for s, _ in whole_losses] and len(whole_losses) == EPOCHS
    np.testing.assert_allclose([v for _, v in resumed_losses], [v for _, v in whole_losses], rtol=1e-6)
    assert resumed.metrics["test_froc"] == pytest.approx(whole.metrics["test_froc"])

    # without resume the old checkpoint is not picked up: a new run, trained from the first epoch
    again = run_detection_study(_workflow(tmp_path, "resumed"))
    assert again.run_id not in (resumed.run_id, whole.run_id)
    assert "medimg.resumed_from_epoch" not in client.get_run(again.run_id).data.tags
    assert len(_losses(client, again.run_id)) == EPOCHS
