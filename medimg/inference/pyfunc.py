"""A trained medimg model as an MLflow pyfunc: preprocessing, network and postprocessing in one.

The pyfunc wraps a model folder (``workflow.yaml`` + ``model.safetensors``) and takes a
DataFrame with a column ``image`` (NIfTI files or DICOM series folders) and an optional
column ``output`` (where to write the mask NIfTI). It answers one row per image:

- segmentation: ``image``, ``mask_path``, ``volume_ml_<label>`` per label, ``status``, ``error``;
- classification: ``image``, ``prob_<k>`` per class, ``prediction``, ``status``, ``error``.

A bad image fails its own row (``status`` = ``failed`` with the reason), never the batch.
Masks are those of ``medimg predict``: same predictor, same writer, the input's own grid.
The model is logged *from code* (a three-line script, no pickle) with the medimg package
beside it, so it loads with the exact code of the run that trained it. Every run logs it,
with its signature and a one-row input example; a registry version is added on request.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import medimg.telemetry  # noqa: F401  (turns MLflow telemetry off before mlflow is imported)

# isort: split
import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from medimg.config.schema import Workflow
from medimg.inference.model_io import ARTIFACT_KEY, MODEL_FILE, WORKFLOW_FILE, load_trained, sha256_file
from medimg.tasks import get_task

MODEL_NAME = "pyfunc"
_SCRIPT = '''"""medimg model for MLflow pyfunc, logged from code (no pickle)."""
import mlflow

from medimg.inference.pyfunc import MedimgPyfunc

mlflow.models.set_model(MedimgPyfunc())
'''
EXAMPLE_IMAGE = "scans/case_001.nii.gz"
_FALLBACK_REQUIREMENTS = (
    "torch",
    "monai",
    "lightning",
    "mlflow",
    "nibabel",
    "pydicom",
    "pydantic",
    "pyyaml",
    "numpy",
    "scipy",
    "pandas",
    "safetensors",
    "pylibjpeg",
    "python-gdcm",
)


def _column(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(name)).strip("_") or "label"


def output_columns(wf: Workflow) -> list[str]:
    """The columns the pyfunc answers with, in order, for the model trained by ``wf``.

    Example:
        >>> output_columns(wf)  # doctest: +SKIP
        ['image', 'mask_path', 'volume_ml_organ', 'volume_ml_kidney', 'status', 'error']
    """
    if get_task(wf.task).dense:  # a mask: its path and each label's volume
        labels = [f"volume_ml_{_column(n)}" for v, n in sorted(wf.data.labels.items()) if int(v) != 0]
        return ["image", "mask_path", *labels, "status", "error"]
    probs = [f"prob_{k}" for k in range(wf.data.num_classes)]
    return ["image", *probs, "prediction", "status", "error"]


def model_signature(wf: Workflow) -> ModelSignature:
    """Input/output signature (ColSpec) and the ``output_dir`` parameter of the pyfunc.

    Example:
        >>> sig = model_signature(wf)  # doctest: +SKIP
        >>> sig.inputs.input_names()  # doctest: +SKIP
        ['image', 'output']
    """
    inputs = Schema([ColSpec("string", "image"), ColSpec("string", "output", required=False)])
    types = {
        "image": "string",
        "mask_path": "string",
        "status": "string",
        "error": "string",
        "prediction": "long",
    }
    outputs = Schema([ColSpec(types.get(c, "double"), c) for c in output_columns(wf)])
    params = ParamSchema([ParamSpec("output_dir", "string", "")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> pd.DataFrame:
    """The pyfunc's input in its documented format: one row, an ``image`` path and no ``output``.

    MLflow loads the logged model and predicts this example at log time. The path is a
    placeholder, so the row fails on its own (file not found) before the network runs, and
    with no ``output`` no mask is ever written.

    Example:
        >>> input_example().to_dict("list")
        {'image': ['scans/case_001.nii.gz']}
    """
    return pd.DataFrame({"image": [EXAMPLE_IMAGE]})


def _case_id(image: str) -> str:
    from medimg.inference.inputs import case_id_from_path

    return case_id_from_path(Path(image.rstrip("/\\")))


def _mask_target(image: str, output: Any, output_dir: str) -> Path | None:
    """Where a row's mask goes: ``output`` (a .nii/.nii.gz file, else a folder), or ``output_dir``."""
    text = "" if output is None or (isinstance(output, float) and output != output) else str(output).strip()
    if text:
        path = Path(text)
        return path if path.name.endswith((".nii", ".nii.gz")) else path / f"{_case_id(image)}_mask.nii.gz"
    if output_dir:
        return Path(output_dir) / f"{_case_id(image)}_mask.nii.gz"
    return None


class MedimgPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """MLflow pyfunc around a medimg model folder (the artifact ``medimg_model``).

    Example:
        >>> model = mlflow.pyfunc.load_model("models:/liver_seg@candidate")  # doctest: +SKIP
        >>> model.predict(pd.DataFrame({"image": ["ct.nii.gz"], "output": ["ct_mask.nii.gz"]}))  # doctest: +SKIP
    """

    def load_context(self, context: Any) -> None:
        """Load the weights and the workflow once (CPU, or ``MEDIMG_DEVICE`` / CUDA when available)."""
        import os

        from medimg.inference.predictor import Predictor

        self.trained = load_trained(context.artifacts[ARTIFACT_KEY])
        self.predictor = Predictor(
            self.trained.model,
            self.trained.workflow,
            device=os.environ.get("MEDIMG_DEVICE"),
            postprocessing=self.trained.postprocessing,
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One output row per input row; a failed row carries ``status='failed'`` and the reason."""
        df = pd.DataFrame(model_input)
        if "image" not in df.columns:
            from medimg.errors import DataError

            raise DataError(f"pyfunc input: expected a column 'image'; got columns {list(df.columns)}")
        output_dir = str((params or {}).get("output_dir") or "")
        outputs = df["output"] if "output" in df.columns else [None] * len(df)
        rows = [
            self._predict_one(str(img), out, output_dir)
            for img, out in zip(df["image"], outputs, strict=True)
        ]
        return pd.DataFrame(rows, columns=output_columns(self.trained.workflow))

    def _predict_one(self, image: str, output: Any, output_dir: str) -> dict[str, Any]:
        import numpy as np

        from medimg.inference.cases import CaseInput, CaseOutputs, label_volumes_ml
        from medimg.inference.writers import NiftiMaskWriter

        wf = self.trained.workflow
        row: dict[str, Any] = {"image": image, "status": "done", "error": ""}
        try:
            case_id = _case_id(image)
            if not Path(image).exists():
                raise FileNotFoundError(
                    f"{image}: not found (expected a NIfTI file or a DICOM series folder)"
                )
            pred = self.predictor.predict_path(image, case_id)
            if get_task(wf.task).dense:
                labels = {int(k): v for k, v in wf.data.labels.items() if int(k) != 0}
                mask = pred.mask_volume()
                volumes = label_volumes_ml(mask, labels)
                row.update({f"volume_ml_{_column(n)}": float(volumes.get(n, 0.0)) for n in labels.values()})
                target = _mask_target(image, output, output_dir)
                row["mask_path"] = ""
                if target is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    outs = CaseOutputs(mask=mask, labels=labels)
                    NiftiMaskWriter(target.name)(CaseInput(case_id, (Path(image),)), outs, target.parent)
                    row["mask_path"] = str(target)
            else:
                probs = np.asarray(pred.probs, dtype=np.float64).ravel()
                row.update({f"prob_{k}": float(p) for k, p in enumerate(probs)})
                row["prediction"] = int(np.argmax(probs))
        except Exception as exc:  # one bad image fails its own row, not the batch
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        return row


def pip_requirements() -> list[str]:
    """medimg's runtime dependencies pinned to the versions installed here (never inferred by MLflow).

    Example:
        >>> any(r.startswith("torch==") for r in pip_requirements())
        True
    """
    try:
        names = [r for r in importlib.metadata.requires("medimg") or [] if "extra ==" not in r]
        names = [re.split(r"[<>=!~; \[]", r, maxsplit=1)[0] for r in names]
    except importlib.metadata.PackageNotFoundError:
        names = list(_FALLBACK_REQUIREMENTS)
    pins = []
    for name in names or _FALLBACK_REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def log_pyfunc_model(
    run_id: str, model_dir: Path, tracking_uri: str, registered_name: str | None, alias: str = "candidate"
) -> str:
    """Log ``model_dir`` as the pyfunc ``pyfunc`` of run ``run_id``; register it when asked.

    With ``registered_name``, a new version is registered under it and ``alias`` points at
    it; without, nothing enters the registry. The model carries its signature, a one-row
    input example (:func:`input_example`) and pinned pip requirements. The run keeps its
    status (a running run stays running). Returns ``models:/NAME@ALIAS`` when registered,
    else the logged model's URI.

    Example:
        >>> log_pyfunc_model(res.run_id, res.model_dir, res.tracking_uri, "liver_seg")  # doctest: +SKIP
        'models:/liver_seg@candidate'
    """
    from medimg.config.load import parse_workflow
    from medimg.config.yaml_strict import load_yaml_file

    model_dir = Path(model_dir)
    wf = parse_workflow(load_yaml_file(model_dir / WORKFLOW_FILE), source=str(model_dir / WORKFLOW_FILE))
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    info = _log_in_run(client, run_id, model_dir, wf, registered_name)
    if not registered_name:
        return info.model_uri
    _tag_registered_version(client, registered_name, str(info.registered_model_version), alias, model_dir, wf)
    return f"models:/{registered_name}@{alias}"


def _log_in_run(client: Any, run_id: str, model_dir: Path, wf: Workflow, registered_name: str | None) -> Any:
    """Log the pyfunc from code into run ``run_id``, which keeps its status (running stays running)."""
    before = client.get_run(run_id).info.status
    active = mlflow.active_run()
    with tempfile.TemporaryDirectory(prefix="medimg-pyfunc-") as tmp:
        script = Path(tmp) / "medimg_pyfunc.py"
        script.write_text(_SCRIPT)
        code = Path(tmp) / "code" / "medimg"
        shutil.copytree(
            Path(__file__).resolve().parents[1], code, ignore=shutil.ignore_patterns("__pycache__")
        )
        own_run = active is None or active.info.run_id != run_id
        if own_run:
            mlflow.start_run(run_id=run_id)
        try:
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(script),
                artifacts={ARTIFACT_KEY: str(model_dir)},
                code_paths=[str(code)],
                signature=model_signature(wf),
                input_example=input_example(),
                pip_requirements=pip_requirements(),  # explicit: MLflow never imports the model to infer them
                registered_model_name=registered_name,
                await_registration_for=60,
                metadata={"medimg_task": wf.task, "medimg_workflow": wf.name},
            )
        finally:
            if own_run:
                mlflow.end_run(status=before if before != "RUNNING" else "FINISHED")
                if before == "RUNNING":
                    client.update_run(run_id, status="RUNNING")
    return info


def _tag_registered_version(
    client: Any, registered_name: str, version: str, alias: str, model_dir: Path, wf: Workflow
) -> None:
    """Point ``alias`` at the new registry version and tag it with the task, workflow and weights hash."""
    client.set_registered_model_alias(registered_name, alias, version)
    for key, value in {
        "medimg.task": wf.task,
        "medimg.workflow": wf.name,
        "medimg.weights_sha256": sha256_file(model_dir / MODEL_FILE),
    }.items():
        client.set_model_version_tag(registered_name, version, key, value)
