"""``medimg predict <synthesis model folder> --class-index C --count N --out DIR``: a generator's cases on disk.

A generator reads no scans: instead of inputs it takes the class, the number of cases and a seed,
and writes ``DIR/cases/synthetic_<i>/synthetic.nii.gz`` (on the generator's training grid, in the
training scans' intensity scale) with ``synthetic.json``, and the manifest ``DIR/synthetic_cases.csv``:
``case_key``, ``class``, ``image`` (relative to ``DIR``), ``sha256`` of the image file, the
generator's ``generator_run_id`` and ``generator_sha256`` (its weights), ``seed``. The cases are
the ones a classification study's ``data.synthetic_cases`` adds with the same class, count and
seed (:func:`medimg.training.stages.prepare_synthetic.write_samples`: batch ``b`` of 16 drawn with
seed ``seed * 100003 + b``).

The run is :func:`medimg.inference.cohort.run_cohort`, like every cohort: a fsync'd ledger marks a
case done after its files are in place, so a killed run resumes by running it again and a case
already complete is not generated again; another class, count, seed or generator makes new cases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medimg.errors import ConfigError
from medimg.inference.cases import CaseInput, CaseOutputs
from medimg.inference.cohort import CohortReport, cases_table, run_cohort, settings_hash
from medimg.inference.request import PredictRequest
from medimg.io.atomic import atomic_write_text
from medimg.io.volume import Volume

BATCH = 16  # as prepare_synthetic.write_samples: a case's latent vector depends on its batch
MANIFEST = "synthetic_cases.csv"
COLUMNS = ("case_key", "class", "image", "sha256", "generator_run_id", "generator_sha256", "seed")


def case_ids(count: int) -> list[str]:
    """The cases' names, ``synthetic_00000`` ... (as ``data.synthetic_cases`` names its files)."""
    return [f"synthetic_{i:05d}" for i in range(count)]


def latent(net: Any, index: int, class_index: int, count: int, seed: int) -> torch.Tensor:
    """The latent vector of case ``index``: row ``index % 16`` of its batch's draw (``write_samples``' draw)."""
    b, row = divmod(index, BATCH)
    n = min(BATCH, count - b * BATCH)
    gen = torch.Generator().manual_seed(int(seed * 100003 + b))
    return torch.randn(n, net.latent_dim, generator=gen)[row : row + 1]


class _CaseWriter:
    """``synthetic.nii.gz`` and ``synthetic.json`` (class, seed, generator, the image's sha256)."""

    name = "synthetic"

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def __call__(self, case: CaseInput, outputs: CaseOutputs, case_dir: Path) -> list[Path]:
        from medimg.io.nifti import save_nifti
        from medimg.models.download import sha256_of

        image = save_nifti(outputs.source, case_dir / "synthetic.nii.gz")
        doc = {"case_key": case.case_id, **self.record, "sha256": sha256_of(image)}
        return [image, atomic_write_text(case_dir / "synthetic.json", json.dumps(doc, indent=2) + "\n")]


