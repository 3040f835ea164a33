"""Deep supervision with DynUNet: the weighted loss over the outputs, the plan's choice, and inference
from the trained state dict with the full-resolution output only."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from medimg.config.load import parse_workflow, workflow_to_dict
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_workflow
from medimg.models.networks import build_model
from medimg.training.tasks import SegmentationTask, deep_supervision_weights

LABELS = {0: "background", 1: "organ", 2: "kidney"}
PARAMS = {
    "kernel_size": [[3, 3, 3]] * 4,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "filters": [4, 8, 8, 8],
    "deep_supervision": True,
    "deep_supr_num": 2,
}


def _workflow(**params):
    doc = {
        "task": "segmentation",
        "data": {"manifest": "m.csv", "labels": LABELS},
        "model": {"name": "dynunet", "params": PARAMS | params},
        "trainer": {"channels_last": False},
    }
    return parse_workflow(doc, source="ds.yaml")


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16, generator=g)
    y = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=g).float()
    return {"image": x, "label": y}


def test_weights_halve_per_output_and_sum_to_one():
    w = deep_supervision_weights(4)
    assert sum(w) == pytest.approx(1.0)
    assert [w[i] / w[i + 1] for i in range(3)] == pytest.approx([2.0, 2.0, 2.0])
    assert deep_supervision_weights(1) == [1.0]


def test_loss_is_the_weighted_sum_over_the_outputs():
    torch.manual_seed(0)
    task = SegmentationTask(workflow_to_dict(_workflow()))
    task.train()
    batch = _batch()
    stacked = task.net(batch["image"])
    assert stacked.shape == (2, 3, 3, 16, 16, 16)  # full resolution + 2 heads, upsampled by MONAI
    loss = task.training_step(batch, 0)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    per_output = [float(dice_ce(stacked[:, i], batch["label"])) for i in range(3)]
    expected = (4 * per_output[0] + 2 * per_output[1] + 1 * per_output[2]) / 7  # 1, 1/2, 1/4 normalised
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(loss) != pytest.approx(per_output[0], rel=1e-3)  # the heads count


def test_trained_state_dict_predicts_one_full_resolution_output():
    torch.manual_seed(0)
    wf = _workflow()
    task = SegmentationTask(workflow_to_dict(wf))
    opt = torch.optim.AdamW(task.parameters(), lr=1e-2)
    task.train()
    batch = _batch()
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = task.training_step(batch, 0)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    heads = {k for k in task.net.state_dict() if k.startswith("deep_supervision_heads.")}
    assert heads  # the heads are trained weights of the state dict

    fresh = build_model(wf)  # as inference builds it from the saved workflow
    fresh.load_state_dict(task.net.state_dict(), strict=True)
    fresh.eval()
    task.net.eval()
    with torch.no_grad():
        out = fresh(batch["image"])
        assert out.shape == (2, 3, 16, 16, 16)  # one output, the full-resolution head
        assert torch.equal(out, task.net(batch["image"]))
        sw = task.sliding_window(batch["image"][:1])  # validation's sliding window: one output too
    assert sw.shape == (1, 3, 16, 16, 16)


def test_plan_chooses_deep_supervision_when_the_network_has_levels_for_it():
    machine = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)

    def fp(shape):
        case = {"case_key": "a", "shape": shape, "spacing": [1.0, 1.0, 1.0]}
        return {
            "source": "s", "n_cases": 20, "cases": [case] * 20, "modality": "MR", "modality_from": "declared",
            "intensity": {"zero_fraction_median": 0.0, "region": "foreground"},
            "labels": {"1": {"name": "organ", "volume_ml": {"median": 1.0}}},
        }  # fmt: skip

    deep = plan_workflow(fp([40, 56, 40]), "segmentation", machine, 1200)
    params = deep.get("model.params")
    levels = len(params["strides"])
    assert levels >= 4 and params["deep_supervision"] is True
    assert params["deep_supr_num"] == levels - 3
    assert "deep supervision" in deep.reasons["model.params"] and "summed over" in deep.reasons["optim.loss"]
    net = build_model(
        parse_workflow(deep.workflow | {"data": deep.workflow["data"] | {"manifest": "m"}}, "p")
    )
    assert net.deep_supervision and net.deep_supr_num == levels - 3  # MONAI accepts the planned heads

    shallow = plan_workflow(fp([12, 12, 12]), "segmentation", machine, 1200)
    assert len(shallow.get("model.params")["strides"]) == 3
    assert shallow.get("model.params")["deep_supervision"] is False
    assert "no deep supervision" in shallow.reasons["model.params"]


@pytest.mark.slow
def test_planned_deep_supervision_trains_exports_and_scores(tmp_path, monkeypatch):
    import json

    import mlflow

    from medimg.cli.main import main
    from medimg.config.load import load_workflow
    from medimg.data.synthetic import SyntheticGrid, write_synthetic_study

    monkeypatch.chdir(tmp_path)
    manifest = write_synthetic_study(
        tmp_path / "data", cases=6, seed=5, grid=SyntheticGrid(shape=(32, 32, 32), spacing=(1.0, 1.0, 1.0))
    )
    out = tmp_path / "ds.yaml"
    assert main(["plan", str(manifest), "--task", "segmentation", "--out", str(out), "--budget", "15s"]) == 0
    wf = load_workflow(out)
    assert wf.model.params["deep_supervision"] is True and wf.model.params["deep_supr_num"] == 1
    assert main(["run", str(out)]) == 0  # trains on the stacked outputs, validates and scores on one
    info = json.loads((tmp_path / "runs/ds/run.json").read_text())
    metrics = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.metrics
    assert 0.0 <= metrics["test_dice_mean"] <= 1.0 and metrics["n_failed"] == 0
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "runs/ds/model/model.safetensors")
    assert any(k.startswith("deep_supervision_heads.") for k in weights)  # the exported net has its heads
