"""A study run: workflow → data → Lightning training → test scoring → MLflow lineage.

Every run records the resolved workflow and its hash, the manifest (one MLflow dataset
per split, with each file's sha256), the code version, the environment, the seeds, the
best weights (safetensors) and the pyfunc model in MLflow, and leaves the same files in
``outputs.dir``. ``run.json`` there names the MLflow run from the first moment, so a
killed run resumes (``--resume``) into the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medimg import __version__
from medimg.config.load import config_hash, workflow_to_dict, workflow_to_yaml
from medimg.config.schema import Workflow
from medimg.errors import ConfigError, DataError
from medimg.io.atomic import atomic_write_text
from medimg.io.csvsafe import escape_frame

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


def global_rank() -> int:
    """This process's rank under torchrun / SLURM / Lightning's launcher (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def prepare_data(wf: Workflow) -> pd.DataFrame:
    """Generate the synthetic study when asked, read + check the manifest, assign patient-level splits."""
    from medimg.data.checks import check_ranges
    from medimg.data.manifest import read_manifest
    from medimg.data.splits import assign_splits

    check_ranges(wf)
    manifest = Path(wf.data.manifest)
    if not manifest.exists() and wf.data.synthetic is not None and global_rank() == 0:
        from medimg.data.synthetic import write_synthetic_study

        s = wf.data.synthetic
        log.info("generating a synthetic study of %d cases in %s", s.cases, manifest.parent)
        write_synthetic_study(
            manifest.parent,
            cases=s.cases,
            seed=s.seed,
            shape=s.shape,
            spacing=s.spacing,
            oblique_deg=s.oblique_deg,
        )
    deadline = time.monotonic() + 600
    while not manifest.exists() and wf.data.synthetic is not None and time.monotonic() < deadline:
        time.sleep(0.5)  # another rank is writing the synthetic study
    df = assign_splits(read_manifest(wf.data, wf.task), wf.data.split)
    for split in ("train", "val"):
        if not (df["split"] == split).any():
            raise DataError(f"{manifest}: no case in the {split!r} split (data.split)")
    return df


def ddp_world_size(wf: Workflow) -> int:
    """Processes a DDP run will have (1 when not distributed or not known in advance)."""
    t = wf.trainer
    if t.strategy in ("ddp", "ddp_spawn") and isinstance(t.devices, int):
        return t.devices * t.num_nodes
    return 1


def _trainer(
    wf: Workflow, logger: Any, ckpt_dir: Path, monitor: tuple[str, str], extra_callbacks: list[Any]
) -> Any:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from medimg.training.checkpointing import AtomicCheckpointIO

    t = wf.trainer
    precision: Any = t.precision
    if precision == "auto":
        gpu = torch.cuda.is_available() and t.accelerator not in ("cpu",)
        precision = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
    elif precision == "32":
        precision = "32-true"
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor[0],
        mode=monitor[1],
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # "last" is written after every epoch (after its validation), for --resume
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    trainer = pl.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,
        logger=logger,
        deterministic=t.deterministic,
        check_val_every_n_epoch=t.val_every_n_epochs,
        gradient_clip_val=t.gradient_clip,
        limit_train_batches=t.limit_train_batches,
        callbacks=[ckpt, last, LearningRateMonitor("epoch"), *extra_callbacks],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=1,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=ckpt_dir.parent,
        enable_progress_bar=os.environ.get("CI") != "true",
        # under DDP the training cases are already partitioned per rank, and every rank validates
        # on all validation cases, so reduced validation metrics are exactly the full-set values
        use_distributed_sampler=ddp_world_size(wf) == 1,
    )
    return trainer, ckpt


def _start_run(wf: Workflow, out: Path, uri: str, resume: bool, parent_run_id: str | None) -> Any:
    """The MLflow logger: a new run, or (``resume``) the run named in ``out/run.json``."""
    from medimg.training.tracking import make_logger

    info_path = out / "run.json"
    run_id = None
    if resume:
        if not info_path.is_file():
            raise ConfigError(f"--resume: {info_path} not found; nothing to resume in outputs.dir {out}")
        run_id = json.loads(info_path.read_text())["run_id"]
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None
    return make_logger(uri, wf.tracking.experiment, wf.tracking.run_name or wf.name, run_id=run_id, tags=tags)


