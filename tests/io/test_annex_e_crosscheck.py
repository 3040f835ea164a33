"""medimg's PS3.15 Table E.1-1 against an independent machine-readable copy of the same edition.

The independent source is the table bundled by the ``dicom-anonymizer`` package on the
package index (``dicomanonymizer.dicom_anonymization_databases.dicomfields_2024b``), generated
by its authors from the standard's own tables. Both claim edition 2024b; every tag's action must
agree. The standard's pattern rows (Curve Data 50xx,xxxx; Overlay Data 60xx,3000; Overlay
Comments 60xx,4000) are rules in medimg (``medimg.io.dicom.deid``), masked tag ranges there.
"""

from __future__ import annotations

import pytest

from medimg.io.dicom.annex_e import BASIC_PROFILE, EDITION

selector = pytest.importorskip("dicomanonymizer.dicomfields_selector", reason="pip install dicom-anonymizer")

#: Their category name -> the action code as Table E.1-1 writes it.
CATEGORIES = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}  # fmt: skip

#: Deliberate differences from the independent table, tag -> reason. None today.
DELIBERATE: dict[int, str] = {}


def _independent_table() -> tuple[dict[int, str], list[tuple[int, ...]]]:
    db = selector.dicom_anonymization_database_selector(f"dicomfields_{EDITION}")
    table: dict[int, str] = {}
    patterns: list[tuple[int, ...]] = []
    for category, action in CATEGORIES.items():
        for tag in db[category]:
            if len(tag) != 2:  # (group, element, group mask, element mask): a pattern row
                patterns.append(tuple(tag))
                continue
            key = (tag[0] << 16) | tag[1]
            assert table.setdefault(key, action) == action, f"{key:08X} listed twice with different actions"
            table[key] = action
    return table, patterns


def test_every_tag_action_matches_the_independent_table() -> None:
    theirs, _ = _independent_table()
    assert len(theirs) > 600  # the whole table, not an empty or partial copy
    missing = sorted(set(theirs) - set(BASIC_PROFILE) - set(DELIBERATE))
    extra = sorted(set(BASIC_PROFILE) - set(theirs) - set(DELIBERATE))
    differ = sorted(
        t for t in set(theirs) & set(BASIC_PROFILE) if theirs[t] != BASIC_PROFILE[t] and t not in DELIBERATE
    )
    assert not missing, [f"{t:08X} {theirs[t]}" for t in missing]
    assert not extra, [f"{t:08X} {BASIC_PROFILE[t]}" for t in extra]
    assert not differ, [f"{t:08X} medimg {BASIC_PROFILE[t]} vs {theirs[t]}" for t in differ]


def test_pattern_rows_match_the_rule_medimg_applies() -> None:
    """Every tag a pattern row masks is removed by medimg's overlay/curve rule, and no other tag is."""
    from pydicom.tag import Tag

    from medimg.io.dicom.deid import _is_overlay_or_curve

    _, patterns = _independent_table()
    assert len(patterns) == 3

    def masked(tag: int) -> bool:
        return any((tag >> 16) & gm == g and (tag & 0xFFFF) & em == e for g, e, gm, em in patterns)

    probes = [(g << 16) | e for g in (0x5000, 0x5010, 0x50FE, 0x6000, 0x6002, 0x60FE, 0x0010, 0x7FE0)
              for e in (0x0000, 0x0010, 0x3000, 0x4000, 0x0022)]  # fmt: skip
    for tag in probes:
        assert _is_overlay_or_curve(Tag(tag)) == masked(tag), f"{tag:08X}"
