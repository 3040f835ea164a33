"""``medimg run --check``: a workflow and its data checked without training, as a library call.

The workflow's ranges, the manifest and the split column (:func:`medimg.training.run.prepare_data`),
every image and mask read as training reads them (:func:`medimg.data.checks.check_case_files`), and
for ``model: auto`` / ``preprocessing: auto`` the plan the run would make. Nothing is written.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from medimg.config.schema import Workflow


def check_workflow(wf: Workflow) -> tuple[dict[str, Any], list[str]]:
    """The check's document and its text lines; a problem raises the error that names it.

    Example:
        >>> document, lines = check_workflow(load_workflow("workflows/quickstart_seg.yaml"))  # doctest: +SKIP
        >>> document["ok"]  # doctest: +SKIP
        True
    """
    from medimg.config.load import config_hash
    from medimg.data.checks import check_case_files
    from medimg.training.run import prepare_data

    df = prepare_data(wf)  # the workflow's ranges, the manifest, the split column
    check_case_files(wf, df)  # every image and mask read as training reads them
    counts = df["split"].value_counts().to_dict()
    digest = config_hash(wf)
    document = {"workflow": wf.name, "config_hash": digest, "cases": len(df), "splits": counts, "ok": True}
    lines = [f"workflow OK ({wf.name}, hash {digest[:12]}); {len(df)} cases: {counts}"]
    planned = planned_values(wf)
    if planned is not None:
        document["planned"] = planned
        lines += [f"planned {key}: {value}" for key, value in planned.items()]
    return document, lines


def planned_values(wf: Workflow) -> dict[str, Any] | None:
    """``model: auto`` / ``preprocessing: auto``: what the run would plan, planned now (a plan that
    cannot be made, e.g. a given patch the planned strides do not divide, is refused here, not after
    the data is cached); ``None`` when nothing is left to the plan. The fingerprint the plan needs
    goes to a temporary folder."""
    from medimg.training.stages.plan_auto import resolve_auto, wants_plan

    if not wants_plan(wf):
        return None
    with tempfile.TemporaryDirectory(prefix="medimg-check-") as tmp:
        resolved = resolve_auto(wf, Path(tmp))
    planned: dict[str, Any] = {}
    if wf.model.name == "auto":
        planned["model"] = {"name": resolved.model.name, "params": dict(resolved.model.params or {})}
    if wf.preprocessing.auto:
        planned["preprocessing"] = resolved.preprocessing.model_dump(mode="json", exclude={"auto", "cache"})
    if list(resolved.augmentation.patch_size or []) != list(wf.augmentation.patch_size or []):
        planned["augmentation.patch_size"] = list(resolved.augmentation.patch_size or [])
    return planned
