"""The cohort ledger: an append-only, fsync'd JSON-lines record of finished cases.

One line per event (``done`` or ``failed``), written with a single ``os.write`` on a
file opened with ``O_APPEND`` and followed by ``fsync``. A process killed at any
moment leaves at most one torn final line, which the reader ignores. The latest
line for a case key wins, so a case that failed once and succeeded later is done.

Lines carry pseudonymous case ids and keys only (never names or patient IDs).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LEDGER_GLOB = "ledger*.jsonl"


def ledger_name(shard: tuple[int, int] | None = None) -> str:
    """File name of the ledger for one shard (``ledger.jsonl`` for an unsharded run).

    Example:
        >>> ledger_name((1, 4))
        'ledger-1of4.jsonl'
    """
    if shard is None:
        return "ledger.jsonl"
    return f"ledger-{shard[0]}of{shard[1]}.jsonl"


class Ledger:
    """Append-only record of case results in ``out_dir``.

    Reading merges every ``ledger*.jsonl`` in the folder, so shards of one cohort
    (each writing its own file) see each other's finished cases.

    Example:
        >>> led = Ledger(Path("out"))  # doctest: +SKIP
        >>> led.append({"key": "ab12", "case_id": "case-001", "status": "done", "outputs": []})  # doctest: +SKIP
        >>> led.latest()[("case-001", "ab12")]["status"]  # doctest: +SKIP
        'done'
    """

    def __init__(self, out_dir: Path, shard: tuple[int, int] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / ledger_name(shard)
        self._lock = threading.Lock()
        self._tail_checked = False

    def append(self, entry: dict[str, Any]) -> None:
        """Append one entry as a JSON line and fsync it before returning."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
        with self._lock:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if not self._tail_checked:
                    # A line torn by a kill must not swallow the next entry.
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        line = b"\n" + line
                    self._tail_checked = True
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        """All readable entries of every ledger file in the folder, oldest file first."""
        out: list[dict[str, Any]] = []
        for path in sorted(self.out_dir.glob(LEDGER_GLOB)):
            out.extend(_read_lines(path))
        return out

    def latest(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The latest entry per ``(case_id, key)``; a ``done`` entry is never overridden by a failure.

        Two cases with identical content share a key but not their outputs, hence the
        case id in the index.
        """
        result: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in self.entries():
            key, case_id = entry.get("key"), entry.get("case_id")
            if not key or not case_id:
                continue
            previous = result.get((case_id, key))
            if previous is not None and previous.get("status") == "done" and entry.get("status") != "done":
                # Another shard may have failed on a copy of the same input; done stays done.
                continue
            result[(case_id, key)] = entry
        return result

    def is_done(
        self, case_id: str, key: str, latest: dict[tuple[str, str], dict[str, Any]] | None = None
    ) -> bool:
        """True when case ``case_id`` with ``key`` is recorded done and every output it lists exists."""
        entry = (latest if latest is not None else self.latest()).get((case_id, key))
        if entry is None or entry.get("status") != "done":
            return False
        return outputs_exist(self.out_dir, entry.get("outputs", []))


def outputs_exist(out_dir: Path, outputs: Iterable[str]) -> bool:
    """True when every output (a path relative to ``out_dir``) is a non-empty file."""
    for rel in outputs:
        path = Path(out_dir) / rel
        if not path.is_file() or path.stat().st_size == 0:
            return False
    return True


def _read_lines(path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            # A torn last line after a kill is expected; anything else is worth a warning.
            level = logging.DEBUG if number >= len(lines) - 1 else logging.WARNING
            log.log(level, "%s line %d is not valid JSON; ignored", path, number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
