"""What ``medimg predict`` asks for, as one value: :class:`PredictRequest`, and :class:`CohortRun`,
the cohort it becomes once its inputs are collected.

Every cohort runner takes one request: :func:`medimg.inference.predict_cohort.predict_cohort` and
a task's own (``medimg.tasks.Task.cohort``: detection, anomaly, superres, synthesis). The command
builds it from its arguments; a Python user builds it the same way and calls the same runner.

Example::

    from medimg.inference.predict_cohort import cohort_runner
    from medimg.inference.request import PredictRequest
    request = PredictRequest("runs/quickstart_seg/model", ["scans/"], "predictions/", tta=True)
    document, lines, code = cohort_runner(request.model)(request)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from medimg.inference.cases import CaseInput, SetAside


@dataclass(frozen=True)
class PredictRequest:
    """One ``medimg predict``: the model, the inputs, the output folder and every option of the command.

    The options default as the command's do; a task's own cohort runner refuses by name those set
    away from their defaults that it does not take (:meth:`refuse_options`), never ignores them.

    Args:
        model: a model folder, MLflow run id, ``models:/`` URI or ``.ckpt``; several for an ensemble.
        inputs: NIfTI files, folders (DICOM exports, NIfTI), ``folder#series_key``, manifest CSVs.
        out: the output folder (``cases/<case>/...``, the cohort summary).
        tracking_uri: the MLflow tracking URI when ``model`` is a run id.
        tta: average over axis flips (test-time augmentation).
        overlap: the sliding-window overlap (None: the workflow's).
        sw_batch_size: windows per forward pass (None: the workflow's; ``"auto"``: planned).
        device: ``cpu``, ``cuda``, ``cuda:1`` (None: cuda when available).
        shard: ``"I/N"``: run shard I of N.
        prefetch: cases read ahead of the network.
        workers: threads reading DICOM headers of input folders (None: up to 4).
        dicom: write DICOM SEG and SR: ``auto`` (for DICOM inputs), ``on``, ``off``.
        pacs: the DICOMweb base URL of a PACS to read cases from (and store results to).
        pacs_study: the StudyInstanceUID the PACS query is restricted to.
        pacs_modality: the modality filter of the PACS query.
        pacs_filter: extra QIDO-RS filters, ``TAG=VALUE``.
        progress: show a progress bar.
        store: with ``pacs``, store the results back.
        class_index: a synthesis model folder (a generator): the class of the cases to generate.
        count: a synthesis model folder: how many cases to generate.
        seed: a synthesis model folder: the seed of the cases (None: 0).

    Example:
        >>> request = PredictRequest("runs/quickstart_seg/model", ["scans/"], "out", tta=True, prefetch=2)
        >>> request.options_set()
        ['tta']
        >>> request.flags(["sw_batch_size", "pacs_filter"])
        '--sw-batch-size, --pacs-filter'
    """

    model: str | Sequence[str]
    inputs: Sequence[str]
    out: str | Path
    tracking_uri: str | None = None
    tta: bool = False
    overlap: float | None = None
    sw_batch_size: Any = None
    device: str | None = None
    shard: str | None = None
    prefetch: int = 2
    workers: int | None = None
    dicom: str = "auto"
    pacs: str | None = None
    pacs_study: str | None = None
    pacs_modality: str | None = None
    pacs_filter: Sequence[str] = ()
    progress: bool = True
    store: bool = True
    class_index: int | None = None
    count: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "pacs_filter", tuple(self.pacs_filter))

    @classmethod
    def option_names(cls) -> list[str]:
        """The options: every field but model, inputs and out.

        Example:
            >>> PredictRequest.option_names()[:3]
            ['tracking_uri', 'tta', 'overlap']
        """
        return [f.name for f in fields(cls)[3:]]

    @property
    def models(self) -> list[str]:
        """The model, or the members of an ensemble, as a list."""
        return [self.model] if isinstance(self.model, str) else list(self.model)

    def options_set(self) -> list[str]:
        """The options (all but model, inputs and out) set away from their defaults, in field order."""
        return [f.name for f in fields(self)[3:] if getattr(self, f.name) != f.default]

    @staticmethod
    def flags(names: Sequence[str]) -> str:
        """The options ``names`` as the command's flags, ``--sw-batch-size, --pacs-filter``."""
        return ", ".join("--" + name.replace("_", "-") for name in names)

    def one_model(self, what: str) -> str:
        """The model of a task's own cohort runner; an ensemble is refused (``what`` names the model)."""
        if len(self.models) != 1:
            from medimg.errors import ConfigError

            raise ConfigError(f"{self.models}: {what} is used alone (no ensembles of them)")
        return self.models[0]

    def refuse_options(self, taken: Sequence[str], what: str) -> None:
        """Refuse by name the options set that a runner does not take (``taken``: the ones it does).

        Example:
            >>> PredictRequest("m", [], "out", tta=True, overlap=0.5).refuse_options(["overlap"], "a toy model")
            Traceback (most recent call last):
            ...
            medimg.errors.ConfigError: m: a toy model does not take --tta
        """
        refused = [name for name in self.options_set() if name not in taken]
        if refused:
            from medimg.errors import ConfigError

            raise ConfigError(f"{self.models[0]}: {what} does not take {self.flags(refused)}")

    def shard_range(self) -> tuple[int, int] | None:
        """``shard`` ``"I/N"`` as ``(I, N)``; None to run every case."""
        from medimg.inference.cases import parse_shard

        return parse_shard(self.shard) if self.shard else None

    def cohort_run(self, cases: Sequence[CaseInput], set_aside: Sequence[SetAside] = ()) -> CohortRun:
        """The cohort of ``cases`` into :attr:`out`, run with the request's prefetch, progress and shard."""
        return CohortRun(cases, self.out, self.prefetch, self.progress, self.shard_range(), set_aside)


@dataclass(frozen=True)
class CohortRun:
    """A cohort to run with :func:`medimg.inference.cohort.run_cohort`: its cases, the output folder
    and how it runs; a model's cohort function adds what predicts and writes.

    Args:
        cases: the cases to predict.
        out_dir: their outputs go to ``out_dir/cases/<case_id>/``; ledger and summary at the top.
        prefetch: how many cases are loaded ahead of the predictor.
        progress: show a progress bar.
        shard: ``(i, n)`` runs only shard ``i`` of ``n``.
        set_aside: input objects that are not cases, listed in the summary with their reason.

    Example:
        >>> run = CohortRun([CaseInput("scan1", (Path("scan1.nii.gz"),))], "out", progress=True)
        >>> run.options()
        {'prefetch': 2, 'progress': True, 'shard': None, 'set_aside': ()}
    """

    cases: Sequence[CaseInput]
    out_dir: str | Path
    prefetch: int = 2
    progress: bool = False
    shard: tuple[int, int] | None = None
    set_aside: Sequence[SetAside] = ()

    def options(self) -> dict[str, Any]:
        """How it runs, as :func:`medimg.inference.cohort.run_cohort`'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)[2:]}
