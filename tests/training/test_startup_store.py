"""A new SQLite MLflow store is a copy of MLflow's empty schema, made once per MLflow version.

The copy must be a store MLflow opens and uses as its own (same tables, indexes and schema
revision as the store MLflow makes itself); a damaged or foreign template is made again; when no
template can be made, MLflow creates the schema as it always did.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow.store.db import utils as db_utils

from medimg.training import tracking
from medimg.training.tracking import (
    open_store,
    schema_cache_dir,
    schema_template,
    seed_new_store,
    template_problem,
)


def clauses(sql: str | None) -> tuple[str, ...] | None:
    """A ``CREATE TABLE``'s columns and constraints, in sorted order.

    MLflow's own migrations write a table's CHECK constraints in an order that differs from one
    process to the next (alembic's batch mode), so two stores MLflow made itself differ in that
    order only; the comparison is of the clauses, not their order.
    """
    if sql is None or not sql.startswith("CREATE TABLE"):
        return (sql,) if sql else None
    body = sql[sql.index("(") + 1 : sql.rindex(")")]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(body[start:i].strip())
            start = i + 1
    parts.append(body[start:].strip())
    return (sql[: sql.index("(")].strip(), *sorted(parts))


def schema(db: Path) -> tuple[set[tuple[str, str, tuple[str, ...] | None]], list[str]]:
    """Every table, index and trigger of ``db`` with its SQL clauses, and its alembic revision."""
    con = sqlite3.connect(db)
    try:
        objects = {(t, n, clauses(s)) for t, n, s in con.execute("SELECT type, name, sql FROM sqlite_master")}
        revision = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
    finally:
        con.close()
    return objects, revision


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One template (made by medimg) and one store MLflow made itself, shared by the tests here."""
    root = tmp_path_factory.mktemp("schema")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDIMG_CACHE", str(root / "cache"))
        template = schema_template()
        own = root / "own" / "mlflow.db"
        own.parent.mkdir()
        mp.setattr(tracking, "seed_new_store", lambda db: False)  # MLflow's migrations, as before
        open_store(f"sqlite:///{own}")
    return {"template": template, "own": own, "cache": root / "cache"}


def use_cache(made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder for this test holding a copy of the module's template; its template path."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDIMG_CACHE", str(cache))
    target = schema_cache_dir() / made["template"].name
    target.parent.mkdir(parents=True)
    shutil.copyfile(made["template"], target)
    return target


def test_cache_folder_follows_medimg_cache_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDIMG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert schema_cache_dir() == tmp_path / "xdg" / "medimg" / "mlflow-schema"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as XDG says
    assert schema_cache_dir() == Path.home() / ".cache" / "medimg" / "mlflow-schema"
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "own"))
    assert schema_cache_dir() == tmp_path / "own" / "mlflow-schema"


def test_template_is_mlflows_own_empty_schema(made: dict[str, Path]) -> None:
    template = made["template"]
    assert template.name == f"{mlflow.__version__}.db"
    assert template.parent == made["cache"] / "mlflow-schema"
    assert schema(template) == schema(made["own"])  # every table, index and the revision
    assert schema(template)[1] == [db_utils._get_latest_schema_revision()]
    assert template_problem(template, db_utils._get_latest_schema_revision()) is None
    assert not list(template.parent.glob("*.tmp"))  # made in a temporary file, replaced into place
    con = sqlite3.connect(template)
    assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    con.close()


def test_new_store_is_copied_and_used_as_mlflows_own(
    made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_cache(made, tmp_path, monkeypatch)

    def no_migrations(engine: object) -> None:
        raise AssertionError("MLflow's migrations ran: the template was not used")

    monkeypatch.setattr(db_utils, "_initialize_tables", no_migrations)
    db = tmp_path / "study" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    client = open_store(uri)
    assert schema(db) == schema(made["own"])
    assert not list(db.parent.glob(".*.tmp"))
    default = client.get_experiment("0")  # MLflow added its Default experiment with this store's root
    assert default.name == "Default"
    exp = client.create_experiment("copied", artifact_location=tracking.artifact_location(uri, "copied"))
    run = client.create_run(exp, tags={"medimg.task": "classification"})
    client.log_param(run.info.run_id, "optim.lr", "0.001")
    for step, value in enumerate([0.9, 0.5, 0.25]):
        client.log_metric(run.info.run_id, "train_loss", value, step=step)
    client.set_terminated(run.info.run_id, "FINISHED")

    back = mlflow.MlflowClient(uri)  # a second client reads what the first logged
    got = back.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"optim.lr": "0.001"}
    assert got.data.tags["medimg.task"] == "classification"
    history = back.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.25)]
    assert sorted(e.name for e in back.search_experiments()) == ["Default", "copied"]
    assert tracking.artifact_location(uri, "copied") == got.info.artifact_uri.rsplit("/", 2)[0]


