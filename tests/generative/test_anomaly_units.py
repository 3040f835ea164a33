"""task anomaly's pieces: user errors name the key or file, thresholds, metrics, maps, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import anomaly_workflow

from medimg.config.generative import GenerativeWorkflow, load_generative_workflow
from medimg.errors import ConfigError, DataError
from medimg.generative.anomaly import case_metrics, choose_threshold, voxel_auprc
from medimg.generative.anomaly_maps import anomaly_map, map_on_source_grid, peak_in_mask
from medimg.generative.anomaly_study import check_grid
from medimg.generative.report import write_anomaly_report
from medimg.generative.run import run_generative

ROOT = Path(__file__).resolve().parents[2]


def test_the_quickstarts_validate():
    assert load_generative_workflow(ROOT / "workflows/quickstart-anomaly.yaml").anomaly.channels == (
        8,
        16,
        32,
    )
    assert load_generative_workflow(ROOT / "workflows/quickstart-superres.yaml").superres.factor == 4


def test_grid_errors_name_the_keys(tmp_path):
    wf = anomaly_workflow(tmp_path)
    check_grid(wf)
    with pytest.raises(ConfigError, match=r"preprocessing.spatial_size is required for task anomaly"):
        check_grid(
            wf.model_copy(
                update={"preprocessing": wf.preprocessing.model_copy(update={"spatial_size": None})}
            )
        )
    odd = wf.preprocessing.model_copy(update={"spatial_size": (32, 30, 32)})
    with pytest.raises(ConfigError, match=r"spatial_size \[32, 30, 32\]: each size must be divisible by 8"):
        check_grid(wf.model_copy(update={"preprocessing": odd}))
    with pytest.raises(ValueError, match="anomaly.channels .3 levels. and anomaly.strides .2."):
        GenerativeWorkflow.model_validate(
            {"task": "anomaly", "data": {"manifest": "m.csv"}, "anomaly": {"strides": [2, 2]}}
        )


def test_a_study_without_normal_training_cases_is_refused(tmp_path):
    wf = anomaly_workflow(tmp_path, cases=8, epochs=1)
    manifest = Path(wf.data.manifest)
    run_generative_input = wf.model_copy(
        update={"preprocessing": wf.preprocessing.model_copy(update={"spatial_size": (16, 16, 16)})}
    )
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    write_synthetic_study(
        manifest.parent, cases=8, seed=3, grid=SyntheticGrid(shape=(20, 20, 12), spacing=(4.0, 4.0, 6.0))
    )
    df = pd.read_csv(manifest).assign(**{"class": 1})
    df.to_csv(manifest, index=False)
    with pytest.raises(DataError, match=r"manifest.csv: no normal case \(class = 0\) in the training split"):
        run_generative(run_generative_input)


def test_threshold_and_metrics():
    assert choose_threshold([1.0, 2.0, 3.0, 4.0, 100.0], 0.75) == pytest.approx(4.0)
    assert np.isnan(choose_threshold([], 0.9))
    df = pd.DataFrame({"target": [0, 0, 0, 1, 1], "score": [0.1, 0.5, 0.3, 0.4, 0.9]})
    m = case_metrics(df, threshold=0.35)
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(2 / 3)
    assert "auroc" not in case_metrics(df[df.target == 0], 0.35)  # one class: undefined, not 0.5
    a, b = np.zeros((4, 4, 4)), np.zeros((4, 4, 4))
    a[0, 0, 0], b[1, 1, 1] = 2.0, 1.0
    assert voxel_auprc([a, b], [a > 0, np.zeros_like(b, bool)]) == 1.0


def test_a_lesion_the_network_does_not_reconstruct_peaks_the_map():
    """With an identity "autoencoder" that drops a blob, the map peaks at the blob, smoothed in mm."""

    class DropBlob:
        def eval(self):
            return self

        def __call__(self, x):
            y = x.clone()
            y[..., 10:13, 4:7, 6:9] = 0
            return y

    image = np.full((1, 20, 16, 12), 0.5, np.float32)
    import torch

    amap = anomaly_map(DropBlob(), torch.as_tensor(image), (1.0, 1.5, 2.0), sigma_mm=2.0)
    assert np.unravel_index(amap.argmax(), amap.shape) == (11, 5, 7)
    mask = np.zeros(amap.shape, bool)
    mask[10:13, 4:7, 6:9] = True
    assert peak_in_mask(amap, mask)
    shifted = np.eye(4)
    shifted[:3, 3] = [2.0, 0, 0]  # the source grid starts two voxels further along x
    back = map_on_source_grid(amap, np.eye(4), (18, 16, 12), shifted)
    assert np.unravel_index(back.argmax(), back.shape) == (9, 5, 7)


def test_report_escapes_case_keys(tmp_path):
    per_case = pd.DataFrame(
        {
            "case_key": ["<script>x</script>"],
            "target": [1],
            "score": [3.5],
            "flagged": [True],
            "map": ["maps/a.nii.gz"],
            "peak_in_lesion": [True],
        }  # fmt: skip
    )
    html = write_anomaly_report(tmp_path / "r.html", "s", {"test_auroc": 0.91234}, per_case, 2.0).read_text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html
    assert "0.9123" in html and 'class="flagged"' in html and "<td>yes</td>" in html


def test_a_saved_model_folder_maps_new_scans_as_the_study_did(tmp_path):
    import torch

    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
    from medimg.generative.anomaly import AnomalyModel, preprocess
    from medimg.generative.anomaly_study import save_model
    from medimg.generative.autoencoder import build_autoencoder
    from medimg.generative.cohort import predict_generative
    from medimg.inference.request import PredictRequest
    from medimg.io.load import load_image

    wf = anomaly_workflow(tmp_path)
    wf = wf.model_copy(
        update={"preprocessing": wf.preprocessing.model_copy(update={"spatial_size": (16, 16, 16)})}
    )
    manifest = write_synthetic_study(
        tmp_path / "data", cases=4, seed=1, grid=SyntheticGrid(shape=(20, 20, 12), spacing=(4.0, 4.0, 6.0))
    )
    image = str(manifest.parent / "cases/case_0000/image.nii.gz")
    torch.manual_seed(0)
    net = build_autoencoder(wf.anomaly).eval()
    sd = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    model = AnomalyModel(net, sd, 0.05, 4.0, "max", threshold=0.5)
    save_model(model, wf, tmp_path / "model")
    expected = model.source_map(preprocess(wf, image, "c"))
    document, _, code = predict_generative(
        PredictRequest(str(tmp_path / "model"), [image], str(tmp_path / "maps"), progress=False)
    )
    assert code == 0 and document["done"] == 1
    (case_dir,) = (tmp_path / "maps" / "cases").iterdir()
    written = load_image(case_dir / "anomaly.nii.gz")
    np.testing.assert_allclose(written.data, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(written.affine, load_image(image).affine, atol=1e-5)
    doc = json.loads((case_dir / "anomaly.json").read_text())
    assert doc["score"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert doc["flagged"] == (doc["score"] > 0.5)
