"""A short, PHI-free label for a series, from its SeriesDescription, for output file names.

SeriesDescription is free text: PS3.15 Annex E removes it in the basic profile,
because a technologist may have typed a name, a date or an ID into it. medimg
keeps only what cannot identify anyone: the words of a fixed acquisition
vocabulary (planes, sequences, weightings, contrast phases, body parts,
reconstruction terms) and short technical tokens of at most four letters and at
most three digits (``T1``, ``3D``, ``ep2d``, ``MB4``), unless their letters are
the patient's initials. Every other word is dropped (names, dates, IDs, free
text), as is any word equal to a part of the patient's name or ID.

Example:
    >>> series_label("AX T1 MPRAGE post Gd SMITH JOHN 12/03/2024", forbidden=("Smith^John",))
    'ax-t1-mprage-post-gd'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_LENGTH = 40

_WORDS = """
    t1 t2 pd flair stir dwi dti adc trace fa swi gre se tse fse epi bold fmri mprage spgr bravo vibe space
    cube haste truefisp fiesta tof mra mrv pc asl pcasl perfusion dsc dce localizer localiser scout survey
    fieldmap diffusion resting rest state task sbref mp2rage memprage dir flash fisp ssfp bssfp cine lge
    weighted weighting gradient echo spin inversion recovery multi single shot turbo fast
    pre post gd gad contrast with without w wo c plus
    brain head neck spine cervical thoracic lumbar chest thorax lung lungs abdomen pelvis liver kidney
    kidneys renal cardiac heart knee hip shoulder ankle wrist breast prostate orbit orbits sinus sinuses
    temporal pituitary iac
    ct cta ctp angio venous arterial portal delayed phase soft tissue bone mediastinum window recon mip
    mpr minip thin thick std standard sharp smooth dose low routine helical axial coronal sagittal
    oblique ax sag cor tra transverse obl iso hr high res resolution
    fs fatsat fat sat water in out opp dixon mag magnitude ph real imaginary map maps
    mosaic sms mb ap pa rl lr hf fh si is asc desc int interleaved ascending descending seq sequential
    product wip ortho cl enh nd norm mri cbf rcbf cbv mtt ttp tensor multiphase mapping diff moco
"""
#: Words an acquisition description may keep (lower case).
VOCABULARY = frozenset(_WORDS.split())
_TECHNICAL = re.compile(r"^(?=.*[a-z])(?=.*\d)[a-z\d]+$")


def _technical(word: str) -> bool:
    """At most four letters and three digits, letters and digits both present (``t1``, ``3d``)."""
    letters, digits = sum(c.isalpha() for c in word), sum(c.isdigit() for c in word)
    return bool(_TECHNICAL.match(word)) and letters <= 4 and digits <= 3


def _identity_words(values: Iterable[str]) -> set[str]:
    """Lower-case words of the patient's name and IDs, and the initials of each value.

    ``Smith^John`` gives ``smith``, ``john``, ``sj`` and ``js``.
    """
    words: set[str] = set()
    for value in values:
        parts = [w for w in re.split(r"[^a-z0-9]+", str(value).lower()) if w]
        initials = "".join(w[0] for w in parts if w[0].isalpha())
        words |= set(parts) | ({initials, initials[::-1]} if len(initials) > 1 else set())
    return words


def series_label(description: str, forbidden: Iterable[str] = ()) -> str:
    """The words of ``description`` that cannot identify anyone, joined by ``-`` (may be empty).

    Args:
        description: the SeriesDescription (or ProtocolName) as stored.
        forbidden: identity values of the same file (PatientName, PatientID, ...); their
            words never appear in the label, even when they are also vocabulary words.

    Example:
        >>> series_label("Sag_3D_FLAIR FS")
        'sag-3d-flair-fs'
    """
    banned = _identity_words(forbidden)
    kept: list[str] = []
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(description))  # camelCase: 'fmri_SagAP' -> 'Sag AP'
    for word in re.split(r"[^a-z0-9]+", spaced.lower()):
        if not word or word in banned or word in kept:
            continue
        if word in VOCABULARY or (_technical(word) and re.sub(r"\d", "", word) not in banned):
            kept.append(word)
    label = "-".join(kept)
    return label[:MAX_LENGTH].rstrip("-") if len(label) > MAX_LENGTH else label
