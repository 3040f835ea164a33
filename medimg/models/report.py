"""The load report: what a pretrained checkpoint did (and did not) put into a network.

A partial load that leaves most of a network at random initialisation is the
silent failure of fine-tuning. :class:`LoadReport` counts, per top-level module,
the tensors that were matched, adapted (first convolution), missing from the
checkpoint, unexpected (in the checkpoint, not in the network), shape-mismatched
or deliberately skipped, and the fraction of *encoder* tensors loaded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("matched", "adapted", "missing", "unexpected", "shape_mismatched", "skipped")


def module_of(key: str) -> str:
    """Top-level module of a state key (``"layer1.0.conv1.weight"`` -> ``"layer1"``).

    Example:
        >>> module_of("features.conv0.weight")
        'features'
    """
    return key.split(".", 1)[0] if "." in key else "(root)"


@dataclass
class LoadReport:
    """Outcome of :func:`medimg.models.loading.load_pretrained`.

    Example:
        >>> r = LoadReport(source="w.pt", matched=["enc.w"], missing=["head.w"], encoder_total=1, encoder_loaded=1)
        >>> r.encoder_fraction, r.by_module()["head"]["missing"]
        (1.0, 1)
    """

    source: str
    path: str = ""
    file_format: str = ""
    sha256: str | None = None
    matched: list[str] = field(default_factory=list)
    adapted: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    encoder_prefixes: list[str] = field(default_factory=list)
    encoder_total: int = 0
    encoder_loaded: int = 0
    renamed: int = 0
    hint: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def encoder_fraction(self) -> float:
        """Loaded encoder tensors / encoder tensors of the network (1.0 when it has none)."""
        return self.encoder_loaded / self.encoder_total if self.encoder_total else 1.0

    @property
    def loaded(self) -> int:
        """Number of network tensors that received checkpoint values."""
        return len(self.matched) + len(self.adapted)

    def keys_by_status(self) -> dict[str, list[str]]:
        """Every key, grouped by status (network keys, except ``unexpected`` which are checkpoint keys)."""
        return {
            "matched": list(self.matched),
            "adapted": [k for k, _, _ in self.adapted],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_mismatched": [k for k, _, _ in self.shape_mismatched],
            "skipped": [k for k, _ in self.skipped],
        }

    def by_module(self) -> dict[str, dict[str, int]]:
        """Counts per top-level module and status.

        Example:
            >>> LoadReport(source="x", matched=["a.w", "a.b"]).by_module()["a"]["matched"]
            2
        """
        table: dict[str, Counter] = defaultdict(Counter)
        for status, keys in self.keys_by_status().items():
            for key in keys:
                table[module_of(key)][status] += 1
        return {module: {s: counts.get(s, 0) for s in STATUSES} for module, counts in sorted(table.items())}

    def summary(self) -> str:
        """One line: loaded tensors and encoder fraction.

        Example:
            >>> LoadReport(source="w.pt", matched=["a"], encoder_total=2, encoder_loaded=1).summary()
            'w.pt: loaded 1 tensors (0 adapted); encoder 1/2 = 50.0%; 0 missing, 0 unexpected, 0 shape-mismatched, 0 skipped'
        """
        return (
            f"{self.source}: loaded {self.loaded} tensors ({len(self.adapted)} adapted); encoder "
            f"{self.encoder_loaded}/{self.encoder_total} = {100 * self.encoder_fraction:.1f}%; "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.shape_mismatched)} shape-mismatched, {len(self.skipped)} skipped"
        )

    def format(self, max_keys: int = 12) -> str:
        """Human-readable report: summary, per-module table, and the first keys of each problem list.

        Example:
            >>> print(LoadReport(source="w.pt", matched=["a.w"]).format().splitlines()[0])
            Pretrained weights w.pt
        """
        lines = [f"Pretrained weights {self.source}"]
        if self.path and self.path != self.source:
            lines.append(
                f"  file: {self.path} ({self.file_format}{', sha256 ' + self.sha256[:16] if self.sha256 else ''})"
            )
        lines.append(f"  {self.summary()}")
        if self.renamed:
            lines.append(f"  {self.renamed} checkpoint keys renamed by the key mapping")
        lines.extend(f"  note: {note}" for note in self.notes)
        header = f"  {'module':<28}" + "".join(f"{s.replace('_', '-'):>18}" for s in STATUSES)
        lines.append(header)
        for module, counts in self.by_module().items():
            lines.append(f"  {module:<28}" + "".join(f"{counts[s]:>18}" for s in STATUSES))

        def _listing(title: str, items: list[str]) -> None:
            if not items:
                return
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items[:max_keys])
            if len(items) > max_keys:
                lines.append(f"    ... and {len(items) - max_keys} more")

        _listing("adapted", [f"{k}: {list(a)} -> {list(b)}" for k, a, b in self.adapted])
        _listing(
            "shape-mismatched (kept initialised)",
            [f"{k}: checkpoint {list(a)} vs network {list(b)}" for k, a, b in self.shape_mismatched],
        )
        _listing("missing from checkpoint (kept initialised)", self.missing)
        _listing("unexpected in checkpoint (ignored)", self.unexpected)
        _listing("skipped", [f"{k}: {why}" for k, why in self.skipped])
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for ``mlflow.log_dict``), with counts, fractions and key lists.

        Example:
            >>> LoadReport(source="w.pt", matched=["a.w"]).to_dict()["counts"]["matched"]
            1
        """
        return {
            "source": self.source,
            "path": self.path,
            "format": self.file_format,
            "sha256": self.sha256,
            "encoder_prefixes": list(self.encoder_prefixes),
            "encoder_total": self.encoder_total,
            "encoder_loaded": self.encoder_loaded,
            "encoder_fraction": round(self.encoder_fraction, 6),
            "renamed": self.renamed,
            "counts": {s: len(v) for s, v in self.keys_by_status().items()},
            "by_module": self.by_module(),
            "adapted": [{"key": k, "checkpoint": list(a), "network": list(b)} for k, a, b in self.adapted],
            "shape_mismatched": [
                {"key": k, "checkpoint": list(a), "network": list(b)} for k, a, b in self.shape_mismatched
            ],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "skipped": [{"key": k, "reason": why} for k, why in self.skipped],
            "hint": self.hint,
            "notes": list(self.notes),
        }

    def mlflow_metrics(self) -> dict[str, float]:
        """Flat numbers for ``mlflow.log_metrics`` (``pretrained/encoder_fraction`` …).

        Example:
            >>> LoadReport(source="w.pt", matched=["a"]).mlflow_metrics()["pretrained/matched"]
            1.0
        """
        counts = {f"pretrained/{s}": float(len(v)) for s, v in self.keys_by_status().items()}
        return {"pretrained/encoder_fraction": float(self.encoder_fraction), **counts}

    def log_to_mlflow(self, run_id: str | None = None, tracking_uri: str | None = None) -> None:
        """Log the report to an MLflow run: ``pretrained/load_report.{json,txt}`` and ``pretrained/*`` metrics.

        Args:
            run_id: Target run (a Lightning ``MLFlowLogger.run_id``); ``None``: the active run.
            tracking_uri: Tracking URI of that run; ``None``: the current one.

        Example:
            >>> report.log_to_mlflow(logger.run_id, logger._tracking_uri)  # doctest: +SKIP
        """
        import mlflow

        if run_id is None:
            mlflow.log_dict(self.to_dict(), "pretrained/load_report.json")
            mlflow.log_text(self.format(max_keys=100), "pretrained/load_report.txt")
            mlflow.log_metrics(self.mlflow_metrics())
            return
        client = mlflow.MlflowClient(tracking_uri)
        client.log_dict(run_id, self.to_dict(), "pretrained/load_report.json")
        client.log_text(run_id, self.format(max_keys=100), "pretrained/load_report.txt")
        for key, value in self.mlflow_metrics().items():
            client.log_metric(run_id, key, value)
        client.set_tag(run_id, "pretrained.source", self.source)
