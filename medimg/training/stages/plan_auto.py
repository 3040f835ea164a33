"""``model: auto`` and ``preprocessing: auto``: planned at run time exactly as ``medimg plan`` plans them.

The plan stage (:func:`medimg.training.stages.plan.plan_study`) calls :func:`resolve_auto` first:
the data's fingerprint (``data.fingerprint`` when the workflow names one, else fingerprinted now
and written to ``<outputs.dir>/fingerprint.json``, which the run then logs like a planned one),
this machine (:meth:`~medimg.data.planner.Machine.detect`) and ``trainer.max_time`` go through
:func:`medimg.data.recipe.plan_workflow`, and the planned values replace ``auto`` in a copy of the
workflow. So the resolved workflow (MLflow params, ``workflow.resolved.yaml``, its hash, the
checkpoint) records what ran, and each value is logged with its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medimg.config.schema import ModelConfig, PreprocessingConfig, Workflow
from medimg.errors import ConfigError

log = logging.getLogger(__name__)

PLANNED_PREPROCESSING = ("orientation", "spacing", "intensity", "crop_foreground", "spatial_size")


def wants_plan(wf: Workflow) -> bool:
    """Whether the workflow leaves its model or preprocessing to the plan."""
    return wf.model.name == "auto" or wf.preprocessing.auto


def resolve_auto(wf: Workflow, out: Path) -> Workflow:
    """A copy of ``wf`` with ``model: auto`` / ``preprocessing: auto`` planned from the data and machine.

    Raises:
        ConfigError: a segmentation ``augmentation.patch_size`` given explicitly that the planned
            network's strides do not divide (naming both), or an unreadable ``data.fingerprint``.

    Example:
        >>> wf = resolve_auto(load_workflow("auto.yaml"), Path("runs/auto"))  # doctest: +SKIP
        >>> wf.model.name  # doctest: +SKIP
        'dynunet'
    """
    if not wants_plan(wf):
        return wf
    wf = wf.model_copy(deep=True)
    recipe = _recipe(wf, out)
    if wf.model.name == "auto":
        wf.model = ModelConfig(name=recipe.get("model.name"), params=recipe.get("model.params"))
        _say("model", recipe, "model.name", "model.params")
        _patch_for_model(wf, recipe)
    if wf.preprocessing.auto:
        planned = recipe.get("preprocessing")
        values = {k: planned[k] for k in PLANNED_PREPROCESSING if k in planned}
        wf.preprocessing = PreprocessingConfig(**values, cache=wf.preprocessing.cache)
        _say("preprocessing", recipe, *(f"preprocessing.{k}" for k in values))
    return wf


def _recipe(wf: Workflow, out: Path) -> Any:
    """The plan ``medimg plan`` writes for this workflow's data, on this machine, within its budget."""
    from medimg.config.duration import parse_duration
    from medimg.data.fingerprint import fingerprint_dataset, read_fingerprint, write_fingerprint
    from medimg.data.planner import Machine
    from medimg.data.recipe import plan_workflow

    d = wf.data
    if d.fingerprint:
        fp = read_fingerprint(d.fingerprint)
    else:
        fp = fingerprint_dataset(d.manifest, wf.task, d.label_column, d.image_column)
        path = write_fingerprint(fp, out / "fingerprint.json")
        d.fingerprint = str(path)  # the run logs it (artifact data/, tag medimg.fingerprint_sha256)
        log.info("plan: fingerprinted %s (%d cases) -> %s", d.manifest, fp["n_cases"], path)
    budget = parse_duration(wf.trainer.max_time) if wf.trainer.max_time else None
    return plan_workflow(
        fp, wf.task, Machine.detect(out), budget, d.manifest, d.label_column, d.image_column, wf.name
    )


def _say(section: str, recipe: Any, *keys: str) -> None:
    for key in keys:
        why = recipe.reasons.get(key, "")
        log.info("%s: auto -> %s = %s%s", section, key, recipe.get(key), f"  # {why}" if why else "")


def _patch_for_model(wf: Workflow, recipe: Any) -> None:
    """Segmentation: the planned patch unless one was given; a given one must fit the planned strides."""
    from medimg.data.recipe_rules import divisors

    if wf.augmentation.patch_size is None or "strides" not in wf.model.params:
        return
    planned = recipe.get("augmentation.patch_size")
    if "patch_size" not in wf.augmentation.model_fields_set:
        wf.augmentation.patch_size = tuple(planned)
        _say("augmentation", recipe, "augmentation.patch_size")
        return
    steps = divisors(wf.model.params["strides"])  # type: ignore[arg-type]
    if any(p % s for p, s in zip(wf.augmentation.patch_size, steps, strict=True)):
        raise ConfigError(
            f"augmentation.patch_size {list(wf.augmentation.patch_size)}: model: auto planned a network whose "
            f"strides need multiples of {steps} per axis; expected such a patch (the plan's is {planned}) "
            "or no augmentation.patch_size"
        )
