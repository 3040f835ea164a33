"""Every attribute of PS3.15 Table E.1-1 gets its basic-profile action, options included."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from medimg.io.dicom.annex_e import ACTIONS, BASIC_PROFILE, EDITION
from medimg.io.dicom.deid import COMPOUND_ACTION, basic_action, date_offset_days, deidentify_dataset
from medimg.io.dicom.pseudonym import pseudonym

KEY = b"profile-test-key"
SECRET = "PHISECRET"
UID = "1.2.826.0.1.3680043.8.498.4242"
NESTED_UID = "1.2.826.0.1.3680043.8.498.777"
PATIENT = "MRN-31415"
TEXT_VALUES = {
    "DA": "20200102", "TM": "101010", "DT": "20200102101010", "AS": "045Y", "PN": "Doe^Jane", "UI": UID,
    "UR": "http://phi.example/x", "IS": "7", "DS": "7.5", "AT": 0x00100010,
}  # fmt: skip
NUMBER_VRS = ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD")
BYTE_VRS = ("OB", "OW", "OD", "OF", "OL", "OV", "UN")
DATE_VRS = ("DA", "DT", "TM")


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0]


def _value(vr: str) -> object:
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPInstanceUID = NESTED_UID
        item.TextValue = f"{SECRET} free text"
        return Sequence([item])
    if vr in NUMBER_VRS:
        return 7
    if vr in BYTE_VRS:
        return b"PHISECRET!" + b"\x00" * 6
    return TEXT_VALUES.get(vr, SECRET)


def _phi_dataset() -> Dataset:
    """One data set holding every attribute of the table (file meta apart), each with identifying content."""
    ds = Dataset()
    for tag in BASIC_PROFILE:
        if tag >> 16 != 0x0002:
            ds.add_new(tag, _vr(tag), _value(_vr(tag)))
    ds.PatientID = PATIENT
    ds.SOPInstanceUID = UID
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = UID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _is_empty(elem: pydicom.DataElement) -> bool:
    return elem.value is None or len(elem.value) == 0


@pytest.fixture(scope="module")
def cleaned() -> Dataset:
    return deidentify_dataset(_phi_dataset(), key=KEY)


def test_table_is_complete_and_well_formed() -> None:
    assert EDITION == "2024b"
    assert len(BASIC_PROFILE) >= 300
    assert set(BASIC_PROFILE.values()) == ACTIONS  # every action code of the basic profile occurs
    assert all(keyword_for_tag(tag) for tag in BASIC_PROFILE)  # every tag is a real attribute
    expected = {
        0x00100010: "Z", 0x00080050: "Z", 0x00100030: "Z", 0x00080080: "X/Z/D", 0x0020000D: "U",
        0x00100020: "Z/D", 0x00081030: "X", 0x00080021: "X/D", 0x00080022: "X/Z", 0x00082112: "X/Z/U*",
        0x0040A730: "D", 0x00101010: "X", 0x00080018: "U", 0x00020003: "U", 0x00081010: "X/Z/D",
    }  # fmt: skip
    assert {tag: BASIC_PROFILE[tag] for tag in expected} == expected
    assert set(COMPOUND_ACTION) == {a for a in ACTIONS if "/" in a}
    assert {basic_action(tag) for tag in BASIC_PROFILE} == {"X", "Z", "D", "U"}
    assert basic_action(0x00280010) is None  # Rows: not in the table


@pytest.mark.parametrize("tag", sorted(t for t, a in BASIC_PROFILE.items() if basic_action(t) == "X"))
def test_remove_action(cleaned: Dataset, tag: int) -> None:
    assert tag not in cleaned


@pytest.mark.parametrize("tag", sorted(t for t, a in BASIC_PROFILE.items() if basic_action(t) == "Z"))
def test_zero_length_action(cleaned: Dataset, tag: int) -> None:
    if tag in (0x00100010, 0x00100020):  # Patient's Name / ID carry the pseudonymous patient key
        assert cleaned[tag].value == pseudonym(PATIENT, "patient", KEY)
        return
    assert tag in cleaned and _is_empty(cleaned[tag]), keyword_for_tag(tag)


@pytest.mark.parametrize("tag", sorted(t for t, a in BASIC_PROFILE.items() if basic_action(t) == "D"))
def test_dummy_action(cleaned: Dataset, tag: int) -> None:
    elem, original = cleaned[tag], _value(_vr(tag))
    assert not _is_empty(elem), keyword_for_tag(tag)
    if elem.VR == "SQ":  # items kept, cleaned: free text replaced, UIDs remapped
        item = elem.value[0]
        assert SECRET not in str(item.TextValue) and item.ReferencedSOPInstanceUID != NESTED_UID
    elif elem.VR == "UI":
        assert elem.value != UID and elem.value.startswith("2.25.")
    else:
        assert elem.value != original and SECRET not in str(elem.value), keyword_for_tag(tag)
        if elem.VR in DATE_VRS:
            assert elem.value.startswith(("1900", "0000"))


def test_uid_action_is_consistent(cleaned: Dataset) -> None:
    u_tags = [t for t, a in BASIC_PROFILE.items() if a == "U" and t >> 16 != 0x0002]
    new = {cleaned[t].value for t in u_tags}
    assert len(new) == 1 and UID not in new and next(iter(new)).startswith("2.25.")  # one UID, one pseudonym
    assert cleaned.file_meta.MediaStorageSOPInstanceUID == cleaned.SOPInstanceUID
    again = deidentify_dataset(_phi_dataset(), key=KEY)
    assert again.StudyInstanceUID == cleaned.StudyInstanceUID  # stable across runs with one key
    assert deidentify_dataset(_phi_dataset(), key=b"other").StudyInstanceUID != cleaned.StudyInstanceUID
    for tag in (t for t, a in BASIC_PROFILE.items() if a == "X/Z/U*"):  # sequence kept, UIDs replaced
        item = cleaned[tag].value[0]
        assert item.ReferencedSOPInstanceUID == again[tag].value[0].ReferencedSOPInstanceUID
        assert item.ReferencedSOPInstanceUID != NESTED_UID
    assert cleaned.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # standard UIDs are kept


def test_actions_apply_inside_sequences_and_output_holds_no_phi(cleaned: Dataset, tmp_path: Path) -> None:
    ds = Dataset()
    ds.PatientID = PATIENT
    item = Dataset()
    item.PatientAddress, item.AccessionNumber, item.StudyInstanceUID = "1 Main St", "ACC1", UID
    item.InstitutionName, item.ProtocolName = "St Elsewhere", "Smith protocol"
    item.add_new((0x0011, 0x0010), "LO", "ACME")
    item.add_new((0x0011, 0x1001), "LO", SECRET)
    ds.ProcedureCodeSequence = Sequence([item])
    ds.add_new((0x6000, 0x3000), "OW", b"\x01\x00")
    out = deidentify_dataset(ds, key=KEY).ProcedureCodeSequence[0]
    assert (
        "PatientAddress" not in out
        and _is_empty(out["AccessionNumber"])
        and _is_empty(out["InstitutionName"])
    )
    assert out.ProtocolName == "ANONYMIZED" and out.StudyInstanceUID == cleaned.StudyInstanceUID
    assert (0x0011, 0x1001) not in out and (0x6000, 0x3000) not in ds
    target = tmp_path / "all.dcm"
    saved = copy.deepcopy(cleaned)
    for elem in [e for e in saved if e.tag.group == 0x0000]:
        del saved[elem.tag]
    saved.save_as(target, enforce_file_format=True)
    raw = target.read_bytes().decode("latin-1")
    for needle in (SECRET, "Doe^Jane", PATIENT, "20200102", UID, NESTED_UID):
        assert needle not in raw, needle


def test_retain_uids_and_full_dates_options() -> None:
    ds = deidentify_dataset(_phi_dataset(), key=KEY, retain_uids=True, dates="keep")
    for tag, action in BASIC_PROFILE.items():
        if action == "U" and tag >> 16 != 0x0002:
            assert ds[tag].value == UID, keyword_for_tag(tag)
        elif _vr(tag) in DATE_VRS and tag not in (0x00100030, 0x00100032):
            assert ds[tag].value == TEXT_VALUES[_vr(tag)], keyword_for_tag(tag)  # K, whatever the action
    assert _is_empty(ds["PatientBirthDate"]) and "PatientBirthTime" not in ds  # never retained
    assert ds.TimezoneOffsetFromUTC == SECRET  # kept with full dates
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == NESTED_UID
    assert (
        _is_empty(ds["InstitutionName"]) and "PatientAddress" not in ds
    )  # the rest of the profile still applies
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113110", "113106"]
    assert ds.get("LongitudinalTemporalInformationModified", "UNMODIFIED") == "UNMODIFIED"


def test_modified_dates_option_shifts_every_date_by_one_offset() -> None:
    ds = deidentify_dataset(_phi_dataset(), key=KEY, dates="shift")
    days = date_offset_days(PATIENT, KEY)
    expected = (dt.date(2020, 1, 2) - dt.timedelta(days=days)).strftime("%Y%m%d")
    for tag in BASIC_PROFILE:
        if _vr(tag) in ("DA", "DT") and tag not in (0x00100030,):
            assert str(ds[tag].value)[:8] == expected, keyword_for_tag(tag)
    assert _is_empty(ds["PatientBirthDate"]) and ds.StudyDate == expected
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