def _log_lineage(
    client: Any, run_id: str, wf: Workflow, df: pd.DataFrame, out: Path, caveats: list[str]
) -> None:
    import mlflow

    from medimg.data.manifest import manifest_hash
    from medimg.training.lineage import environment, file_hashes, pip_freeze
    from medimg.training.tracking import flatten, git_state

    client.log_batch(
        run_id, params=[mlflow.entities.Param(k, v) for k, v in flatten(workflow_to_dict(wf)).items()]
    )
    hashes = file_hashes(df)
    env = environment()
    tags = {
        "medimg.version": __version__,
        "medimg.config_hash": config_hash(wf),
        "medimg.manifest_hash": manifest_hash(df),
        "medimg.task": wf.task,
        "medimg.workflow": wf.name,
        "medimg.seed": str(wf.seed),
        "medimg.deterministic": str(wf.trainer.deterministic).lower(),
        "medimg.determinism_caveats": " | ".join(caveats) or "none",
        "medimg.torch": env["torch"],
        "medimg.cuda": env["cuda"],
        "medimg.cudnn": env["cudnn"],
        "medimg.hardware": f"{env['machine']} cpus={env['cpu_count']} gpus={env['gpus'] or 'none'}",
        **{f"medimg.{k}": v for k, v in git_state().items()},
    }
    client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, str(v)[:5000]) for k, v in tags.items()])
    atomic_write_text(out / "workflow.resolved.yaml", workflow_to_yaml(wf))
    saved = df.drop(columns=["target"])
    if wf.task == "segmentation":  # label paths resolved like image paths, so the saved manifest stands alone
        saved[wf.data.label_column] = df["target"]
    atomic_write_text(out / "manifest.csv", escape_frame(saved, ("image", "target")).to_csv(index=False))
    atomic_write_text(out / "file_hashes.csv", escape_frame(hashes, ("path",)).to_csv(index=False))
    atomic_write_text(out / "environment.json", json.dumps(env, indent=2))
    atomic_write_text(out / "requirements.txt", pip_freeze())
    client.log_artifact(run_id, str(out / "workflow.resolved.yaml"))
    for name in ("manifest.csv", "file_hashes.csv"):
        client.log_artifact(run_id, str(out / name), "data")
    for name in ("environment.json", "requirements.txt"):
        client.log_artifact(run_id, str(out / name), "environment")
    try:
        _log_datasets(client, run_id, wf, saved, hashes)
    except Exception as exc:  # pragma: no cover - older/limited tracking servers
        log.warning("could not log the manifest as MLflow datasets: %s", exc)


SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}


def _log_datasets(client: Any, run_id: str, wf: Workflow, saved: pd.DataFrame, hashes: pd.DataFrame) -> None:
    """One MLflow dataset per split of the saved manifest (contexts in :data:`SPLIT_CONTEXTS`).

    Each digest is the content hash of that split's own files, so two runs that trained on the
    same bytes share the training dataset even when their test sets differ. An empty split
    (``test_fraction: 0``) logs no dataset.
    """
    import warnings

    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from medimg.data.manifest import manifest_hash

    inputs = []
    source = str(Path(wf.data.manifest).resolve())
    for split, context in SPLIT_CONTEXTS.items():
        rows = saved[saved["split"] == split].reset_index(drop=True)
        if rows.empty:
            continue
        own = hashes[hashes["case_key"].isin(rows["case_key"])]
        with warnings.catch_warnings():  # MLflow's schema hints about integer columns
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(
                rows,
                source=source,
                name=f"{wf.name}-{split}",
                digest=manifest_hash(own, ("case_key", "role", "sha256"))[:32],
            )
            entity = ds._to_mlflow_entity()
        inputs.append(DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    # through the client, not mlflow.start_run: resuming the run fluently would end it FINISHED mid-training
    client.log_inputs(run_id, datasets=inputs)


def _mark_failed(client: Any, run_id: str, uri: str, out: Path, exc: BaseException) -> None:
    """Record a failed run in MLflow (status FAILED, the reason as a tag) and in ``run.json``."""
    from medimg.errors import find_medimg_error

    cause = find_medimg_error(exc) or exc
    reason = f"{type(cause).__name__}: {cause}"[:5000]
    try:
        client.set_tag(run_id, "medimg.failure", reason)
        client.set_terminated(run_id, "FAILED")
    except Exception as err:  # pragma: no cover - the tracking server is gone too
        log.warning("could not mark MLflow run %s FAILED: %s", run_id, err)
    atomic_write_text(
        out / "run.json",
        json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "failed", "reason": reason}, indent=2),
    )


