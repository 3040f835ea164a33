"""Pseudonymous keys: a keyed hash (HMAC-SHA256) of identifiers, never the identifiers.

Manifests, logs and MLflow runs carry ``patient_key``/``study_key``/``series_key``
made here. Without the secret key nobody can recompute a key from a guessed
PatientID; with it, the same patient always gets the same key (longitudinal
studies link up). The key comes from ``$MEDIMG_PSEUDONYM_KEY`` or from a file
created once with random bytes (``$MEDIMG_HOME/pseudonym.key``, default
``~/.medimg/pseudonym.key``, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from medimg.io.atomic import atomic_write_bytes

ENV_KEY = "MEDIMG_PSEUDONYM_KEY"


def key_path() -> Path:
    """Where the local secret key lives (``$MEDIMG_HOME/pseudonym.key``)."""
    return Path(os.environ.get("MEDIMG_HOME", Path.home() / ".medimg")) / "pseudonym.key"


def pseudonym_key(key: bytes | str | None = None) -> bytes:
    """The secret used for keyed hashes: ``key`` if given, else the environment, else the key file.

    Example:
        >>> len(pseudonym_key(b"site-secret"))
        11
    """
    if key is not None:
        return key.encode() if isinstance(key, str) else key
    env = os.environ.get(ENV_KEY)
    if env:
        return env.encode()
    path = key_path()
    if not path.exists():
        atomic_write_bytes(path, secrets.token_hex(32).encode())
        os.chmod(path, 0o600)
    return path.read_bytes().strip()


def pseudonym(value: str, kind: str, key: bytes | str | None = None, length: int = 16) -> str:
    """Keyed hash of ``value`` as ``"{kind}-{hex}"`` (e.g. ``patient-3f9a...``).

    Example:
        >>> pseudonym("PAT123", "patient", key=b"k")[:8]
        'patient-'
    """
    digest = hmac.new(pseudonym_key(key), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:length]}"


def pseudonym_uid(uid: str, key: bytes | str | None = None) -> str:
    """A new, stable UID (``2.25.<int>``) for ``uid``: the same input always maps to the same output.

    Example:
        >>> pseudonym_uid("1.2.3", key=b"k").startswith("2.25.")
        True
    """
    digest = hmac.new(pseudonym_key(key), f"uid\x00{uid}".encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"
