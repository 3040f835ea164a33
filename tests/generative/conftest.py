"""Shared pieces of the generative tests: a small synthetic anomaly study and its workflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from medimg.config.generative import GenerativeWorkflow


def anomaly_workflow(root: Path, cases: int = 48, epochs: int = 40, **anomaly: object) -> GenerativeWorkflow:
    """A synthetic study (half the cases carry a bright lesion in organ 1) and a small autoencoder."""
    return GenerativeWorkflow.model_validate(
        {
            "name": "anomaly_test",
            "task": "anomaly",
            "seed": 0,
            "data": {
                "manifest": str(root / "data/manifest.csv"),
                "synthetic": {"cases": cases, "seed": 3, "shape": [48, 48, 32], "spacing": [2.0, 2.0, 3.0]},
                "label_column": "class",
                "split": {"val_fraction": 0.2, "test_fraction": 0.3, "seed": 0},
            },
            "preprocessing": {
                "spacing": [3.0, 3.0, 3.0],
                "intensity": {"mode": "ct_window", "window": [-200, 400]},
                "spatial_size": [32, 32, 32],
            },
            "anomaly": {"channels": [8, 16, 32], "strides": [2, 2, 2], **anomaly},
            "optim": {"lr": 0.003, "batch_size": 2},
            "trainer": {"max_epochs": epochs},
            "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "anomaly"},
            "outputs": {"dir": str(root / "out")},
        }
    )


def small_superres(epochs: int, shape: tuple[int, int, int] = (24, 24, 24)) -> list[str]:
    """Overrides of workflows/quickstart-superres.yaml for a study of seconds: 8 synthetic cases of
    ``shape``, a 3-layer network of 8 features, 8 patches of 16^3 per epoch, ``epochs`` epochs."""
    return [
        "data.synthetic.cases=8",
        f"data.synthetic.shape=[{','.join(map(str, shape))}]",
        "data.split.val_fraction=0.15",
        "data.split.test_fraction=0.3",
        "superres.features=8",
        "superres.layers=3",
        "superres.patch_size=[16,16,16]",
        "superres.patches_per_epoch=8",
        f"trainer.max_epochs={epochs}",
    ]


@pytest.fixture
def tmp_root(tmp_path: Path) -> Path:
    return tmp_path
