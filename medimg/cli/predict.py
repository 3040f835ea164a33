"""``medimg predict MODEL INPUT...``: cohort inference, model loaded once, resumable.

The arguments make one :class:`medimg.inference.request.PredictRequest`; the model's cohort runner
(:func:`medimg.inference.predict_cohort.cohort_runner`: ``predict_cohort`` or its task's own) runs it.
"""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit
from medimg.cli.predict_options import run_options


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="predict masks/probabilities for a cohort, in each input's own geometry (resumable)",
        description="Apply a trained model to NIfTI files, folders (a hospital export, a study, a series), "
        "folder#series_key, or a manifest CSV (medimg scan's or a training manifest; paths relative to the "
        "manifest). A folder is scanned like medimg scan does: one case per usable DICOM series, named by its "
        "pseudonymous keys; localizers, derived images, secondary captures and non-image objects (SR, ...) "
        "are set aside and listed with their reason in cohort.csv, never read as a volume. The model is loaded once; the next case is read while the current one is on the "
        "network; outputs are written atomically in the background. Masks have exactly the input's shape "
        "and affine. A rerun skips finished cases; a failed case is recorded and the rest go on. "
        "DICOM inputs also get a DICOM SEG and a DICOM SR (TID 1500) referencing the source series. "
        "With --pacs, cases come from a DICOMweb query (QIDO-RS), are retrieved (WADO-RS) and the SEG and "
        "SR are stored back (STOW-RS); credentials come from MEDIMG_PACS_USER/MEDIMG_PACS_PASSWORD or "
        "MEDIMG_PACS_TOKEN, never from the command line. Exit code 0 when no case failed (objects set aside "
        "are not failures), 1 when some cases failed (the summary line gives the counts). "
        "An ensemble averages the class probabilities of several models: repeat --model (then every "
        "positional argument is an input), or give the output folder or parent MLflow run of a "
        "`medimg run --folds k` study; ensemble.json, the DICOM SEG and SR name every member. "
        "A synthesis model folder (a generator) reads no inputs: --class-index C --count N [--seed S] writes N "
        "cases of class C and synthetic_cases.csv (image sha256, generator run id and sha256); resumable.",
        epilog="example: medimg predict runs/quickstart_seg/model scans/ --out predictions/ ; "
        "an ensemble: medimg predict --model runs/cv/fold0_seed0/model --model runs/cv/fold1_seed0/model "
        "scans/ --out predictions/",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="model folder (workflow.yaml + model.safetensors), MLflow run id, .ckpt, or a --folds study "
        "(its output folder or parent run: an ensemble of its members)",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="MODEL",
        help="a member of an ensemble (repeatable); with it, every positional argument is an input",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        help="NIfTI files, folders (DICOM exports, NIfTI), folder#series_key, or a manifest CSV",
    )
    p.add_argument("--out", required=True, help="output folder (cases/<case>/..., cohort summary CSV)")
    run_options(p)
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.errors import ConfigError
    from medimg.inference.predict_cohort import cohort_runner
    from medimg.inference.request import PredictRequest

    models, inputs = args.models, list(args.inputs)
    if models and args.model:
        inputs.insert(0, args.model)
    if not models and not args.model:
        raise ConfigError("give a MODEL (or --model, repeatable, for an ensemble)")
    options = {name: getattr(args, name) for name in PredictRequest.option_names() if hasattr(args, name)}
    options.update(progress=not args.no_progress, store=not args.no_store)  # the parser's --no-... flags
    request = PredictRequest(models or args.model, inputs, args.out, **options)
    # predict_cohort, or the model's task's own (medimg.tasks): each refuses what it does not take
    document, lines, code = cohort_runner(request.model)(request)
    emit(args, document, lines)
    return code
