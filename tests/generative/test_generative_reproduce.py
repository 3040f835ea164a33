"""A finished super-resolution run reproduced from its MLflow record: the same split, the same test metrics,
a new run tagged with the one it reproduces; a changed data file is named and stops it."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import small_superres

from medimg.cli.main import main
from medimg.config.generative import load_generative_workflow
from medimg.errors import DataError
from medimg.generative.reproduce import reproduce_generative
from medimg.generative.run import run_generative
from medimg.io.load import load_image
from medimg.io.nifti import save_nifti
from medimg.io.volume import Volume

pytestmark = pytest.mark.slow  # two small super-resolution studies (about a minute of CPU)

ROOT = Path(__file__).resolve().parents[2]


def test_superres_run_reproduces_and_refuses_changed_data(tmp_path: Path, capsys) -> None:
    small = [
        *small_superres(epochs=2),
        f"data.manifest={tmp_path}/data/manifest.csv",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"outputs.dir={tmp_path}/original",
    ]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = run_generative(load_generative_workflow(ROOT / "workflows/quickstart-superres.yaml", small))
    # through the command, which finds the run's task (its medimg.task tag) in the task registry
    code = main(["reproduce", first.run_id, "--tracking-uri", uri, "--out", str(tmp_path / "again"),
                 "--tolerance", "1e-6", "--json"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["reproduced"] is True, document
    table = pd.DataFrame(document["metrics"])
    new_run = document["reproduction_run"]
    assert new_run != first.run_id and len(table) >= 8  # PSNR and SSIM of three methods, gains
    assert set(table["metric"]) >= {"test_psnr_sr", "test_psnr_trilinear", "test_ssim_sr"}
    assert (table["abs_diff"] <= 1e-6).all(), table
    client = mlflow.MlflowClient(uri)
    assert client.get_run(new_run).data.tags["medimg.reproduces"] == first.run_id
    original = pd.read_csv(first.out_dir / "manifest.csv").set_index("case_key")["split"]
    again = pd.read_csv(tmp_path / "again" / "manifest.csv").set_index("case_key")["split"]
    assert again.sort_index().equals(original.sort_index())  # the run's own split, case for case

    image = Path(pd.read_csv(first.out_dir / "manifest.csv")["image"].iloc[0])
    vol = load_image(image)
    save_nifti(Volume(np.asarray(vol.data) + 1.0, vol.affine), image)
    with pytest.raises(DataError, match="the data changed") as err:
        reproduce_generative(first.run_id, uri, str(tmp_path / "third"))
    assert image.name in str(err.value)
