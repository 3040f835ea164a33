"""Stage 6b, postprocess: per label, the postprocessing that raises the mean validation Dice.

The validation cases are predicted on their own grids by the predictor `medimg predict` uses;
the small-object threshold comes from the training labels; the choice
(:func:`medimg.inference.postprocess.choose_postprocessing`) is saved in the model folder
(``postprocessing.json``, recorded in ``model.json``), logged to the run's ``model/`` artifacts
(params ``postprocess.label_<k>``, metrics ``val_pp_dice_<k>_<step>``) and applied by ``score``.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from medimg.config.schema import Workflow
from medimg.training.stages.records import ExportedModel, PreparedData, TrackedRun

log = logging.getLogger(__name__)


def postprocess(wf: Workflow, data: PreparedData, run: TrackedRun, exported: ExportedModel) -> ExportedModel:
    """Choose the postprocessing on the validation split and save it with the model.

    Nothing is chosen (``exported`` comes back as it is) for a task without masks (classification)
    or without validation cases.

    Example:
        >>> exported = postprocess(plan.wf, data, run, exported)  # doctest: +SKIP
        >>> exported.postprocessing.steps  # doctest: +SKIP
        {1: 'keep_largest'}
    """
    from medimg.inference.postprocess import (
        POSTPROCESS_FILE,
        choose_postprocessing,
        save_postprocessing,
        smallest_components_mm3,
        voxel_volume,
    )
    from medimg.inference.predictor import Predictor
    from medimg.io.load import check_label_grid, load_image
    from medimg.tasks import get_task

    val = data.df[data.df.split == "val"]
    if not get_task(wf.task).dense or val.empty:  # per-label masks only
        return exported
    labels = [int(k) for k in wf.data.labels if int(k) != 0]
    predictor = Predictor(exported.net, wf, device="cpu" if wf.trainer.accelerator == "cpu" else None)
    cases = []
    for row in val.itertuples(index=False):
        pred = predictor.predict_path(str(row.image), str(row.case_key))
        ref = load_image(str(row.target)).to_space("RAS")
        check_label_grid((pred.source_shape, pred.source_affine), ref, str(row.image), str(row.target))
        assert pred.mask is not None
        cases.append((pred.mask, np.asarray(ref.data).astype(np.int64), voxel_volume(pred.source_affine)))

    def training_labels():
        for path in data.df[data.df.split == "train"].target:
            vol = load_image(str(path))
            yield np.asarray(vol.data).astype(np.int64), voxel_volume(vol.affine)

    pp = choose_postprocessing(cases, labels, smallest_components_mm3(training_labels(), labels))
    save_postprocessing(exported.model_dir, pp)
    if run.run_id:
        run.client.log_artifact(run.run_id, str(exported.model_dir / POSTPROCESS_FILE), "model")
        run.client.log_artifact(run.run_id, str(exported.model_dir / "model.json"), "model")
        for k in labels:
            run.client.log_param(run.run_id, f"postprocess.label_{k}", pp.steps.get(k, "none"))
            for step, dice in pp.validation[str(k)].items():
                run.client.log_metric(run.run_id, f"val_pp_dice_{k}_{step}", dice)
    log.info("postprocessing chosen on %d validation cases: %s", len(cases), pp.steps or "none")
    return dataclasses.replace(exported, postprocessing=pp)
