"""Keep identifying columns out of evaluation outputs (CSV, JSON, HTML, MLflow artifacts).

Per-case tables are expected to carry pseudonymous ``case_key`` / ``patient_key`` only.
When a table also holds columns that look like patient identity (``PatientName``,
``PatientID``, ``birth_date``, ``AccessionNumber``...), they are dropped before anything
is written, and the dropped column *names* (never values) are recorded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import pandas as pd

log = logging.getLogger(__name__)

PHI_NAME_PARTS: tuple[str, ...] = (
    "patientname",
    "patientid",
    "birthdate",
    "dateofbirth",
    "accession",
    "medicalrecord",
    "patientaddress",
    "patienttelephone",
    "referringphysician",
    "socialsecurity",
)
"""Column names containing one of these (lower case, letters and digits only) are identifying."""

PHI_NAMES: frozenset[str] = frozenset({"dob", "mrn", "ssn", "name", "patient"})
"""Column names that are identifying on their own."""


def is_identifying_column(name: str) -> bool:
    """True for column names that look like patient identity (``PatientName``, ``birth_date``...).

    Example:
        >>> is_identifying_column("PatientBirthDate"), is_identifying_column("patient_key")
        (True, False)
    """
    norm = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return norm in PHI_NAMES or any(part in norm for part in PHI_NAME_PARTS)


def drop_identifying_columns(frame: pd.DataFrame, keep: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` without identifying columns (``keep`` names are never dropped), and their names.

    Example:
        >>> df = pd.DataFrame({"case_key": ["c1"], "PatientName": ["DOE^JANE"], "dice_1": [0.9]})
        >>> clean, dropped = drop_identifying_columns(df, keep=["case_key"])
        >>> list(clean.columns), dropped
        (['case_key', 'dice_1'], ['PatientName'])
    """
    dropped = [str(c) for c in frame.columns if c not in keep and is_identifying_column(str(c))]
    if dropped:
        log.warning("leaving out identifying columns from the study outputs: %s", ", ".join(dropped))
    return frame.drop(columns=dropped), dropped
