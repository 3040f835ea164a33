"""Stage 1, prepare: the study's data, read, checked and split by patient."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pandas as pd

from medimg.config.schema import Workflow
from medimg.errors import DataError
from medimg.training.stages.records import PreparedData

log = logging.getLogger(__name__)


def global_rank() -> int:
    """This process's rank under torchrun / SLURM / Lightning's launcher (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def prepare_data(wf: Workflow) -> pd.DataFrame:
    """Generate the synthetic study when asked, read + check the manifest, assign patient-level splits.

    ``data.synthetic_cases`` adds generated cases to the training split (and records the generator
    in ``wf``: :func:`medimg.training.stages.prepare_synthetic.add_synthetic_cases`).
    """
    from medimg.data.checks import check_ranges
    from medimg.data.manifest import read_manifest
    from medimg.data.splits import assign_splits

    check_ranges(wf)
    manifest = Path(wf.data.manifest)
    if not manifest.exists() and wf.data.synthetic is not None and global_rank() == 0:
        from medimg.data.synthetic import write_configured_study

        s = wf.data.synthetic
        log.info("generating a synthetic study of %d cases in %s", s.cases, manifest.parent)
        write_configured_study(manifest.parent, s)
    deadline = time.monotonic() + 600
    while not manifest.exists() and wf.data.synthetic is not None and time.monotonic() < deadline:
        time.sleep(0.5)  # another rank is writing the synthetic study
    df = assign_splits(read_manifest(wf.data, wf.task), wf.data.split)
    for split in ("train", "val"):
        if not (df["split"] == split).any():
            raise DataError(f"{manifest}: no case in the {split!r} split (data.split)")
    if wf.data.synthetic_cases is not None:  # sampled cases join the training split only
        from medimg.training.stages.prepare_synthetic import add_synthetic_cases

        df = add_synthetic_cases(wf, df)
    return df


def prepare(wf: Workflow) -> PreparedData:
    """Create ``outputs.dir`` and read the study's cases with their splits (:func:`prepare_data`).

    Example:
        >>> data = prepare(load_workflow("workflows/quickstart_seg.yaml"))  # doctest: +SKIP
        >>> sorted(data.df["split"].unique())  # doctest: +SKIP
        ['test', 'train', 'val']
    """
    out = Path(wf.outputs.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return PreparedData(out=out, df=prepare_data(wf), rank=global_rank())
