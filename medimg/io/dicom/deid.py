"""De-identification per DICOM PS3.15 Annex E, Basic Application Confidentiality Profile.

Actions follow Table E.1-1 (basic profile column) for the attributes listed below,
plus generic rules that keep the profile safe on attributes not listed: every
person name (PN) is emptied or removed, every UID that is not a DICOM-defined
UID is replaced (consistently, by a keyed hash, so a study stays one study),
every date/time is emptied (or kept / shifted with the options), private
attributes and overlays/curves are removed. Patient Identity Removed and the
De-identification Method (code sequence) are recorded. Images flagged with
burned-in annotation are refused, since the basic profile requires clean pixels.

Options (PS3.15 Table E.1-1 columns): ``retain_uids`` (Retain UIDs Option, 113110),
``dates="keep"`` (Retain Longitudinal Temporal Information with Full Dates, 113106),
``dates="shift"`` (Modified Dates, 113107: a per-patient keyed offset).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medimg.errors import DataError
from medimg.io.atomic import atomic_write
from medimg.io.dicom.discover import Excluded, find_files, safe_name
from medimg.io.dicom.pseudonym import pseudonym, pseudonym_key, pseudonym_uid

log = logging.getLogger("medimg.deid")

DatePolicy = Literal["remove", "keep", "shift"]

#: Replace with a pseudonymous dummy value (D).
DUMMY = ("PatientName", "PatientID")
#: Zero length (Z): type 2 attributes that must stay present.
ZERO = (
    "AccessionNumber", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID",
    "ContentCreatorName", "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "StudyDate", "StudyTime", "ContentDate", "ContentTime", "VerifyingObserverName", "PersonName",
)  # fmt: skip
#: Remove (X).
REMOVE = (
    "PatientAddress", "PatientBirthName", "PatientMotherBirthName", "PatientBirthTime", "PatientAge",
    "PatientSize", "PatientWeight", "PatientTelephoneNumbers", "PatientTelecomInformation", "OtherPatientIDs",
    "OtherPatientNames", "OtherPatientIDsSequence", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "PatientReligiousPreference", "PatientState",
    "PregnancyStatus", "SmokingStatus", "MedicalAlerts", "Allergies", "CountryOfResidence",
    "RegionOfResidence", "CurrentPatientLocation", "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence",
    "PatientPrimaryLanguageCodeSequence", "ResponsiblePerson", "ResponsibleOrganization", "ResponsiblePersonRole",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "StationName", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "RequestingService", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "StudyDescription", "SeriesDescription", "ProtocolName",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "DerivationDescription", "ImageComments",
    "RequestAttributesSequence", "DeviceSerialNumber", "PlateID", "GantryID", "CassetteID", "DetectorID",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID", "PerformedStationName", "PerformedLocation",
    "PerformedStationAETitle", "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "RequestedProcedureDescription", "RequestedProcedureID", "ReasonForStudy", "ReasonForTheRequestedProcedure",
    "RequestedProcedureComments", "ImagingServiceRequestComments", "AdmissionID", "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID", "ServiceEpisodeDescription", "VisitComments", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence", "ReferencedPatientAliasSequence",
    "ModifiedAttributesSequence", "OriginalAttributesSequence", "DigitalSignaturesSequence", "TextComments",
    "TextString", "FrameComments", "InterpretationText", "ResultsComments", "TopicTitle", "TopicAuthor",
    "AcquisitionComments", "ContrastBolusAgent", "SoftwareVersions", "OrderCallbackPhoneNumber",
    "OrderEnteredBy", "OrderEntererLocation", "ScheduledPerformingPhysicianName", "DataSetTrailingPadding",
    "PersonAddress", "PersonTelephoneNumbers", "InstanceCreatorUID", "StorageMediaFileSetUID",
)  # fmt: skip
#: X/D dates that some IODs require (type 1, e.g. PET Series): replaced by a dummy value.
DATE_DUMMY = {"SeriesDate": "19000101", "SeriesTime": "000000"}
#: UIDs defined by the standard (SOP classes, transfer syntaxes, coding schemes) are kept.
_STANDARD_UID = "1.2.840.10008."
_DATE_VRS = ("DA", "DT", "TM")
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "uids": ("113110", "Retain UIDs Option"),
    "keep": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "shift": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}


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
    for elem in list(ds):
        if elem.tag.group in range(0x5000, 0x5100) or (
            elem.tag.group in range(0x6000, 0x6100) and elem.tag.element in (0x3000, 0x4000)
        ):
            del ds[elem.tag]
    names = set(ZERO) | set(REMOVE) | set(DUMMY)

    def visit(item: Dataset, elem: pydicom.DataElement) -> None:
        kw = elem.keyword
        if kw in REMOVE:
            del item[elem.tag]
        elif kw in ZERO and elem.VR not in _DATE_VRS:
            elem.value = None
        elif elem.VR == "PN" and kw not in names:
            del item[elem.tag]
        elif elem.VR == "UI" and not retain_uids and elem.value:
            values = (
                elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
            )
            new = [v if str(v).startswith(_STANDARD_UID) else pseudonym_uid(str(v), key) for v in values]
            elem.value = new if len(new) > 1 else new[0]
        elif elem.VR in _DATE_VRS and elem.value and dates != "keep":
            if dates == "shift":
                elem.value = _shift(str(elem.value), elem.VR, days)
            elif kw in DATE_DUMMY:
                elem.value = DATE_DUMMY[kw]
            elif kw in ZERO or kw in ("AcquisitionDate", "AcquisitionTime"):
                elem.value = None
            else:
                del item[elem.tag]

    _walk(ds, visit)
    ds.PatientName = pseudonym(patient_id, "patient", key)
    ds.PatientID = pseudonym(patient_id, "patient", key)
    ds.PatientIdentityRemoved = "YES"
    options = ["basic"] + (["uids"] if retain_uids else []) + ([dates] if dates != "remove" else [])
    ds.DeidentificationMethod = ["medimg PS3.15 Annex E"] + [_METHOD_CODES[o][1][:64] for o in options]
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
    if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


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
