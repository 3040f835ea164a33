"""MLflow set-up: a local SQLite store by default, any tracking URI accepted, no telemetry.

MLflow 3 expects a database store; Lightning's ``MLFlowLogger`` defaults to a ``file:``
store. medimg chooses ``sqlite:///runs/mlflow.db`` deliberately and puts artifacts in
``runs/mlartifacts`` beside it, so one folder holds a whole local study history.

MLflow's usage telemetry is off unless the user turns it on (:mod:`medimg.telemetry`, which
importing this module runs).

A new SQLite store starts as a copy of MLflow's empty schema (:func:`seed_new_store`), made once
per installed MLflow version in the user's cache: running MLflow's migrations on every new store
(alembic, about 1,800 SQL statements) was the largest part of a study's start-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from medimg.errors import ConfigError
from medimg.telemetry import telemetry_off_by_default

log = logging.getLogger(__name__)


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative SQLite URI absolute (and create its folder); other URIs pass through.

    Example:
        >>> resolve_tracking_uri("sqlite:///runs/mlflow.db").startswith("sqlite:////")
        True
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        path = path if path.is_absolute() else Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if uri.startswith(("http://", "https://", "postgresql", "mysql", "databricks", "file:")):
        return uri
    raise ConfigError(
        f"tracking.uri {uri!r}: expected sqlite:///PATH, http(s)://SERVER, postgresql://... or file:"
    )


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps artifacts: beside the SQLite file; the server's choice otherwise."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts" / experiment).resolve().as_uri()
    return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested workflow → ``{"optim.lr": "0.001", ...}`` (MLflow params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:5000]
    return out


def _git(args: list[str], here: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _code_dir(cwd: str | Path | None) -> Path:
    return Path(cwd or Path(__file__).resolve().parents[2])


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """Dirty flag of the checkout that runs (``unknown`` outside a git checkout).

    The commit itself is MLflow's system tag ``mlflow.source.git.commit``
    (:func:`source_tags`); only whether the checkout had uncommitted changes is medimg's own.

    Example:
        >>> sorted(git_state())
        ['git_dirty']
    """
    try:
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], _code_dir(cwd))
        return {"git_dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_dirty": "unknown"}


def source_tags(cwd: str | Path | None = None) -> dict[str, str]:
    """MLflow's system tags for where a run comes from: the command, ``LOCAL``, the git commit.

    ``mlflow.source.name`` is the program that was started (``sys.argv[0]``, as MLflow
    records it); ``mlflow.source.git.commit`` is the commit of the medimg checkout that
    runs, left out outside a git checkout (an installed wheel).

    Example:
        >>> tags = source_tags()
        >>> tags["mlflow.source.type"], "mlflow.source.name" in tags
        ('LOCAL', True)
    """
    import sys

    program = sys.argv[0] if sys.argv and sys.argv[0] else "medimg"
    if Path(program).exists():
        program = str(Path(program).resolve())
    tags = {"mlflow.source.name": program, "mlflow.source.type": "LOCAL"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        tags["mlflow.source.git.commit"] = _git(["rev-parse", "HEAD"], _code_dir(cwd))
    return tags


def open_store(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``; a local SQLite store is opened now (its schema created if new).

    MLflow keeps the opened store for the process, so the client :func:`make_logger` makes later
    reuses it. A tracking server is not contacted here.

    Example:
        >>> open_store("sqlite:///" + str(tmp / "mlflow.db")).search_experiments()  # doctest: +SKIP
        [<Experiment: ... name='Default' ...>]
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    telemetry_off_by_default()
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger  # noqa: F401  (imported now, used by make_logger)

    if uri.startswith("sqlite:///"):
        seed_new_store(Path(uri[len("sqlite:///") :]))
    client = mlflow.MlflowClient(uri)
    if uri.startswith("sqlite:///"):
        client.search_experiments(max_results=1)  # opens the store: SQLite schema created or checked
    return client


def schema_cache_dir() -> Path:
    """Where medimg keeps MLflow's empty SQLite schema: ``mlflow-schema`` in medimg's cache.

    medimg's cache is ``$MEDIMG_CACHE`` (as for downloaded weights), else ``$XDG_CACHE_HOME/medimg``,
    else ``~/.cache/medimg`` (``XDG_CACHE_HOME`` is ignored when not absolute, as the XDG base
    directory specification asks).

    Example:
        >>> schema_cache_dir().name
        'mlflow-schema'
    """
    own = os.environ.get("MEDIMG_CACHE")
    if own:
        return Path(own).expanduser() / "mlflow-schema"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return root / "medimg" / "mlflow-schema"


def seed_new_store(db: Path) -> bool:
    """Create the SQLite store ``db``, when it does not exist, as a copy of MLflow's empty schema.

    The schema (:func:`schema_template`) is what MLflow's own migrations make, checked against the
    installed MLflow's head revision each time it is used; MLflow then opens the copy as a store of
    its own schema (it adds its ``Default`` experiment, with this store's artifact root). The copy
    is linked into place, so a store another process created meanwhile is never replaced. Returns
    whether ``db`` was created; on any problem (no cache folder, no hard links, a damaged or foreign
    template that cannot be made again) nothing is created and MLflow creates the schema itself.

    Example:
        >>> seed_new_store(tmp / "mlflow.db")  # doctest: +SKIP
        True
    """
    if db.exists():
        return False
    try:
        template = schema_template()
        db.parent.mkdir(parents=True, exist_ok=True)
        tmp = db.with_name(
            f".{db.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        )  # the umask's mode, as MLflow's
        try:
            shutil.copyfile(template, tmp)
            os.link(tmp, db)  # never replaces: FileExistsError when another process was first
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except FileExistsError:
        return False
    except Exception as exc:  # the normal path: MLflow runs its migrations on the new file
        log.info("MLflow store %s: schema template not used (%s: %s)", db, type(exc).__name__, exc)
        return False
    log.debug("MLflow store %s created from the schema template %s", db, template)
    return True


def schema_template() -> Path:
    """MLflow's empty SQLite schema for the installed MLflow, made once in :func:`schema_cache_dir`.

    ``<mlflow version>.db`` there is used when it is an intact SQLite file at the installed MLflow's
    head schema revision, with every table MLflow's models name and no experiment; otherwise it is
    made again (MLflow's migrations on a temporary file, checked the same way, then ``os.replace``
    into place). Raises when it cannot be made.
    """
    import mlflow
    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    head = db_utils._get_latest_schema_revision()
    path = schema_cache_dir() / f"{mlflow.__version__}.db"  # as template_missing names it
    problem = template_problem(path, head)
    if problem is None:
        return path
    if path.exists():
        log.info("MLflow schema template %s not used (%s): made again", path, problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            db_utils._initialize_tables(engine)  # what MLflow runs on a new store
        finally:
            engine.dispose()
        problem = template_problem(Path(tmp), head)
        if problem is not None:
            raise RuntimeError(f"the schema MLflow made in {tmp} is not usable: {problem}")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def template_missing(uri: str) -> bool:
    """Whether ``uri`` names a SQLite file not yet there and the installed MLflow has no schema template yet.

    Cheap: it imports nothing of MLflow (its version comes from the installed package's metadata).

    Example:
        >>> template_missing("http://tracking.example:5000")
        False
    """
    from importlib.metadata import PackageNotFoundError, version

    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).exists():
        return False
    try:
        return not (schema_cache_dir() / f"{version('mlflow')}.db").is_file()
    except PackageNotFoundError:
        return False


def template_problem(path: Path, head: str) -> str | None:
    """Why the SQLite file ``path`` is no empty MLflow schema at revision ``head`` (``None``: it is one).

    Example:
        >>> template_problem(tmp / "absent.db", "abc")  # doctest: +SKIP
        'no such file'
    """
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.tracking.dbmodels import models  # noqa: F401  (registers the tables in Base)

    if not path.is_file():
        return "no such file"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return "damaged SQLite file"
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables:
                return "no alembic_version table"
            revisions = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
            if revisions != [head]:
                return f"schema revision {revisions}, expected [{head!r}]"
            missing = sorted(set(Base.metadata.tables) - tables)
            if missing:
                return f"tables missing: {', '.join(missing)}"
            if con.execute("SELECT count(*) FROM experiments").fetchone()[0]:
                return "it holds experiments"
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"not readable as SQLite: {exc}"
    return None


def make_logger(
    uri: str,
    experiment: str,
    run_name: str | None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """A Lightning ``MLFlowLogger`` on ``uri`` (experiment created with a local artifact folder).

    A new run carries MLflow's source tags (:func:`source_tags`) under ``tags``, which win on a
    clash; a resumed run (``run_id``) keeps the tags it was created with.
    """
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    client = open_store(uri)
    mlflow.set_tracking_uri(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    return MLFlowLogger(
        experiment_name=experiment,
        tracking_uri=uri,
        run_name=run_name,
        run_id=run_id,
        tags={**source_tags(), **(tags or {})},
        log_model=False,
    )
