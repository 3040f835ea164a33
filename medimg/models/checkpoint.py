"""Read a checkpoint file into a flat ``{key: tensor}`` dict, safely.

Order of trust: ``safetensors`` (no code at all), then ``torch.load(weights_only=True)``
(tensors and plain containers only), and full pickle only when the user set
``allow_pickle``. A pickle that asks for anything beyond a short list of harmless
types (paths, namespaces, numpy arrays, Lightning's ``AttributeDict``) is refused
with the list of what it wanted to import. The format is detected from the file's
first bytes, not from its name.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medimg.errors import WeightsError

# Globals a checkpoint may reference that build data, never run code.
HARMLESS_GLOBALS = (
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "argparse.Namespace",
    "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)
HARMLESS_PREFIXES = ("numpy.dtypes.",)
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "network", "net", "weights", "module")


@dataclass
class Checkpoint:
    """Tensors read from one file, with how they were read.

    Attributes:
        tensors: Flat ``{key: tensor}`` (CPU).
        path: The file.
        format: ``"safetensors"``, ``"torch"`` (weights-only), ``"pickle"`` (trusted by the user)
            or ``"torchscript"``.
        container_key: Where the state dict sat inside the file (``"state_dict"``), or ``None``.
        metadata: Non-tensor entries found next to it (epoch, hyper-parameters, safetensors metadata).
    """

    tensors: dict[str, torch.Tensor]
    path: Path
    format: str
    container_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path) -> str:
    """Return ``"safetensors"``, ``"zip"``, ``"pickle"`` or ``"unknown"`` from the first bytes.

    Example:
        >>> import tempfile, safetensors.torch
        >>> p = Path(tempfile.mkdtemp()) / "w.bin"
        >>> safetensors.torch.save_file({"a": torch.zeros(1)}, str(p))
        >>> detect_format(p)
        'safetensors'
    """
    with open(path, "rb") as handle:
        return format_of_head(handle.read(16))


def format_of_head(head: bytes) -> str:
    """:func:`detect_format` on a file's first bytes (at least 16 when the file has them).

    Example:
        >>> format_of_head(b"PK\\x03\\x04 rest of a torch.save zip")
        'zip'
    """
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _resolve_global(name: str) -> Any | None:
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def _torch_load(path: Path, weights_only: bool) -> Any:
    """``torch.load`` from an open handle: by path, torch picks safetensors from a ``.safetensors`` name."""
    with open(path, "rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=weights_only)


def _torch_load_safely(path: Path, allow_pickle: bool) -> tuple[Any, str]:
    if allow_pickle:
        return _torch_load(path, weights_only=False), "pickle"
    try:
        return _torch_load(path, weights_only=True), "torch"
    except pickle.UnpicklingError as exc:
        first_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    wanted: list[str] = []
    try:
        wanted = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) pickles cannot be inspected without unpickling them
        wanted = []
    harmless = [g for g in wanted if g in HARMLESS_GLOBALS or g.startswith(HARMLESS_PREFIXES)]
    if wanted and len(harmless) == len(wanted):
        objects = [obj for obj in (_resolve_global(g) for g in wanted) if obj is not None]
        if len(objects) == len(wanted):
            with torch.serialization.safe_globals(objects):
                return _torch_load(path, weights_only=True), "torch"
    risky = [g for g in wanted if g not in harmless]
    detail = f"it imports {', '.join(risky)}" if risky else first_error
    raise WeightsError(
        f"{path}: refused to load: this is not a plain weights file ({detail}). Unpickling it could run "
        f"code. Convert it to .safetensors on a trusted machine (medimg weights convert), or, only if you "
        f"trust its origin, set allow_pickle: true in model.pretrained and run with --allow-pickle."
    )


def read_checkpoint(
    path: str | Path, *, allow_pickle: bool = False, checkpoint_key: str | None = None
) -> Checkpoint:
    """Read the tensors of a checkpoint file without running code from it.

    Args:
        path: ``.safetensors``, ``.pt``/``.pth``/``.bin`` state dict, Lightning ``.ckpt``, MONAI ``model.pt``.
        allow_pickle: Permit a full (code-running) unpickle; off by default.
        checkpoint_key: Dotted key of the state dict inside the file; auto-detected when ``None``.

    Returns:
        A :class:`Checkpoint` with CPU tensors.

    Raises:
        WeightsError: Missing, empty, truncated, unsafe, or holding no tensors.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"state_dict": {"net.fc.weight": torch.ones(2, 2)}, "epoch": 3}, p)
        >>> ckpt = read_checkpoint(p)
        >>> list(ckpt.tensors), ckpt.container_key, ckpt.metadata["epoch"]
        (['net.fc.weight'], 'state_dict', 3)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: weights file is empty")
    kind = detect_format(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "zip" and _is_torchscript(path):
        if not allow_pickle:
            raise WeightsError(
                f"{path}: is a TorchScript archive (code and weights); loading it runs its code. Use the "
                f"bundle's model.pt/.safetensors, or allow pickle (--allow-pickle) if you trust it."
            )
        module = torch.jit.load(str(path), map_location="cpu")
        return Checkpoint(dict(module.state_dict()), path, "torchscript")
    if kind == "unknown":
        raise WeightsError(
            f"{path}: not a weights file (expected safetensors, or a torch.save zip/pickle; "
            f"the file may be truncated or a download error page)"
        )
    try:
        obj, how = _torch_load_safely(path, allow_pickle)
    except WeightsError:
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path}: cannot read weights ({type(exc).__name__}: {exc}); truncated file?"
        ) from exc
    tensors, container, meta = extract_state_dict(obj, checkpoint_key, source=str(path))
    return Checkpoint(tensors, path, how, container, meta)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: damaged safetensors file ({exc})") from exc
    if not tensors:
        raise WeightsError(f"{path}: safetensors file holds no tensors")
    return Checkpoint(tensors, path, "safetensors", None, metadata)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(
    obj: Any, checkpoint_key: str | None = None, *, source: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], str | None, dict[str, Any]]:
    """Find the ``{key: tensor}`` mapping inside a loaded checkpoint object.

    Returns:
        ``(tensors, container_key, other_top_level_entries)``.

    Example:
        >>> extract_state_dict({"model": {"w": torch.zeros(1)}, "epoch": 1})[1]
        'model'
    """
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict()), None, {}
    if checkpoint_key:
        node = obj
        for part in checkpoint_key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                have = ", ".join(map(str, node)) if isinstance(node, Mapping) else type(node).__name__
                raise WeightsError(
                    f"{source}: checkpoint_key {checkpoint_key!r} not found (top-level keys: {have})"
                )
            node = node[part]
        if not _is_state_dict(node):
            raise WeightsError(f"{source}: checkpoint_key {checkpoint_key!r} does not hold a tensor mapping")
        meta = (
            {k: v for k, v in obj.items() if k != checkpoint_key.split(".")[0]}
            if isinstance(obj, Mapping)
            else {}
        )
        return dict(node), checkpoint_key, meta
    if _is_state_dict(obj):
        return dict(obj), None, {}
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return dict(obj[key]), key, {k: v for k, v in obj.items() if k != key}
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return tensors, None, {k: v for k, v in obj.items() if k not in tensors}
        raise WeightsError(
            f"{source}: no state dict found; top-level keys are {', '.join(map(str, list(obj)[:20]))}; "
            f"set checkpoint_key to the one holding the tensors"
        )
    raise WeightsError(f"{source}: holds a {type(obj).__name__}, not a state dict")
