"""Synthetic cases from a ``task: synthesis`` generator, added to a classification study's training split.

``data.synthetic_cases: {generator, class_index, count}`` names the generator (its model folder,
or the MLflow run id of its study), the class and how many cases. The cases are sampled once per
generator (weights sha256), class, seed and count into a cache folder and reused after that; they
join the **training split only** (validation and test stay real), with ``synthetic`` true in the
manifest. The resolved workflow records the generator's run id and sha256, so the MLflow params,
``workflow.resolved.yaml`` and a reproduced run name exactly which generator made them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config.schema import Workflow
from medimg.errors import ConfigError, DataError
from medimg.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

KEY = "data.synthetic_cases"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
SAMPLES_FORMAT = "v2"  # in the cache folder's name: cases sampled by an older medimg are not reused


def _is_model_folder(folder: Path) -> bool:
    info = folder / "model.json"
    if not (info.is_file() and (folder / "model.safetensors").is_file()):
        return False
    try:
        return json.loads(info.read_text()).get("task") == "synthesis"
    except (OSError, json.JSONDecodeError):
        return False


def resolve_generator(spec: str, tracking_uri: str, cache: Path) -> Path:
    """The generator's model folder: ``spec`` itself, or the ``model`` artifacts of MLflow run ``spec``.

    Example:
        >>> resolve_generator("runs/synthesis/model", "sqlite:///runs/mlflow.db", Path("/tmp"))  # doctest: +SKIP
    """
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not _is_model_folder(folder):
            raise ConfigError(
                f"{KEY}.generator: {folder} is not a task synthesis model folder (expected model.json "
                "with task 'synthesis' and model.safetensors, as `outputs.dir/model` of a synthesis study)"
            )
        return folder.resolve()
    if not RUN_ID.match(spec):
        raise ConfigError(
            f"{KEY}.generator: {spec!r} is neither an existing model folder nor an MLflow run id "
            "(32 hex digits) of a task synthesis study"
        )
    import mlflow

    from medimg.training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(spec)
    except Exception as exc:
        raise ConfigError(
            f"{KEY}.generator: MLflow run {spec} not found in {uri} (tracking.uri): {exc}"
        ) from None
    if run.data.tags.get("medimg.task") != "synthesis":
        raise ConfigError(
            f"{KEY}.generator: MLflow run {spec} is a task {run.data.tags.get('medimg.task')!r} run, "
            "not a task synthesis one"
        )
    dest = cache / "generators" / spec
    if not _is_model_folder(dest / "model"):
        dest.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(spec, "model", str(dest))
    if not _is_model_folder(dest / "model"):
        raise ConfigError(
            f"{KEY}.generator: MLflow run {spec} has no synthesis model folder in its artifacts"
        )
    return dest / "model"


def load_generator(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The conditional VAE saved in ``folder`` and its ``model.json``."""
    from safetensors.torch import load_file

    from medimg.models.cvae import ConditionalVAE

    info = json.loads((folder / "model.json").read_text())
    net = ConditionalVAE(
        info["grid"], info["num_classes"], info["channels"], info["latent_dim"], info["in_channels"]
    )
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval(), info


