"""A trained model as a self-describing folder: ``workflow.yaml`` + ``model.safetensors`` + ``model.json``.

``load_trained`` accepts a model folder, an MLflow run id (``runs:/<id>`` or the bare
id), a registered model (``models:/NAME@ALIAS``) or a Lightning checkpoint; weights are
read with safetensors (no pickle) and checked against their sha256 record before use
(``model.json``, and the hash the MLflow run or model version recorded). Copies fetched
from MLflow live in a temporary folder that is removed once the weights are in memory.
:func:`download_model_folder` finds the folder inside a logged pyfunc (the pyfunc itself, which
wraps this folder for MLflow, is :mod:`medimg.inference.pyfunc`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medimg.config.load import parse_workflow, workflow_to_yaml
from medimg.config.schema import Workflow
from medimg.config.yaml_strict import load_yaml_file, load_yaml_text
from medimg.errors import ConfigError, MedimgError, WeightsError
from medimg.inference.postprocess import POSTPROCESS_FILE, Postprocessing, read_postprocessing
from medimg.io.atomic import atomic_write, atomic_write_text
from medimg.models.download import sha256_of as sha256_file  # one streamed file hash for medimg
from medimg.models.record import WEIGHTS_FILE, Expected, read_record, read_verified, write_record

MODEL_FILE = WEIGHTS_FILE
WORKFLOW_FILE = "workflow.yaml"
WEIGHTS_TAG = "medimg.weights_sha256"
ARTIFACT_KEY = "medimg_model"  # the model folder's artifact in a logged pyfunc (medimg.inference.pyfunc)


def save_trained(net: torch.nn.Module, wf: Workflow, out_dir: str | Path) -> Path:
    """Write ``model.safetensors``, ``workflow.yaml`` and their sha256 record ``model.json`` (atomically)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / POSTPROCESS_FILE).unlink(missing_ok=True)  # chosen for earlier weights: no longer theirs
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_write(out / MODEL_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})  # one key: a byte-stable header
    atomic_write_text(out / WORKFLOW_FILE, workflow_to_yaml(wf))
    write_record(out, (MODEL_FILE, WORKFLOW_FILE))
    return out


@dataclass
class TrainedModel:
    """A network ready for inference with the workflow that trained it."""

    model: torch.nn.Module
    workflow: Workflow
    run_id: str | None
    weights_sha256: str
    source: str
    postprocessing: Postprocessing | None = None  # chosen on validation (postprocessing.json)

    @property
    def task(self) -> str:
        return self.workflow.task

    def preprocess(self, path: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """Preprocess one image the way training did: (C, X, Y, Z) tensor + geometry meta."""
        from medimg.data.transforms import preprocess_image

        img = preprocess_image(self.workflow, path)["image"]
        meta = {
            "affine": img.affine.numpy(),
            "source_affine": img.meta["original_affine"],
            "source_shape": tuple(int(s) for s in img.meta["spatial_shape"]),
        }
        return img.as_tensor(), meta


def _from_folder(
    folder: Path, run_id: str | None, source: str, expected: Expected | None = None, shown: str | None = None
) -> TrainedModel:
    """Build the network of a model folder after checking both files against their records."""
    from medimg.models.exact_load import load_state_exactly, safetensors_from_bytes
    from medimg.models.networks import build_model

    if not folder.is_dir():
        raise WeightsError(
            f"{folder}: not a folder; a trained model folder holds {WORKFLOW_FILE} and {MODEL_FILE}"
        )
    record = read_record(folder)
    weights, weights_sha = read_verified(folder, MODEL_FILE, record, expected, shown=shown)
    # Without model.json (runs logged before medimg wrote one) only MLflow's weights hash vouches.
    wf_bytes, _ = read_verified(folder, WORKFLOW_FILE, record, required=record is not None, shown=shown)
    label = Path(shown) if shown else folder
    wf_path, w_path = label / WORKFLOW_FILE, label / MODEL_FILE
    wf = parse_workflow(
        load_yaml_text(wf_bytes.decode("utf-8", errors="replace"), str(wf_path)), str(wf_path)
    )
    net = build_model(wf)
    load_state_exactly(net, safetensors_from_bytes(weights, str(w_path)), str(w_path))
    post = read_postprocessing(folder, record, shown)
    return TrainedModel(net.eval(), wf, run_id, weights_sha, source, post)


def _run_expected(run_id: str) -> Expected | None:
    """The weights sha256 a medimg run recorded in the tracking database (tag ``medimg.weights_sha256``)."""
    import mlflow

    try:
        tags = mlflow.MlflowClient().get_run(run_id).data.tags
    except Exception as exc:
        raise WeightsError(f"MLflow run {run_id}: cannot read the run ({exc})") from None
    digest = tags.get(WEIGHTS_TAG)
    return Expected(digest.lower(), f"MLflow run {run_id} (tag {WEIGHTS_TAG})") if digest else None


def _from_run(run_id: str, source: str) -> TrainedModel:
    """Fetch a run's ``model`` artifacts into a temporary folder, verify, load, and remove the copy."""
    import mlflow

    expected = _run_expected(run_id)
    with tempfile.TemporaryDirectory(prefix="medimg-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model", dst_path=tmp)
        except Exception as exc:
            raise WeightsError(f"MLflow run {run_id}: cannot fetch its 'model' artifacts ({exc})") from None
        return _from_folder(Path(local), run_id, source, expected, shown=f"runs:/{run_id}/model")


def registered_weights_sha256(model_uri: str) -> tuple[str, str] | None:
    """The weights sha256 recorded for a registered model version, and where it was recorded.

    Reads the version's tag ``medimg.weights_sha256`` (set by
    :func:`medimg.inference.pyfunc.log_pyfunc_model`), else the same tag of the run that logged
    it. ``None`` when neither exists or the URI is not ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``.

    Example:
        >>> registered_weights_sha256("models:/liver_seg@champion")  # doctest: +SKIP
        ('9c1e...', 'registered model liver_seg version 3 (tag medimg.weights_sha256)')
    """
    ref = model_uri[len("models:/") :].strip("/")
    name, at, alias = ref.partition("@")
    name, slash, version = name.partition("/") if not at else (name, "", "")
    if not name or not (alias or (slash and version.isdigit())):
        return None
    import mlflow

    client = mlflow.MlflowClient()
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except Exception as exc:
        raise WeightsError(f"{model_uri}: no such registered model version ({exc})") from None
    tag = WEIGHTS_TAG
    if mv.tags.get(tag):
        return mv.tags[tag].lower(), f"registered model {name} version {mv.version} (tag {tag})"
    run_tags = client.get_run(mv.run_id).data.tags if mv.run_id else {}
    if run_tags.get(tag):
        return run_tags[tag].lower(), f"MLflow run {mv.run_id} (tag {tag})"
    return None


def _from_registry(uri: str) -> TrainedModel:
    """Fetch a registered pyfunc into a temporary folder, verify against the version's record, load."""
    recorded = registered_weights_sha256(uri)
    expected = Expected(*recorded) if recorded else None
    with tempfile.TemporaryDirectory(prefix="medimg-model-") as tmp:
        return _from_folder(download_model_folder(uri, dst=tmp), None, uri, expected, shown=uri)


def download_model_folder(
    model_uri: str, dst: str | Path | None = None, tracking_uri: str | None = None
) -> Path:
    """The medimg model folder inside a logged pyfunc (``models:/NAME@ALIAS``, ``runs:/ID/pyfunc``...).

    Example:
        >>> load_trained(download_model_folder("models:/liver_seg@champion"))  # doctest: +SKIP
    """
    from medimg.telemetry import telemetry_off_by_default

    telemetry_off_by_default()
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=None if dst is None else str(dst)
            )
        )
        conf = load_yaml_file(local / "MLmodel", "MLmodel file")
        artifacts = conf.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        folder = (local / str(artifacts[ARTIFACT_KEY]["path"])).resolve()
    except MedimgError:
        raise
    except (KeyError, TypeError, AttributeError):
        raise WeightsError(
            f"{model_uri}: not a medimg pyfunc model (no artifact {ARTIFACT_KEY!r} in its MLmodel)"
        ) from None
    except Exception as exc:  # MLflow's errors for an unknown name, alias or store
        raise WeightsError(f"{model_uri}: cannot fetch the model from MLflow ({exc})") from None
    if not folder.is_relative_to(local.resolve()):
        raise WeightsError(f"{model_uri}: its MLmodel points {ARTIFACT_KEY!r} outside the model ({folder})")
    return folder


