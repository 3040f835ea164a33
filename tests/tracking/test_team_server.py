"""Team tracking: a real ``mlflow server`` on a PostgreSQL backend, a study run against it.

The test starts PostgreSQL (Debian ``postgresql``) on loopback with a temp data folder and a
password, then ``mlflow server --serve-artifacts`` on loopback, runs the tiny study through
the real CLI with ``--set tracking.uri=http://127.0.0.1:PORT`` and checks through the server
that the run, its params, metrics and model artifacts are there (and rows in PostgreSQL).
Skips locally when PostgreSQL or the server cannot start; fails under ``CI=true``.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _tiny import TINY, write_wf

from medimg.cli.main import main
from tests.e2e.seg_model_folder import SEG_MODEL_ARTIFACTS

pytestmark = pytest.mark.slow


def _missing(what: str) -> None:
    msg = f"team tracking server: {what}"
    pytest.fail(msg) if os.environ.get("CI") == "true" else pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_db_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL on 127.0.0.1; yields its libpq URL (user, password, database)."""
    bindir = _pg_bin()
    if bindir is None:
        _missing("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian package postgresql")
    try:
        import psycopg2  # noqa: F401 - SQLAlchemy's PostgreSQL driver, used by the server
    except ImportError:
        _missing("psycopg2 not installed (pip install psycopg2-binary, in medimg's dev extra)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _missing("running as root without runuser to start PostgreSQL as user postgres")
    root = Path(tempfile.mkdtemp(prefix="medimg-pg-"))  # outside pytest's root-only tmp
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    password = secrets.token_hex(12)
    (root / "pw").write_text(password)
    if os.geteuid() == 0:
        for p in (root, sockets, root / "pw"):
            shutil.chown(p, "postgres", "postgres")
    port = _free_port()
    env = {**os.environ, "PGPASSWORD": password, "LC_ALL": "C"}

    def tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            _as_db_owner([str(bindir / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=root,
        )

    init = tool(
        "initdb",
        "-D",
        str(data),
        "-U",
        "medimg",
        f"--pwfile={root / 'pw'}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "-E",
        "UTF8",
        "--no-sync",
    )
    if init.returncode:
        shutil.rmtree(root, ignore_errors=True)
        _missing(f"initdb failed: {init.stderr[-500:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    start = tool(
        "pg_ctl", "-D", str(data), "-o", opts, "-l", str(root / "postgres.log"), "-w", "-t", "30", "start"
    )
    try:
        if start.returncode:
            log = (root / "postgres.log").read_text()[-800:] if (root / "postgres.log").exists() else ""
            _missing(f"pg_ctl start failed: {start.stderr[-300:]} {log}")
        made = tool("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "medimg", "mlflow")
        if made.returncode:
            _missing(f"createdb failed: {made.stderr[-300:]}")
        yield f"postgresql://medimg:{password}@127.0.0.1:{port}/mlflow"
    finally:
        tool("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: str, tmp_path_factory) -> Iterator[dict[str, object]]:
    """``mlflow server`` on loopback with the PostgreSQL store and served artifacts; yields url + folders."""
    import requests

    artifacts = tmp_path_factory.mktemp("served_artifacts")
    log_path = tmp_path_factory.mktemp("server_log") / "mlflow_server.log"
    port = _free_port()
    store = postgres.replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )  # SQLAlchemy 2.1 defaults to psycopg 3
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(log_path, "w")  # noqa: SIM115 - closed below, after the server stops
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 75
        while True:
            if proc.poll() is not None:
                _missing(f"mlflow server exited with {proc.returncode}: {log_path.read_text()[-1500:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                _missing(f"mlflow server not ready after 75 s: {log_path.read_text()[-1500:]}")
            time.sleep(0.5)
        yield {"url": url, "artifacts": artifacts, "database": postgres}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: our own process group
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def test_study_runs_against_team_server(mlflow_server, tmp_path):
    import mlflow
    import psycopg2

    url = str(mlflow_server["url"])
    wf = write_wf(tmp_path / "tiny.yaml", TINY)
    overrides = ["--set", f"tracking.uri={url}", "--set", "tracking.register_model=team_tiny_seg"]
    assert main(["run", str(wf), *overrides]) == 0
    out = tmp_path / "runs/tiny_seg"
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["tracking_uri"] == url
    assert not (tmp_path / "runs/mlflow.db").exists(), "nothing tracked locally"

    client = mlflow.MlflowClient(url)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run_info["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
    assert run.data.params["model.name"] == "unet"
    assert run.data.params["optim.batch_size"] == "2"
    assert run.data.tags["medimg.task"] == "segmentation"
    summary = json.loads((out / "test_summary.json").read_text())
    assert {"test_dice_mean", "test_hd95_mean", "n_cases"} <= set(summary)
    for key, value in summary.items():
        if value == value:  # not NaN
            assert run.data.metrics[key] == pytest.approx(value)

    names = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert names == SEG_MODEL_ARTIFACTS  # the model folder (tests/e2e/seg_model_folder.py)
    assert run_info["model_uri"] == "models:/team_tiny_seg@candidate"
    assert client.get_model_version_by_alias("team_tiny_seg", "candidate").run_id == run.info.run_id
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="model/model.safetensors",
            dst_path=str(tmp_path / "dl"),
            tracking_uri=url,
        )
    )
    assert local.read_bytes() == (out / "model/model.safetensors").read_bytes()
    served = list(Path(mlflow_server["artifacts"]).rglob("model.safetensors"))
    assert served and served[0].read_bytes() == local.read_bytes(), "the server stores the artifacts"

    with psycopg2.connect(str(mlflow_server["database"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone() == ("FINISHED",)
        cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone()[0] >= len(summary)


def test_pyfunc_registers_on_team_server(mlflow_server, tmp_path):
    import mlflow

    from medimg.inference.model_io import download_model_folder, load_trained
    from medimg.inference.pyfunc import log_pyfunc_model

    url = str(mlflow_server["url"])
    client = mlflow.MlflowClient(url)
    run = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])[0]
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="model", dst_path=str(tmp_path / "m"), tracking_uri=url
        )
    )
    uri = log_pyfunc_model(run.info.run_id, model_dir, url, "team_tiny_seg", alias="champion")
    assert uri == "models:/team_tiny_seg@champion"
    champion = client.get_model_version_by_alias("team_tiny_seg", "champion")
    assert champion.run_id == run.info.run_id and champion.version == "2"  # the run registered version 1
    folder = download_model_folder(uri, dst=tmp_path / "reg", tracking_uri=url)
    assert load_trained(folder).weights_sha256 == load_trained(model_dir).weights_sha256