def test_existing_store_is_never_replaced(made: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    use_cache(made, tmp_path, monkeypatch)
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"a store another process just made")
    assert seed_new_store(db) is False
    assert db.read_bytes() == b"a store another process just made"


@pytest.mark.parametrize("kind", ["damaged", "foreign revision", "holds experiments"])
def test_bad_template_is_ignored_and_made_again(
    kind: str, made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = use_cache(made, tmp_path, monkeypatch)
    head = db_utils._get_latest_schema_revision()
    if kind == "damaged":
        template.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
        expected = "not readable as SQLite: file is not a database"
    elif kind == "foreign revision":
        con = sqlite3.connect(template)
        con.execute("UPDATE alembic_version SET version_num = 'a0b1c2d3e4f5'")
        con.commit()
        con.close()
        expected = f"schema revision ['a0b1c2d3e4f5'], expected ['{head}']"
    else:
        shutil.copyfile(made["own"], template)  # an opened store: it has MLflow's Default experiment
        expected = "it holds experiments"
    problem = template_problem(template, head)
    assert problem == expected or (kind == "damaged" and str(problem).startswith("not readable as SQLite: "))

    db = tmp_path / "study.db"
    assert seed_new_store(db) is True  # the template was made again, then copied
    assert template_problem(template, head) is None
    assert schema(template) == schema(made["own"])
    open_store(f"sqlite:///{db}")
    assert schema(db) == schema(made["own"])


def test_no_template_falls_back_to_mlflows_own_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("MEDIMG_CACHE", str(blocker))
    db = tmp_path / "study" / "mlflow.db"
    db.parent.mkdir()
    assert seed_new_store(db) is False
    assert not db.exists() and not list(db.parent.iterdir())  # nothing half-made left behind
    client = open_store(f"sqlite:///{db}")  # MLflow runs its migrations as it always did
    assert client.get_experiment("0").name == "Default"
    assert schema(db)[1] == [db_utils._get_latest_schema_revision()]


def test_study_starts_its_new_store_from_the_template(
    made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole study (store opened beside the caching, run, lineage, export) on a store copied from the template."""
    from _tiny import tiny_workflow

    from medimg.config.load import parse_workflow
    from medimg.training.run import run_workflow

    use_cache(made, tmp_path, monkeypatch)
    made_by_mlflow: list[object] = []
    monkeypatch.setattr(db_utils, "_initialize_tables", made_by_mlflow.append)  # would leave no schema
    wf = parse_workflow(tiny_workflow(trainer={"max_epochs": 1}), source="test_startup_store")
    res = run_workflow(wf)
    assert made_by_mlflow == []
    db = tmp_path / "runs" / "mlflow.db"
    assert res.tracking_uri == f"sqlite:///{db}"
    assert schema(db) == schema(made["own"])
    run = mlflow.MlflowClient(res.tracking_uri).get_run(res.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["medimg.lineage"] == "complete"
    assert run.data.params["optim.batch_size"] == str(wf.optim.batch_size)
    assert res.metrics and all(math.isfinite(v) for v in res.metrics.values())  # the test split was scored


def test_missing_template_is_made_beside_the_caching_and_nothing_else(
    made: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medimg.training.stages.track_background import warm_store
    from medimg.training.tracking import template_missing

    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "cache"))
    db = tmp_path / "runs" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    assert template_missing(uri) is True
    assert template_missing("http://tracking.example:5000") is False  # a server: nothing to make
    job = warm_store(uri)
    assert job.what == "making the MLflow schema template"
    job.wait()
    template = schema_cache_dir() / f"{mlflow.__version__}.db"
    assert schema(template) == schema(made["own"])
    assert not db.exists()  # no store, no run: a refused case still stops the study untracked
    assert template_missing(uri) is False
    assert warm_store(uri).what == "nothing to prepare"  # the store is opened in the track stage
    db.write_bytes(b"")
    monkeypatch.setenv("MEDIMG_CACHE", str(tmp_path / "other-cache"))
    assert template_missing(uri) is False  # an existing store is opened as it is