def load_trained(ref: str | Path, tracking_uri: str | None = None) -> TrainedModel:
    """Load a trained model from a folder, an MLflow run (``runs:/ID`` or ``ID``), a registered
    model (``models:/NAME@ALIAS``) or a ``.ckpt``, after checking its weights' sha256.

    Raises:
        WeightsError: Weights or workflow differ from their recorded sha256 (names the file, the
            expected and the actual hash), no record to check against, or weights that do not fit.

    Example:
        >>> tm = load_trained("runs/quickstart_seg/model")  # doctest: +SKIP
        >>> tm.task  # doctest: +SKIP
        'segmentation'
    """
    s = str(ref)
    p = Path(s)
    if p.is_dir() and not s.startswith("models:/"):
        return _from_folder(p, None, s)
    if p.suffix == ".ckpt" and p.is_file():
        return _from_checkpoint(p)
    run_id = s[len("runs:/") :].strip("/").split("/")[0] if s.startswith("runs:/") else s
    is_run = len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)
    if s.startswith("models:/") or is_run:
        from medimg.telemetry import telemetry_off_by_default

        telemetry_off_by_default()
        if tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
        return _from_registry(s) if s.startswith("models:/") else _from_run(run_id, s)
    raise ConfigError(f"{s}: expected a model folder, a .ckpt file, or an MLflow run id (runs:/<id>)")


def _from_checkpoint(path: Path) -> TrainedModel:
    """A medimg Lightning checkpoint (weights-only read; checked against ``<file>.sha256`` when present)."""
    from medimg.models.exact_load import load_state_exactly
    from medimg.models.networks import build_model
    from medimg.models.record import verify_sidecar

    digest = verify_sidecar(path)
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load checkpoint safely (weights_only=True): {exc}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "workflow" not in hparams or "state_dict" not in ckpt:
        raise WeightsError(
            f"{path}: not a medimg training checkpoint (expected hyper_parameters.workflow and state_dict); "
            f"for other weights use model.pretrained"
        )
    wf = parse_workflow(hparams["workflow"], source=str(path))
    net = build_model(wf)
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    load_state_exactly(net, state, str(path))
    return TrainedModel(net.eval(), wf, None, digest or sha256_file(path), str(path))
