"""A trained model as a self-describing pair: ``workflow.yaml`` + ``model.safetensors``.

``load_trained`` accepts a model folder, an MLflow run id (``runs:/<id>`` or the bare
id), or a Lightning checkpoint; weights are read with safetensors (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from medimg.config.load import parse_workflow, workflow_to_yaml
from medimg.config.schema import Workflow
from medimg.errors import ConfigError, WeightsError
from medimg.io.atomic import atomic_write, atomic_write_text
from medimg.models.download import sha256_of as sha256_file  # one streamed file hash for medimg

MODEL_FILE = "model.safetensors"
WORKFLOW_FILE = "workflow.yaml"


def save_trained(net: torch.nn.Module, wf: Workflow, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` and ``workflow.yaml`` into ``out_dir`` (atomically)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_write(out / MODEL_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})  # one key: a byte-stable header
    atomic_write_text(out / WORKFLOW_FILE, workflow_to_yaml(wf))
    return out


@dataclass
class TrainedModel:
    """A network ready for inference with the workflow that trained it."""

    model: torch.nn.Module
    workflow: Workflow
    run_id: str | None
    weights_sha256: str
    source: str

    @property
    def task(self) -> str:
        return self.workflow.task

    def preprocess(self, path: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """Preprocess one image the way training did: (C, X, Y, Z) tensor + geometry meta."""
        from medimg.data.loading import raise_medimg_cause
        from medimg.data.transforms import eval_transforms

        try:
            item = eval_transforms(self.workflow, with_label=False)({"image": path})
        except Exception as exc:  # the reader's reason, not MONAI's "applying transform" wrapper
            raise_medimg_cause(exc)
            raise
        img = item["image"]
        meta = {
            "affine": img.affine.numpy(),
            "source_affine": img.meta["original_affine"],
            "source_shape": tuple(int(s) for s in img.meta["spatial_shape"]),
        }
        return img.as_tensor(), meta


def _from_folder(folder: Path, run_id: str | None, source: str) -> TrainedModel:
    from safetensors.torch import load_file

    from medimg.training.tasks import build_model

    wf_path, w_path = folder / WORKFLOW_FILE, folder / MODEL_FILE
    for p in (wf_path, w_path):
        if not p.is_file():
            raise WeightsError(
                f"{p}: not found; a trained model folder holds {WORKFLOW_FILE} and {MODEL_FILE}"
            )
    wf = parse_workflow(yaml.safe_load(wf_path.read_text()), source=str(wf_path))
    net = build_model(wf)
    try:
        state = load_file(str(w_path))
    except Exception as exc:
        raise WeightsError(f"{w_path}: not a valid safetensors file ({exc})") from exc
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{w_path}: weights do not fit network {wf.model.name!r} "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return TrainedModel(net.eval(), wf, run_id, sha256_file(w_path), source)


def load_trained(ref: str | Path, tracking_uri: str | None = None) -> TrainedModel:
    """Load a trained model from a folder, an MLflow run (``runs:/ID`` or ``ID``), a registered
    model (``models:/NAME@ALIAS``) or a ``.ckpt``.

    Example:
        >>> tm = load_trained("runs/quickstart_seg/model")  # doctest: +SKIP
        >>> tm.task  # doctest: +SKIP
        'segmentation'
    """
    s = str(ref)
    p = Path(s)
    if s.startswith("models:/"):  # a registered model, e.g. models:/liver_ct@champion
        from medimg.training.pyfunc import download_model_folder

        return _from_folder(download_model_folder(s, tracking_uri=tracking_uri), None, s)
    if p.is_dir():
        return _from_folder(p, None, s)
    if p.suffix == ".ckpt" and p.is_file():
        return _from_checkpoint(p)
    run_id = s[len("runs:/") :].strip("/").split("/")[0] if s.startswith("runs:/") else s
    if len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id):
        import mlflow

        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model")
        except Exception as exc:
            raise WeightsError(f"MLflow run {run_id}: cannot fetch its 'model' artifacts ({exc})") from exc
        return _from_folder(Path(local), run_id, s)
    raise ConfigError(f"{s}: expected a model folder, a .ckpt file, or an MLflow run id (runs:/<id>)")


def _from_checkpoint(path: Path) -> TrainedModel:
    from medimg.training.tasks import build_model

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load checkpoint safely (weights_only=True): {exc}") from exc
    wf = parse_workflow(ckpt["hyper_parameters"]["workflow"], source=str(path))
    net = build_model(wf)
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    return TrainedModel(net.eval(), wf, None, sha256_file(path), str(path))
