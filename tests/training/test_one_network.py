"""One network per run: the planner measures the network the study then trains (issue 24, start-up)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from _tiny import tiny_workflow

import medimg.data.planner as planner
import medimg.models.networks as networks
import medimg.training.tasks as tasks
from medimg.config.load import parse_workflow
from medimg.training.run import run_workflow


class Seen(pl.Callback):
    def __init__(self, built: list) -> None:
        self.built, self.net, self.builds_before_training = built, None, -1

    def on_train_start(self, trainer, pl_module) -> None:
        self.net, self.builds_before_training = pl_module.net, len(self.built)


def test_the_planned_network_is_the_trained_one(tmp_path, monkeypatch) -> None:
    built, probed = [], []
    build = networks.build_model

    def counting_build(wf):
        built.append(build(wf))
        return built[-1]

    plan_run = planner.plan_run

    def recording_plan_run(wf, items, net, *args, **kwargs):
        probed.append(net)
        return plan_run(wf, items, net, *args, **kwargs)

    monkeypatch.setattr(networks, "build_model", counting_build)
    monkeypatch.setattr(tasks, "build_model", counting_build)
    monkeypatch.setattr(planner, "plan_run", recording_plan_run)
    raw = tiny_workflow(trainer={"max_epochs": 1}, outputs={"dir": str(tmp_path / "out")})
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "one_network"}
    seen = Seen(built)
    run_workflow(parse_workflow(raw, source="test_one_network"), callbacks=[seen])
    assert seen.builds_before_training == 1, f"built {seen.builds_before_training} times before training"
    assert len(probed) == 1 and probed[0] is built[0] and seen.net is built[0]


def test_the_probe_leaves_the_network_as_built() -> None:
    """The planner's probe (eval mode, no gradient) changes neither weights nor buffers nor the mode."""
    from monai.networks.nets import DynUNet

    torch.manual_seed(0)
    k, s = [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    net = DynUNet(3, 1, 3, k, s, s[1:], filters=[4, 8, 16], norm_name="batch")
    before = {n: v.clone() for n, v in net.state_dict().items()}
    assert planner.activation_bytes_per_voxel(net, probe=16) > 0
    assert net.training
    after = net.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