def generate_cohort(
    model_dir: str | Path,
    class_index: int,
    count: int,
    seed: int,
    out_dir: str | Path,
    *,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    prefetch: int = 2,
) -> CohortReport:
    """Generate ``count`` cases of ``class_index`` from the generator in ``model_dir`` (resumable); the manifest.

    Example:
        >>> generate_cohort("runs/quickstart_synthesis/model", 1, 12, 0, "synth").done  # doctest: +SKIP
        12
    """
    from medimg.models.download import sha256_of
    from medimg.training.stages.prepare_synthetic import load_generator, to_source_intensity

    folder, out = Path(model_dir), Path(out_dir)
    net, info = load_generator(folder)
    if not 0 <= class_index < info["num_classes"]:
        raise ConfigError(
            f"--class-index {class_index}: out of range for generator {folder} "
            f"(classes 0..{info['num_classes'] - 1})"
        )
    if count < 1:
        raise ConfigError(f"--count {count}: expected 1 or more cases to generate")
    weights = sha256_of(folder / "model.safetensors")
    affine = np.asarray(info["grid_affine"], dtype=np.float64)
    record = {"class": class_index, "seed": seed, "generator_run_id": str(info.get("run_id") or ""),
              "generator_sha256": weights}  # fmt: skip
    settings = {"class_index": class_index, "count": count, "seed": seed, "batch": BATCH}
    cases = [
        CaseInput(key, (), content_sha256=hashlib.sha256(key.encode()).hexdigest()) for key in case_ids(count)
    ]

    def load(case: CaseInput) -> torch.Tensor:
        return latent(net, int(case.case_id.split("_")[-1]), class_index, count, seed)

    @torch.no_grad()
    def generate(case: CaseInput, z: torch.Tensor) -> CaseOutputs:
        img = net.decode(z, torch.full((1,), class_index, dtype=torch.long))[0].numpy()
        data = to_source_intensity(
            img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), info["intensity"]
        )
        return CaseOutputs(source=Volume(data.astype(np.float32), affine))

    report = run_cohort(cases, generate, out, load_fn=load, writers=[_CaseWriter(record)], model_key=weights,
                        settings_key=settings_hash(settings),
                        prefetch=prefetch, progress=progress, shard=shard)  # fmt: skip
    write_manifest(out, case_ids(count))
    return report


def write_manifest(out: Path, keys: Sequence[str]) -> Path:
    """``synthetic_cases.csv`` from every complete case's ``synthetic.json`` (image paths relative to ``out``)."""
    return cases_table(
        out, keys, ("synthetic.json", MANIFEST), COLUMNS,
        lambda key, doc: [{**doc, "image": f"cases/{key}/synthetic.nii.gz"}],
    )  # fmt: skip


# the options of medimg predict that a generator uses; the others are refused by name
TAKEN = ("class_index", "count", "seed", "progress", "shard", "prefetch")


def predict_synthesis(request: PredictRequest) -> tuple[dict[str, Any], list[str], int]:
    """``medimg predict`` with a synthesis model folder: generate ``count`` cases of ``class_index``.

    A task's cohort runner (``medimg.tasks.Task.cohort``). Input paths (a generator reads none), an
    ensemble and the options with no meaning here (TTA, a PACS, DICOM output, ...) are refused by name.

    Example:
        >>> predict_synthesis(PredictRequest("runs/quickstart_synthesis/model", ["scans/"], "synth"))
        Traceback (most recent call last):
        ...
        medimg.errors.ConfigError: runs/quickstart_synthesis/model: a synthesis model folder (a generator) reads no scans (scans/ given); give --class-index C --count N [--seed S] to generate cases, or use it in a classification study with data.synthetic_cases: {generator: runs/quickstart_synthesis/model, class_index: C, count: N}
    """
    from medimg.inference.predict_cohort import cohort_result

    folder = request.one_model("a synthesis model folder")
    use = (f"give --class-index C --count N [--seed S] to generate cases, or use it in a classification "
           f"study with data.synthetic_cases: {{generator: {folder}, class_index: C, count: N}}")  # fmt: skip
    if request.inputs:
        raise ConfigError(
            f"{folder}: a synthesis model folder (a generator) reads no scans ({request.inputs[0]} given); {use}"
        )
    request.refuse_options(TAKEN, "a synthesis model folder")
    class_index, count, seed = request.class_index, request.count, request.seed
    if class_index is None or count is None:
        raise ConfigError(f"{folder}: a synthesis model folder generates cases; {use}")
    report = generate_cohort(folder, class_index, count, 0 if seed is None else seed, request.out,
                             progress=request.progress, shard=request.shard_range(),
                             prefetch=request.prefetch)  # fmt: skip
    document, lines, code = cohort_result(report, request.out)
    document["manifest"] = str(Path(request.out) / MANIFEST)
    lines.append(f"synthetic cases manifest: {document['manifest']}")
    return document, lines, code