def run_workflow(wf: Workflow, resume: bool = False, parent_run_id: str | None = None) -> RunResult:
    """Train and score the study described by ``wf``; return the MLflow run and test metrics.

    Example:
        >>> res = run_workflow(load_workflow("workflows/quickstart_seg.yaml"))  # doctest: +SKIP
        >>> res.metrics["test_dice_mean"]  # doctest: +SKIP
    """
    import mlflow
    import torch

    from medimg.data.datasets import case_dicts, make_dataset, make_loader
    from medimg.data.loading import raise_medimg_cause
    from medimg.data.planner import plan_run
    from medimg.inference.model_io import save_trained, sha256_file
    from medimg.inference.predictor import Predictor
    from medimg.inference.score import score_cases, summarise
    from medimg.models.networks import build_model
    from medimg.training.checkpointing import RngState
    from medimg.training.determinism import configure_determinism
    from medimg.training.tasks import task_class
    from medimg.training.tracking import resolve_tracking_uri

    t0 = time.perf_counter()
    rank = global_rank()
    out = Path(wf.outputs.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    df = prepare_data(wf)
    seg = wf.task == "segmentation"
    caveats = configure_determinism(wf.seed, wf.trainer.deterministic, wf.trainer.accelerator)
    world = ddp_world_size(wf)
    train_items = case_dicts(df[df.split == "train"], wf.task)
    if world > 1:  # each rank caches only its own share: host memory does not multiply with ranks
        from monai.data import partition_dataset

        train_items = partition_dataset(train_items, num_partitions=world, even_divisible=True)[rank]
    val_items = case_dicts(df[df.split == "val"], wf.task)
    plan = plan_run(wf, train_items + val_items, build_model(wf))
    per_case = wf.augmentation.samples_per_volume if seg and wf.augmentation.patch_size else 1
    assert plan.patch_batch is not None
    if plan.patch_batch // per_case < wf.optim.batch_size:
        if world > 1:  # every rank must step with the same batch: say so, do not diverge
            log.warning("planner: %s (kept: DDP ranks must agree; lower optim.batch_size)", plan.explain())
        else:  # the study changes, so the resolved workflow (and its hash) records the batch used
            wf = wf.model_copy(deep=True)
            wf.optim.batch_size = plan.patch_batch // per_case
    log.info("planner: %s", plan.explain())
    try:  # the memory cache reads every case now: a refused image stops the run here
        train_ds = make_dataset(wf, train_items, train=True, cache_dir=out / "cache", mode=plan.cache_mode)
        val_ds = make_dataset(wf, val_items, train=False, cache_dir=out / "cache", mode=plan.cache_mode)
    except Exception as exc:
        raise_medimg_cause(exc)
        raise
    train_ds.transform.set_random_state(seed=wf.seed + rank)  # augmentation draws follow the workflow's seed
    train_dl = make_loader(train_ds, wf.optim.batch_size, True, wf.trainer.num_workers, wf.seed)
    val_dl = make_loader(val_ds, 1 if seg else wf.optim.batch_size, False, wf.trainer.num_workers, wf.seed)

    uri = resolve_tracking_uri(wf.tracking.uri)
    logger = _start_run(wf, out, uri, resume, parent_run_id)
    run_id = logger.run_id if rank == 0 else None
    client = mlflow.MlflowClient(uri)
    if rank == 0:
        atomic_write_text(
            out / "run.json", json.dumps({"run_id": run_id, "tracking_uri": uri, "status": "running"})
        )
        if not resume:
            _log_lineage(client, run_id, wf, df, out, caveats)
        client.set_tag(run_id, "medimg.plan", plan.explain()[:5000])

    steps = max(1, len(train_dl))
    module = task_class(wf.task)(workflow_to_dict(wf), steps_per_epoch=steps)
    last = out / "checkpoints" / "last.ckpt"
    if wf.model.pretrained is not None and not (resume and last.is_file()):
        from medimg.models.loading import load_pretrained

        report = load_pretrained(module.net, wf.model.pretrained, encoder_prefixes=module.encoder_prefixes())
        if rank == 0:
            report.log_to_mlflow(run_id, uri)
            client.set_tag(run_id, "medimg.pretrained_source", wf.model.pretrained.source)
            actual = (
                sha256_file(report.path) if report.path and Path(report.path).is_file() else report.sha256
            )
            client.set_tag(run_id, "medimg.pretrained_sha256", str(actual))
    from medimg.models.finetune_callback import FinetuneScheduler

    rng = RngState(train_ds.transform, getattr(train_dl, "generator", None))
    finetune = FinetuneScheduler(wf.finetune, module.encoder_prefixes(), network_attr="net")
    trainer, ckpt = _trainer(
        wf, logger, out / "checkpoints", (module.monitor, module.monitor_mode), [rng, finetune]
    )
    if resume and not last.is_file():
        log.warning("--resume: no checkpoint in %s yet; training from the start", last.parent)
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(last) if resume and last.is_file() else None)
    except Exception as exc:  # a refused case, a NaN loss: the run is FAILED and no model is exported
        if rank == 0 and run_id:
            _mark_failed(client, run_id, uri, out, exc)
        raise_medimg_cause(exc)
        raise
    if trainer.global_rank != 0:
        return RunResult("", uri, out, {}, pd.DataFrame(), out / "model", time.perf_counter() - t0)

    best = ckpt.best_model_path or str(last)
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    # scored and saved in the default layout, as `medimg predict` will load it
    module.net.to(memory_format=torch.contiguous_format)
    model_dir = save_trained(module.net, wf, out / "model")
    client.log_artifacts(run_id, str(model_dir), "model")
    if wf.tracking.log_checkpoint and best:
        client.log_artifact(run_id, best, "checkpoints")
    weights_sha = sha256_file(model_dir / "model.safetensors")
    client.set_tag(run_id, "medimg.weights_sha256", weights_sha)

    test = df[df.split == "test"]
    per_case = pd.DataFrame()
    metrics: dict[str, float] = {}
    if len(test):
        predictor = Predictor(module.net, wf, device="cpu" if wf.trainer.accelerator == "cpu" else None)
        per_case = score_cases(predictor, test, masks_dir=out / "test_predictions" if seg else None)
        atomic_write_text(
            out / "test_per_case.csv", escape_frame(per_case, ("image", "target")).to_csv(index=False)
        )
        metrics = summarise(per_case, wf.task)
        for k, v in metrics.items():
            if v == v:  # not NaN
                client.log_metric(run_id, k, v)
        atomic_write_text(out / "test_summary.json", json.dumps(metrics, indent=2))
        client.log_artifact(run_id, str(out / "test_per_case.csv"), "evaluation")
        client.log_artifact(run_id, str(out / "test_summary.json"), "evaluation")
    from medimg.inference.pyfunc import log_pyfunc_model

    try:  # every run logs its pyfunc; only `tracking.register_model` adds a registry version
        t_model = time.perf_counter()
        model_uri = log_pyfunc_model(
            run_id, model_dir, uri, wf.tracking.register_model or None, wf.tracking.model_alias
        )
        log.info("logged the pyfunc model %s in %.1f s", model_uri, time.perf_counter() - t_model)
    except Exception as exc:
        _mark_failed(client, run_id, uri, out, exc)
        raise
    extra: dict[str, Any] = {"model_uri": model_uri}
    seconds = time.perf_counter() - t0
    client.log_metric(run_id, "run_seconds", seconds)
    client.set_terminated(run_id, "FINISHED")
    atomic_write_text(
        out / "run.json",
        json.dumps(
            {
                "run_id": run_id,
                "tracking_uri": uri,
                "status": "finished",
                "weights_sha256": weights_sha,
                **extra,
            },
            indent=2,
        ),
    )
    return RunResult(run_id, uri, out, metrics, per_case, model_dir, seconds, extra)
