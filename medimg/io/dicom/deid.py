"""De-identification per DICOM PS3.15 Annex E, Basic Application Confidentiality Profile.

Every attribute of Table E.1-1 (:data:`medimg.io.dicom.annex_e.BASIC_PROFILE`, edition
2024b) gets its basic-profile action, in the data set and in every nested sequence item:
X removes, Z empties, D writes a dummy value of the attribute's VR, U replaces the UID
consistently (a keyed hash, so a study stays one study). Compound actions (``X/Z``,
``X/D``, ...) resolve as :data:`COMPOUND_ACTION` says: without an IOD lookup, medimg
picks the alternative that keeps a Type 1/2 attribute conformant. Generic rules keep
the profile safe on attributes the table does not list: every other person name (PN)
is removed, every UID that is not a DICOM-defined UID is replaced, every other
date/time is removed; private attributes, overlays and curves are removed. Patient
Identity Removed and the De-identification Method (code sequence) are recorded.
Patient's Name and Patient ID carry the pseudonymous patient key (a D action), so
de-identified studies of one patient still link up. Images flagged with burned-in
annotation are refused, since the basic profile requires clean pixels.

Options (PS3.15 Table E.1-1 columns): ``retain_uids`` (Retain UIDs Option, 113110:
U actions keep the UID), ``dates="keep"`` (Retain Longitudinal Temporal Information
with Full Dates, 113106: dates, times and the timezone offset are kept), ``dates="shift"``
(Modified Dates, 113107: dates move back by a per-patient keyed offset). Patient's
Birth Date and Time are never retained by the temporal options.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medimg.errors import DataError
from medimg.io.atomic import atomic_write
from medimg.io.dicom.annex_e import BASIC_PROFILE, EDITION
from medimg.io.dicom.discover import Excluded, find_files, safe_name
from medimg.io.dicom.pseudonym import pseudonym, pseudonym_key, pseudonym_uid

log = logging.getLogger("medimg.deid")

DatePolicy = Literal["remove", "keep", "shift"]

#: The single action medimg applies for each compound action of Table E.1-1.
COMPOUND_ACTION = {"Z/D": "Z", "X/Z": "Z", "X/D": "D", "X/Z/D": "Z", "X/Z/U*": "U"}
#: Dummy values (D) by VR; sequences keep their (cleaned) items, UIDs are replaced.
DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "IS": "0", "DS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4, "OL": b"\x00" * 4,
    "OV": b"\x00" * 8, "UN": b"\x00\x00",
}  # fmt: skip
#: Dummy for every text VR not in :data:`DUMMY_BY_VR` (PN, LO, SH, LT, ST, UT, AE, CS, UC, UR).
DUMMY_TEXT = "ANONYMIZED"
#: UIDs defined by the standard (SOP classes, transfer syntaxes, coding schemes) are kept.
_STANDARD_UID = "1.2.840.10008."
_DATE_VRS = ("DA", "DT", "TM")
_FREE_TEXT_VRS = ("PN", "LT", "ST", "UT", "UC")
#: Patient's Birth Date / Time: the temporal options never retain them.
_BIRTH = (0x00100030, 0x00100032)
_TIMEZONE_OFFSET = 0x00080201
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "uids": ("113110", "Retain UIDs Option"),
    "keep": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "shift": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}


def basic_action(tag: int) -> str | None:
    """The single action (X, Z, D or U) medimg applies to ``tag``; None when Table E.1-1 omits it.

    Example:
        >>> basic_action(0x00080080), basic_action(0x00280010)  # Institution Name (X/Z/D), Rows
        ('Z', None)
    """
    action = BASIC_PROFILE.get(int(tag))
    return COMPOUND_ACTION.get(action, action) if action else None


def date_offset_days(patient_id: str, key: bytes | str | None = None) -> int:
    """Per-patient date shift (1..3650 days back), stable for a given key."""
    digest = hmac.new(pseudonym_key(key), f"dates\x00{patient_id}".encode(), hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:4], "big") % 3650


def _shift(value: str, vr: str, days: int) -> str:
    if vr == "DA" and len(value) >= 8:
        return (_dt.datetime.strptime(value[:8], "%Y%m%d") - _dt.timedelta(days=days)).strftime("%Y%m%d")
    if vr == "DT" and len(value) >= 8:
        return _shift(value[:8], "DA", days) + value[8:]
    return value  # times of day carry no date


def _walk(ds: Dataset, visit: Callable[[Dataset, pydicom.DataElement], None]) -> None:
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                _walk(item, visit)
        visit(ds, elem)


def _dummy(vr: str) -> Any:
    return DUMMY_BY_VR.get(vr.split(" or ")[0], DUMMY_TEXT)


def _is_overlay_or_curve(tag: pydicom.tag.BaseTag) -> bool:
    return 0x5000 <= tag.group < 0x5100 or (0x6000 <= tag.group < 0x6100 and tag.element in (0x3000, 0x4000))


def _dummy_free_text(seq: pydicom.DataElement) -> None:
    """D or U on a sequence: keep the cleaned items, overwrite any free text left inside them."""

    def visit(_item: Dataset, elem: pydicom.DataElement) -> None:
        if elem.VR in _FREE_TEXT_VRS and elem.value:
            elem.value = _dummy(elem.VR)

    for item in seq.value or []:
        _walk(item, visit)


def deidentify_dataset(
    ds: Dataset, *, key: bytes | str | None = None, retain_uids: bool = False, dates: DatePolicy = "remove"
) -> Dataset:
    """De-identify ``ds`` in place (basic profile + options) and return it.

    Raises:
        DataError: when the image declares burned-in annotation (pixels would keep PHI).

    Example:
        >>> ds = deidentify_dataset(pydicom.dcmread("ct/IM0001.dcm"), key=b"site-secret")  # doctest: +SKIP
        >>> ds.PatientIdentityRemoved  # doctest: +SKIP
        'YES'
    """
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise DataError("image has burned-in annotation (BurnedInAnnotation=YES); pixel data would keep PHI")
    patient_id = str(ds.get("PatientID", ""))
    days = date_offset_days(patient_id, key)
    ds.remove_private_tags()
    _walk(ds, lambda item, elem: _deidentify_element(item, elem, key, retain_uids, dates, days))
    ds.PatientName = pseudonym(patient_id, "patient", key)
    ds.PatientID = pseudonym(patient_id, "patient", key)
    ds.PatientIdentityRemoved = "YES"
    _record_method(ds, retain_uids, dates)
    if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _replace_uids(elem: pydicom.DataElement, key: bytes | str | None, retain_uids: bool) -> None:
    """Replace non-standard UIDs by their keyed pseudonyms (kept with ``retain_uids``)."""
    if retain_uids or not elem.value:
        return
    values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
    new = [v if str(v).startswith(_STANDARD_UID) else pseudonym_uid(str(v), key) for v in values]
    elem.value = new if len(new) > 1 else new[0]


def _deidentify_element(
    item: Dataset,
    elem: pydicom.DataElement,
    key: bytes | str | None,
    retain_uids: bool,
    dates: DatePolicy,
    days: int,
) -> None:
    """Apply the basic-profile action (with the date and UID options) to one element of ``item``."""
    tag, vr = elem.tag, elem.VR
    action = basic_action(tag)
    if _is_overlay_or_curve(tag):
        del item[tag]
    elif dates != "remove" and (vr in _DATE_VRS or tag == _TIMEZONE_OFFSET) and tag not in _BIRTH:
        if dates == "shift" and elem.value and vr in _DATE_VRS:
            elem.value = _shift(str(elem.value), vr, days)  # K (full dates) or C (modified dates)
    elif action == "X" or (action is None and (vr == "PN" or vr in _DATE_VRS)):
        del item[tag]
    elif action == "Z":
        elem.value = Sequence() if vr == "SQ" else None
    elif vr == "UI" and action in ("U", "D", None):
        _replace_uids(elem, key, retain_uids)
    elif vr == "SQ" and action in ("U", "D"):  # kept: items cleaned on the way up (X/Z/U*: UIDs)
        _dummy_free_text(elem)
    elif action == "D":
        elem.value = _dummy(vr)


def _record_method(ds: Dataset, retain_uids: bool, dates: DatePolicy) -> None:
    """Record the de-identification method (text and codes) and what happened to the dates."""
    options = ["basic"] + (["uids"] if retain_uids else []) + ([dates] if dates != "remove" else [])
    ds.DeidentificationMethod = [f"medimg PS3.15 {EDITION} Annex E"] + [
        _METHOD_CODES[o][1][:64] for o in options
    ]
    codes = []
    for o in options:
        item = Dataset()
        item.CodeValue, item.CodeMeaning = _METHOD_CODES[o]
        item.CodingSchemeDesignator = "DCM"
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    if "LongitudinalTemporalInformationModified" in ds or dates != "keep":
        ds.LongitudinalTemporalInformationModified = {
            "remove": "REMOVED",
            "shift": "MODIFIED",
            "keep": "UNMODIFIED",
        }[dates]


def deidentify_folder(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    key: bytes | str | None = None,
    retain_uids: bool = False,
    dates: DatePolicy = "remove",
) -> tuple[list[Path], list[Excluded]]:
    """De-identify every DICOM file under ``src`` into ``dst``; return written files and exclusions.

    Output files are named from pseudonyms only
    (``dst/<patient_key>/<study_key>/<series_key>/<instance>.dcm``), never from input
    names, and written atomically. A file that cannot be read or cleaned is listed
    with its reason; the others go on.

    Example:
        >>> written, excluded = deidentify_folder("export/", "deid/", key=b"site-secret")  # doctest: +SKIP
    """
    out_root = Path(dst)
    written: list[Path] = []
    excluded: list[Excluded] = []
    for path in find_files(src):
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            excluded.append(Excluded(safe_name(path), f"not a readable DICOM file ({type(exc).__name__})"))
            continue
        pid, study, series = (
            str(ds.get("PatientID", "")),
            str(ds.get("StudyInstanceUID", "")),
            str(ds.get("SeriesInstanceUID", "")),
        )
        try:
            deidentify_dataset(ds, key=key, retain_uids=retain_uids, dates=dates)
        except DataError as exc:
            excluded.append(Excluded(safe_name(path), str(exc), "unsupported"))
            continue
        folder = (
            out_root
            / pseudonym(pid, "patient", key)
            / pseudonym(study, "study", key)
            / pseudonym(series, "series", key)
        )
        target = folder / f"{pseudonym(str(ds.get('SOPInstanceUID', path.name)), 'instance', key)}.dcm"
        with atomic_write(target) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        written.append(target)
    log.info(
        "de-identified %d file(s) into %s; %d excluded", len(written), safe_name(out_root), len(excluded)
    )
    return written, excluded
