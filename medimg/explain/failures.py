"""Why a case failed, said in one line and without the input's paths (folder names may carry PHI)."""

from __future__ import annotations

import re
from pathlib import Path

from medimg.errors import find_medimg_error
from medimg.explain.cases import ExplainCase


def safe_key(key: str) -> str:
    """A file-system safe folder name for a case key.

    Example:
        >>> safe_key("case 01/a")
        'case_01_a'
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(key)) or "case"


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """One line saying why a case failed: the medimg error if there is one, else the root cause.

    Libraries such as MONAI wrap the real error (sometimes as text, with tracebacks); the
    first ``medimg`` error in the chain or in that text is what the user needs to read.

    Example:
        >>> wrapped = RuntimeError("applying transform")
        >>> wrapped.__cause__ = ValueError("bad header")  # what ``raise ... from`` sets
        >>> failure_reason(wrapped)
        'RuntimeError: applying transform (cause: ValueError: bad header)'
    """
    chain, seen = [exc], {id(exc)}
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        chain.append(nxt)
    own = find_medimg_error(exc)
    if own is not None:
        text = f"{type(own).__name__}: {own}"
    else:
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if chain[-1] is not exc:
            root = chain[-1]
            text += f" (cause: {type(root).__name__}: {str(root).splitlines()[0] if str(root) else ''})"
    text = re.sub(r" object at 0x[0-9a-f]+>", ">", text.splitlines()[0] if text else text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scrub_paths(text: str, case: ExplainCase) -> str:
    """Replace the case's input paths in ``text`` by placeholders (folder names may carry PHI).

    Example:
        >>> from medimg.explain.cases import ExplainCase
        >>> scrub_paths("/data/DOE_JOHN/ct.nii.gz: bad", ExplainCase("c1", "/data/DOE_JOHN/ct.nii.gz"))
        '<image of c1>: bad'
    """
    names: dict[str, str] = {}
    for value, label in ((case.image, "image"), (case.mask, "mask")):
        if value is None:
            continue
        p = Path(value)
        for form in (p, p.absolute(), p.resolve()):
            names[str(form)] = f"<{label} of {case.key}>"
            names[str(form.parent)] = f"<folder of {case.key}>"
    for raw in sorted(names, key=len, reverse=True):
        if raw not in (".", "/", ""):
            text = text.replace(raw, names[raw])
    return text
