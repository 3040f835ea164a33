"""A study run: workflow → data → Lightning training → test scoring → MLflow lineage.

Every run records the resolved workflow and its hash, the manifest and its hash, the
code version and the best weights (safetensors) in MLflow, and leaves the same files in
``outputs.dir`` so the study can be inspected without a tracking server.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medimg import __version__
from medimg.config.load import config_hash, workflow_to_dict, workflow_to_yaml
from medimg.config.schema import Workflow
from medimg.errors import DataError
from medimg.io.atomic import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced."""

    run_id: str
    tracking_uri: str
    out_dir: Path
    metrics: dict[str, float]
    per_case: pd.DataFrame
    model_dir: Path
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_data(wf: Workflow) -> pd.DataFrame:
    """Generate the synthetic study when asked, read + check the manifest, assign patient-level splits."""
    from medimg.data.manifest import read_manifest
    from medimg.data.splits import assign_splits

    manifest = Path(wf.data.manifest)
    if not manifest.exists() and wf.data.synthetic is not None:
        from medimg.data.synthetic import write_synthetic_study

        s = wf.data.synthetic
        log.info("generating a synthetic study of %d cases in %s", s.cases, manifest.parent)
        write_synthetic_study(manifest.parent, cases=s.cases, seed=s.seed, shape=s.shape, spacing=s.spacing,
                              oblique_deg=s.oblique_deg)
    df = assign_splits(read_manifest(wf.data, wf.task), wf.data.split)
    for split in ("train", "val"):
        if not (df["split"] == split).any():
            raise DataError(f"{manifest}: no case in the {split!r} split (data.split)")
    return df


def _trainer(wf: Workflow, logger: Any, ckpt_dir: Path, monitor: str, extra_callbacks: list[Any]) -> Any:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    t = wf.trainer
    precision: Any = t.precision
    if precision == "auto":
        gpu = torch.cuda.is_available() and t.accelerator not in ("cpu",)
        precision = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
    elif precision == "32":
        precision = "32-true"
    ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max", save_last=True,
                           save_top_k=1, auto_insert_metric_name=False)
    return pl.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        num_nodes=t.num_nodes, precision=precision, logger=logger, deterministic=t.deterministic,
        check_val_every_n_epoch=t.val_every_n_epochs, gradient_clip_val=t.gradient_clip,
        limit_train_batches=t.limit_train_batches, callbacks=[ckpt, LearningRateMonitor("step"), *extra_callbacks],
        log_every_n_steps=1, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=ckpt_dir.parent,
    ), ckpt


def run_workflow(wf: Workflow, resume: bool = False) -> RunResult:
    """Train and score the study described by ``wf``; return the MLflow run and test metrics.

    Example:
        >>> res = run_workflow(load_workflow("workflows/quickstart_seg.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_dice_mean"]  # doctest: +SKIP
    """
    import lightning.pytorch as pl
    import mlflow
    import torch

    from medimg.data.datasets import case_dicts, make_dataset, make_loader
    from medimg.data.manifest import manifest_hash
    from medimg.inference.model_io import save_trained, sha256_file
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases, summarise
    from medimg.training.tasks import task_class
    from medimg.training.tracking import flatten, git_state, make_logger, resolve_tracking_uri

    t0 = time.perf_counter()
    out = Path(wf.outputs.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    df = prepare_data(wf)
    pl.seed_everything(wf.seed, workers=True, verbose=False)
    if wf.trainer.deterministic:
        from monai.utils import set_determinism

        set_determinism(seed=wf.seed)
    train_ds = make_dataset(wf, case_dicts(df[df.split == "train"], wf.task), train=True, cache_dir=out / "cache")
    val_ds = make_dataset(wf, case_dicts(df[df.split == "val"], wf.task), train=False, cache_dir=out / "cache")
    bs = wf.optim.batch_size
    seg = wf.task == "segmentation"
    train_dl = make_loader(train_ds, bs, True, wf.trainer.num_workers, wf.seed)
    val_dl = make_loader(val_ds, 1 if seg else bs, False, wf.trainer.num_workers, wf.seed)

    uri = resolve_tracking_uri(wf.tracking.uri)
    logger = make_logger(uri, wf.tracking.experiment, wf.tracking.run_name or wf.name)
    run_id = logger.run_id
    cfg_hash, man_hash = config_hash(wf), manifest_hash(df)
    client = mlflow.MlflowClient(uri)
    logger.log_hyperparams(flatten(workflow_to_dict(wf)))
    tags = {"medimg.version": __version__, "medimg.config_hash": cfg_hash, "medimg.manifest_hash": man_hash,
            "medimg.task": wf.task, "medimg.workflow": wf.name, **{f"medimg.{k}": v for k, v in git_state().items()}}
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
    atomic_write_text(out / "workflow.resolved.yaml", workflow_to_yaml(wf))
    atomic_write_text(out / "manifest.csv", df.drop(columns=["target"]).to_csv(index=False))
    client.log_artifact(run_id, str(out / "workflow.resolved.yaml"))
    client.log_artifact(run_id, str(out / "manifest.csv"), "data")

    steps = max(1, len(train_dl))
    module = task_class(wf.task)(workflow_to_dict(wf), steps_per_epoch=steps)
    trainer, ckpt = _trainer(wf, logger, out / "checkpoints", module.monitor, [])
    trainer.fit(module, train_dl, val_dl, ckpt_path="last" if resume else None)

    best = ckpt.best_model_path or ckpt.last_model_path
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    model_dir = save_trained(module.net, wf, out / "model")
    client.log_artifacts(run_id, str(model_dir), "model")
    if wf.tracking.log_checkpoint and best:
        client.log_artifact(run_id, best, "checkpoints")
    client.set_tag(run_id, "medimg.weights_sha256", sha256_file(model_dir / "model.safetensors"))

    test = df[df.split == "test"]
    per_case = pd.DataFrame()
    metrics: dict[str, float] = {}
    if len(test):
        predictor = Predictor(module.net, wf)
        per_case = score_cases(predictor, test, masks_dir=out / "test_predictions" if seg else None)
        atomic_write_text(out / "test_per_case.csv", per_case.to_csv(index=False))
        metrics = summarise(per_case, wf.task)
        for k, v in metrics.items():
            if v == v:  # not NaN
                client.log_metric(run_id, k, v)
        atomic_write_text(out / "test_summary.json", json.dumps(metrics, indent=2))
        client.log_artifact(run_id, str(out / "test_per_case.csv"), "evaluation")
        client.log_artifact(run_id, str(out / "test_summary.json"), "evaluation")
    seconds = time.perf_counter() - t0
    client.log_metric(run_id, "run_seconds", seconds)
    client.set_terminated(run_id, "FINISHED")
    atomic_write_text(out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri}, indent=2))
    return RunResult(run_id, uri, out, metrics, per_case, model_dir, seconds)