def to_source_intensity(x: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Map the network's (preprocessed) intensities back to the training scans' scale where it is known.

    ``minmax`` and ``ct_window`` preprocess every training scan into [0, 1], so a sample is clipped
    to [0, 1] first (a smooth decoder overshoots a little; an overshoot below 0 would become the
    background's level when ``minmax`` is applied again); ``ct_window`` then maps [0, 1] back onto
    the window (HU). ``zscore``, ``clip_zscore`` and ``none`` are left as they are (applied again,
    they give about the same values back).

    Example:
        >>> to_source_intensity(np.array([-0.1, 0.0, 1.0]), {"mode": "ct_window", "window": [-200, 400]}).tolist()
        [-200.0, -200.0, 400.0]
        >>> to_source_intensity(np.array([-0.1, 0.5, 1.2]), {"mode": "minmax", "window": [0, 1]}).tolist()
        [0.0, 0.5, 1.0]
    """
    if intensity["mode"] in ("minmax", "ct_window"):
        x = np.clip(x, 0.0, 1.0)
    if intensity["mode"] == "ct_window":
        lo, hi = intensity["window"]
        return lo + x * (hi - lo)
    return x


def write_samples(
    folder: Path, dest: Path, class_index: int, count: int, seed: int, prefix: str = "synthetic"
) -> list[Path]:
    """Sample ``count`` cases of ``class_index`` from the generator in ``folder`` to ``dest/<prefix>_<i>.nii.gz``.

    Each case lies on the generator's training grid (its affine: the training data's spacing and
    orientation after preprocessing). Cases are drawn in batches of 16, batch ``b`` with seed ``seed * 100003 + b``.

    Example:
        >>> paths = write_samples(Path("runs/synthesis/model"), Path("synth"), 1, 10, seed=0)  # doctest: +SKIP
    """
    from medimg.io.nifti import save_nifti
    from medimg.io.volume import Volume

    net, info = load_generator(folder)
    if not 0 <= class_index < info["num_classes"]:
        raise ConfigError(
            f"class {class_index} is out of range for generator {folder} (classes 0..{info['num_classes'] - 1})"
        )
    affine = np.asarray(info["grid_affine"], dtype=np.float64)
    paths = []
    for b, start in enumerate(range(0, count, 16)):
        batch = net.sample(min(16, count - start), class_index, seed=seed * 100003 + b).numpy()
        for i, img in enumerate(batch):
            data = to_source_intensity(
                img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), info["intensity"]
            )
            path = dest / f"{prefix}_{start + i:05d}.nii.gz"
            paths.append(save_nifti(Volume(data.astype(np.float32), affine), path))
    return paths


def sample_cached(folder: Path, sha: str, class_index: int, count: int, seed: int, cache: Path) -> list[Path]:
    """:func:`write_samples` into ``cache/<sha[:16]>/v2-class<c>-seed<s>-n<count>``, or the cases already there."""
    dest = cache / sha[:16] / f"{SAMPLES_FORMAT}-class{class_index}-seed{seed}-n{count}"
    record = dest / "cases.json"
    if record.is_file():
        paths = [dest / p for p in json.loads(record.read_text())["cases"]]
        if len(paths) == count and all(p.is_file() for p in paths):
            log.info("synthetic cases: %d of class %d reused from %s", count, class_index, dest)
            return paths
    paths = write_samples(folder, dest, class_index, count, seed)
    info = {
        "generator_sha256": sha,
        "class_index": class_index,
        "seed": seed,
        "cases": [p.name for p in paths],
    }
    atomic_write_text(record, json.dumps(info, indent=2))  # written last: a half-written folder is redone
    log.info("synthetic cases: %d of class %d sampled into %s", count, class_index, dest)
    return paths


def add_synthetic_cases(wf: Workflow, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (real cases with their splits) plus ``data.synthetic_cases`` in the training split.

    Every row gets ``synthetic`` (false for the real cases). ``wf.data.synthetic_cases`` gets the
    generator's ``generator_run_id`` and ``generator_sha256`` filled in (a value given in the
    workflow that differs is refused), so the run's params and resolved workflow record them.

    Example:
        >>> df = add_synthetic_cases(wf, assign_splits(read_manifest(wf.data, wf.task), wf.data.split))  # doctest: +SKIP
        >>> set(df.loc[df["synthetic"], "split"])  # doctest: +SKIP
        {'train'}
    """
    from medimg.models.download import cache_dir, sha256_of

    cfg = wf.data.synthetic_cases
    assert cfg is not None
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_dir() / "synthetic"
    folder = resolve_generator(cfg.generator, wf.tracking.uri, cache)
    info = json.loads((folder / "model.json").read_text())
    sha = sha256_of(folder / "model.safetensors")
    _check_generator(cfg, info, sha, wf)
    seed = wf.seed if cfg.seed is None else cfg.seed
    paths = sample_cached(folder, sha, cfg.class_index, cfg.count, seed, cache)
    keys = [f"synthetic_c{cfg.class_index}_s{seed}_{i:05d}" for i in range(len(paths))]
    clash = set(keys) & set(df["case_key"].astype(str))
    if clash:
        raise DataError(f"{wf.data.manifest}: case_key {sorted(clash)[0]!r} is taken by a real case ({KEY})")
    extra = pd.DataFrame({"case_key": keys, "patient_key": keys, "image": [str(p) for p in paths],
                          "target": cfg.class_index, wf.data.label_column: cfg.class_index,
                          "split": "train", "synthetic": True})  # fmt: skip
    out = pd.concat([df.assign(synthetic=False), extra], ignore_index=True)
    cfg.generator_run_id, cfg.generator_sha256 = str(info.get("run_id") or ""), sha
    log.info("%s: %d synthetic cases of class %d (generator run %s, sha256 %s) added to the training split",
             KEY, len(paths), cfg.class_index, cfg.generator_run_id, sha[:12])  # fmt: skip
    return out


def _check_generator(cfg: Any, info: dict[str, Any], sha: str, wf: Workflow) -> None:
    """The generator knows the class asked for and matches the pins given in the workflow."""
    n = int(info["num_classes"])
    if not 0 <= cfg.class_index < n:
        raise ConfigError(
            f"{KEY}.class_index: {cfg.class_index} is out of range for generator {cfg.generator} "
            f"(it learned classes 0..{n - 1})"
        )
    if n != wf.data.num_classes:
        raise ConfigError(
            f"{KEY}.generator: {cfg.generator} learned {n} classes, the study has {wf.data.num_classes} "
            "(data.num_classes)"
        )
    if cfg.generator_sha256 and cfg.generator_sha256 != sha:
        raise ConfigError(
            f"{KEY}.generator_sha256: the workflow pins {cfg.generator_sha256[:16]}..., generator "
            f"{cfg.generator} has {sha[:16]}... (another generator; remove the pin to use it)"
        )
    run_id = str(info.get("run_id") or "")
    if cfg.generator_run_id and cfg.generator_run_id != run_id:
        raise ConfigError(
            f"{KEY}.generator_run_id: the workflow names run {cfg.generator_run_id}, generator "
            f"{cfg.generator} was trained in run {run_id or '(none recorded)'}"
        )
