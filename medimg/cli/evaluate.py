"""``medimg evaluate MODEL``: per-case metrics, CIs, subgroups, comparison and an HTML report.

The work is done by :func:`medimg.inference.evaluate_model.evaluate_model`.
"""

from __future__ import annotations

import argparse

from medimg.cli.output import add_json_flag, emit, options


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on labelled cases: per-case CSV, CIs, subgroups, plots, HTML report",
        description="Score a trained model (model folder, MLflow run id, or .ckpt) on the cases of a "
        "manifest (default: the test split of the manifest the run was trained with), in each case's "
        "original geometry. Writes per_case.csv (Dice, HD95, surface metrics... or probability, "
        "prediction, correct), summary.json with patient-level bootstrap CIs, subgroup analyses (--by), "
        "a paired comparison with a second model (--compare), PNG plots and a self-contained "
        "report.html; all are logged to the model's MLflow run when it has one.",
        epilog="example: medimg evaluate runs/quickstart_seg/model --by site --by manufacturer",
    )
    p.add_argument("model", help="model folder, MLflow run id (runs:/<id>), or .ckpt")
    p.add_argument("--manifest", default=None, help="manifest CSV of labelled cases (default: the run's)")
    p.add_argument(
        "--split", default="test", help="which split of the manifest to score ('all' for every row)"
    )
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="manifest metadata column for a subgroup analysis (repeatable), e.g. --by site",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="MODEL2",
        help="second model (or a per_case.csv) scored on the same cases for a paired comparison",
    )
    p.add_argument("--out", default=None, help="output folder (default: <run outputs>/evaluation)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (for run ids and logging)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    add_json_flag(p)
    return p


def execute(args: argparse.Namespace) -> int:
    from medimg.inference.evaluate_model import evaluate_model
    from medimg.inference.predict_cohort import own_runner

    run = own_runner(args.model, "evaluate") or evaluate_model  # the model's task's own (medimg.tasks)
    names = ("manifest", "split", "by", "compare", "out", "tracking_uri", "n_boot")
    document, lines, code = run(args.model, **options(args, names), log=not args.no_log)
    emit(args, document, lines)
    return code
