"""Verified, cached downloads of weight files (works offline once cached).

A download lands in ``$MEDIMG_CACHE/weights/<sha256>/<file name>`` (default cache
``~/.cache/medimg``). The SHA-256 is required up front: the file is hashed while
it streams into a temporary file in the same folder and only moved into place
when the hash matches. A cached file is re-hashed on every use, so a file that
changed on disk is caught. With no network and no cached copy, the error names
the URL and the exact path to copy the file to.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from medimg.errors import WeightsError
from medimg.io.atomic import atomic_write

CHUNK = 1 << 20


def cache_dir() -> Path:
    """The medimg cache root: ``$MEDIMG_CACHE`` or ``~/.cache/medimg``.

    Example:
        >>> isinstance(cache_dir(), Path)
        True
    """
    return Path(os.environ.get("MEDIMG_CACHE") or Path.home() / ".cache" / "medimg").expanduser()


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file (streamed).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> sha256_of(p)[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` hashes to ``expected``.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> verify_sha256(p, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    """
    actual = sha256_of(path)
    if actual != expected.lower():
        raise WeightsError(
            f"{path}: sha256 mismatch: expected {expected.lower()}, file has {actual}. The file is corrupted "
            f"or was replaced; delete it and fetch it again from a trusted source."
        )


def cached_path(url: str, sha256: str, filename: str | None = None) -> Path:
    """Where the file of ``url`` with ``sha256`` lives in the cache (it may not exist yet).

    Example:
        >>> cached_path("https://example.org/w/enc.safetensors", "0" * 64).name
        'enc.safetensors'
    """
    name = filename or Path(urllib.parse.urlparse(url).path).name or "weights.bin"
    return cache_dir() / "weights" / sha256.lower() / name


def download(url: str, sha256: str, *, filename: str | None = None, timeout: float = 60.0) -> Path:
    """Return the verified local copy of ``url``, downloading it once.

    Args:
        url: ``https://``, ``http://`` or ``file://`` address.
        sha256: Expected hex SHA-256 of the file.
        filename: File name inside the cache (default: last part of the URL path).
        timeout: Seconds to wait for the server.

    Returns:
        Path of the cached, verified file.

    Raises:
        WeightsError: Offline and not cached (naming where to put the file), HTTP error,
            or sha256 mismatch (nothing is kept).

    Example:
        >>> download("https://example.org/enc.safetensors", "0" * 64)  # doctest: +SKIP
    """
    target = cached_path(url, sha256, filename)
    if target.is_file():
        verify_sha256(target, sha256)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with atomic_write(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != sha256.lower():
                raise WeightsError(
                    f"{url}: sha256 mismatch: expected {sha256.lower()}, downloaded file has "
                    f"{digest.hexdigest()}; nothing was cached"
                )
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        _remove_empty(target.parent)
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"cannot download {url} ({reason}) and it is not in the cache. On a machine with network access "
            f"fetch it and copy it to {target} (its sha256 must be {sha256.lower()}), or set MEDIMG_CACHE to a "
            f"cache that holds it."
        ) from exc
    except WeightsError:
        _remove_empty(target.parent)
        raise
    return target


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
