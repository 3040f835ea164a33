"""Class imbalance: ``optim.class_weights`` (schema, resolution from the training split, the loss)
and the plan that writes it for an imbalanced fingerprint and not for a balanced one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from medimg.config.load import parse_workflow
from medimg.data.fingerprint import fingerprint_dataset
from medimg.data.planner import GIB, Machine
from medimg.data.recipe import plan_workflow
from medimg.data.recipe_rules import balanced_class_weights
from medimg.data.synthetic import SyntheticGrid, write_synthetic_study
from medimg.errors import ConfigError
from medimg.training.stages.plan import balanced_sample_weights, resolve_class_weights
from medimg.training.tasks import ClassificationTask

CPU = Machine(ram_available=16 * GIB, disk_free=100 * GIB, cpu_count=2)


def _cls(**optim):
    return {"task": "classification", "data": {"manifest": "m.csv", "num_classes": 3}, "optim": optim}


@pytest.mark.parametrize("counts", [[1185, 150], [6, 2, 4], [10, 10]])
def test_balanced_weights_give_every_class_the_same_total(counts):
    weights = balanced_class_weights(counts)
    n, k = sum(counts), len(counts)
    totals = [w * c for w, c in zip(weights, counts, strict=True)]
    assert totals == pytest.approx([n / k] * k, rel=1e-5)  # each class carries n / k
    assert sum(totals) / n == pytest.approx(1.0, rel=1e-5)  # an average case weighs 1
    assert (weights[0] < weights[1]) == (counts[0] > counts[1])


def test_balanced_weights_with_an_absent_class():
    assert balanced_class_weights([6, 0, 2]) == pytest.approx([8 / 12, 1.0, 8 / 4], rel=1e-6)


def test_auto_is_resolved_from_the_training_split_counts():
    wf = parse_workflow(_cls(class_weights="auto"), source="wf.yaml")
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2 + [{"label": 2}] * 4
    resolved = resolve_class_weights(wf, items)
    assert resolved.optim.class_weights == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    assert wf.optim.class_weights == "auto"  # a copy: the caller's workflow is unchanged
    explicit = parse_workflow(_cls(class_weights=[1.0, 2.0, 3.0]), source="wf.yaml")
    assert resolve_class_weights(explicit, items).optim.class_weights == [1.0, 2.0, 3.0]


def test_weighted_loss_is_the_weighted_mean_of_case_losses():
    weights = [0.5, 2.0, 1.0]
    task = ClassificationTask(parse_workflow(_cls(class_weights=weights), source="wf.yaml").model_dump())
    logits = torch.tensor([[2.0, 0.1, -1.0], [0.3, 0.2, 0.1], [-1.0, 1.5, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0, 1, 1, 2])
    per_case = -torch.log_softmax(logits, 1)[torch.arange(4), target]
    w = torch.tensor(weights)[target]
    expected = float((w * per_case).sum() / w.sum())
    assert float(task.loss(logits, target)) == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(float(per_case.mean()), rel=1e-3)  # the weights change the loss
    assert not any(k.startswith("loss") for k in task.state_dict())  # weights are workflow data only
    plain = ClassificationTask(parse_workflow(_cls(), source="wf.yaml").model_dump())
    assert float(plain.loss(logits, target)) == pytest.approx(float(per_case.mean()), rel=1e-6)


def test_unresolved_auto_is_refused_by_the_task():
    with pytest.raises(ConfigError, match="optim.class_weights: auto"):
        ClassificationTask(parse_workflow(_cls(class_weights="auto"), source="wf.yaml").model_dump())


@pytest.mark.parametrize(
    ("optim", "task", "expected"),
    [
        ({"class_weights": [1.0, 2.0]}, "classification", "2 weights, expected one per class"),
        ({"class_weights": [1.0, 0.0, 2.0]}, "classification", "positive finite weight per class"),
        ({"class_weights": "balanced"}, "classification", "'auto' or 'none'"),
        ({"class_weights": "auto"}, "segmentation", "for classification, not segmentation"),
    ],
)
def test_bad_class_weights_are_refused_naming_the_key(optim, task, expected):
    doc = _cls(**optim) | {"task": task}
    if task == "segmentation":
        doc["data"] = {"manifest": "m.csv", "labels": {0: "background", 1: "organ"}}
    with pytest.raises(ConfigError) as err:
        parse_workflow(doc, source="study.yaml")
    assert "study.yaml" in str(err.value) and "class_weights" in str(err.value)
    assert expected in str(err.value)


def test_balanced_sampler_draws_every_class_equally_often():
    from medimg.data.datasets import make_loader

    items = [{"label": 0}] * 90 + [{"label": 1}] * 10
    weights = balanced_sample_weights(items)
    assert weights[0] == pytest.approx(1 / 90) and weights[-1] == pytest.approx(1 / 10)
    labels = torch.tensor([i["label"] for i in items])
    for prefetch in (False, True):
        loader = make_loader(labels, 10, True, 0, seed=3, prefetch=prefetch, sample_weights=weights)
        drawn = torch.cat([torch.cat(list(loader)) for _ in range(20)])  # 20 epochs of 100 draws
        assert len(drawn) == 2000  # an epoch stays as long as the training split
        share = float(drawn.float().mean())
        assert 0.45 < share < 0.55  # class 1 is 10% of the cases, about half of the draws
    again = make_loader(labels, 10, True, 0, seed=3, prefetch=False, sample_weights=weights)
    first = make_loader(labels, 10, True, 0, seed=3, prefetch=False, sample_weights=weights)
    assert torch.equal(torch.cat(list(again)), torch.cat(list(first)))  # the seed fixes the draws
    plain = torch.cat(list(make_loader(labels, 10, True, 0, seed=3, prefetch=False)))
    assert float(plain.float().mean()) == pytest.approx(0.1)  # shuffle: every case once


def test_balanced_sampler_is_for_classification():
    doc = {
        "task": "segmentation",
        "data": {"manifest": "m.csv", "labels": {0: "bg", 1: "organ"}, "sampler": "balanced"},
    }
    with pytest.raises(ConfigError, match="study.yaml.*data.sampler: balanced is for classification"):
        parse_workflow(doc, source="study.yaml")
    with pytest.raises(
        ConfigError, match=r"study.yaml: data.sampler: Input should be 'shuffle' or 'balanced'"
    ):
        parse_workflow(_cls() | {"data": {"manifest": "m.csv", "sampler": "oversample"}}, source="study.yaml")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_synthetic_study(
        tmp_path_factory.mktemp("cls"),
        cases=8,
        seed=3,
        grid=SyntheticGrid(shape=(16, 16, 16), spacing=(1.5, 1.5, 1.5)),
    )


def test_plan_weights_an_imbalanced_fingerprint_only(study):
    balanced = fingerprint_dataset(study, "classification", label_column="class")
    assert balanced["classes"] == {"0": 4, "1": 4}
    r = plan_workflow(balanced, "classification", CPU, 600, label_column="class")
    assert r.get("optim.class_weights") == "none" and "balanced" in r.reasons["optim.class_weights"]

    df = pd.read_csv(study)
    df["class"] = [1] + [0] * 7  # one case of eight in class 1
    skewed_csv = study.with_name("skewed.csv")
    df.to_csv(skewed_csv, index=False)
    skewed = fingerprint_dataset(skewed_csv, "classification", label_column="class")
    assert skewed["classes"] == {"0": 7, "1": 1}
    r = plan_workflow(skewed, "classification", CPU, 600, label_column="class")
    assert r.get("optim.class_weights") == "auto"
    assert "the smallest class has 1 of 8 cases (12.5%)" in r.reasons["optim.class_weights"]
    assert 'class_weights: "auto"  # the smallest class has 1 of 8' in r.yaml()
    assert parse_workflow(r.workflow, source="plan").optim.class_weights == "auto"


@pytest.mark.slow
def test_run_records_the_resolved_weights(study, tmp_path, monkeypatch):
    import json

    import mlflow
    import yaml

    from medimg.cli.main import main

    monkeypatch.chdir(tmp_path)
    df = pd.read_csv(study)
    df["class"] = [1, 0, 0, 0, 0, 1, 0, 0]
    df["split"] = ["train"] * 6 + ["val", "val"]  # training split: 4 of class 0, 2 of class 1
    df["image"] = [str(study.parent / p) for p in df.image]
    df.to_csv(tmp_path / "m.csv", index=False)
    wf = {
        "name": "weighted", "task": "classification",
        "data": {"manifest": str(tmp_path / "m.csv"), "label_column": "class"},
        "preprocessing": {"spacing": [3.0, 3.0, 3.0], "spatial_size": [8, 8, 8]},
        "augmentation": {"patch_size": None},
        "model": {"name": "patchnet", "params": {"channels": [4, 8, 8], "pools": [1]}},
        "optim": {"class_weights": "auto", "batch_size": 2}, "trainer": {"max_epochs": 1, "accelerator": "cpu"},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}, "outputs": {"dir": "runs/weighted"},
    }  # fmt: skip
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(wf))
    assert main(["run", str(tmp_path / "w.yaml")]) == 0
    expected = balanced_class_weights([4, 2])
    assert expected == pytest.approx([6 / 8, 6 / 4])
    resolved = yaml.safe_load((tmp_path / "runs/weighted/workflow.resolved.yaml").read_text())
    assert resolved["optim"]["class_weights"] == expected
    info = json.loads((tmp_path / "runs/weighted/run.json").read_text())
    params = mlflow.MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.params
    assert json.loads(params["optim.class_weights"]) == expected
