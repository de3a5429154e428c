"""MLflow on PostgreSQL, the team set-up (README "Team set-up: MLflow on PostgreSQL"), end to end.

A real ``mlflow server`` process with the machine's PostgreSQL as its backend store (a throwaway database made
for the run) and a folder as the artifact destination it proxies: training logs and registers a version through
it, ``promote`` moves the alias, and a gRPC server pointed at the same tracking URI loads the champion and
answers a feed. Nothing here touches sqlite or the local artifact folder: the client sees only the HTTP URI.

PostgreSQL is found at ``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust
auth); when it does not answer the test skips with the reason, and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from conftest import SMALL_LIGHTGCN, free_port, unavailable

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
"""An existing database of a server where the test may CREATE and DROP a database of its own."""

START_TIMEOUT_S = 180.0
"""How long ``mlflow server`` may take to migrate a fresh database and answer /health (2 busy cores)."""


def _admin_connection():
    import psycopg

    conn = psycopg.connect(POSTGRES_URL, connect_timeout=3)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    return conn


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (its SQLAlchemy URI), dropped afterwards."""
    import psycopg

    try:
        conn = _admin_connection()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL does not answer at TEST_POSTGRES_URL={POSTGRES_URL!r}: {str(exc).strip()}")
    name = f"sharerank_mlflow_{uuid.uuid4().hex[:12]}"
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(POSTGRES_URL, name)
    finally:
        with conn.cursor() as cur:
            # WITH (FORCE) (PostgreSQL 13+) ends the connections the stopped server's pool may have left.
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


class MlflowServer:
    """A private ``mlflow server`` process: ``backend_store_uri`` for runs and the registry, artifacts proxied
    to the ``artifacts`` folder (clients use ``mlflow-artifacts:/`` URIs and never see the folder)."""

    def __init__(self, backend_store_uri: str, artifacts: Path, workdir: Path) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts = artifacts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "mlflow-server.log"
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", backend_store_uri,
               "--artifacts-destination", artifacts.as_uri(),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                          start_new_session=True)

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until /health answers OK; raise with the server's log when it exits or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        state = f"exited with {self._proc.returncode}" if self._proc.poll() is not None else "not healthy in time"
        self.stop()
        raise RuntimeError(f"mlflow server {state}:\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def stop(self) -> None:
        """SIGTERM the server's process group (uvicorn/gunicorn workers included), SIGKILL after 15 s."""
        if self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, 15)
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, 9)
            self._proc.wait()


@pytest.fixture
def mlflow_server(postgres_database: str, tmp_path: Path) -> Iterator[MlflowServer]:
    artifacts = tmp_path / "shared-artifacts"
    artifacts.mkdir()
    server = MlflowServer(postgres_database, artifacts, tmp_path)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_train_register_promote_and_serve_through_a_postgres_tracking_server(
        mlflow_server: MlflowServer, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sharerank.config import Settings
    from sharerank.registry import promote, resolve_alias
    from sharerank.serving.online_store import InMemoryOnlineStore
    from sharerank.serving.server import create_server
    from sharerank.training.jobs import run_training
    from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc, feed_service_pb2, feed_service_pb2_grpc

    # What a team member sets (README): the server's URI for tracking and registry, artifacts through it.
    team = {"tracking_uri": mlflow_server.url, "artifact_root": "mlflow-artifacts:/sharerank"}
    trainer = Settings(home=tmp_path / "trainer-home", reload_poll_seconds=0, metrics_port=0, **team)
    report = run_training([tiny_world], trainer, model="lightgcn", params=SMALL_LIGHTGCN)
    assert report["version"] == "1"
    # MLflow prints run links to stdout for an http:// store; the commands keep stdout for their JSON.
    assert "View run" not in capsys.readouterr().out

    promoted = promote(trainer, report["version"])
    assert promoted["promoted"] and promoted["previous"] is None and resolve_alias(trainer) == "1"

    # The store really is PostgreSQL: the run, the registered version and the alias are rows there.
    import psycopg

    with psycopg.connect(mlflow_server.backend_store_uri, connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM model_versions")
        assert cur.fetchall() == [(trainer.model_name, 1)]
        cur.execute("SELECT alias, version FROM registered_model_aliases")
        assert cur.fetchall() == [(trainer.alias, 1)]
        cur.execute("SELECT artifact_uri FROM runs WHERE run_uuid = %s", (report["run_id"],))
        (artifact_uri,), = cur.fetchall()
    assert artifact_uri.startswith("mlflow-artifacts:/sharerank/")
    # The artifacts sit in the server's destination, not in the trainer's home.
    assert any(mlflow_server.artifacts.rglob("MLmodel"))
    assert not (trainer.home / "mlartifacts").exists() and not (trainer.home / "mlflow.db").exists()

    # A server with another home (another host, in a team) follows the same alias through the tracking server.
    serving = Settings(home=tmp_path / "serving-home", reload_poll_seconds=0, metrics_port=0,
                       event_log_dir=tmp_path / "events", **team)
    server = create_server(serving, InMemoryOnlineStore(), address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            info = admin_service_pb2_grpc.AdminServiceStub(channel).GetModelInfo(
                admin_service_pb2.GetModelInfoRequest(), timeout=10)
            assert info.model_version == "1" and info.run_id == report["run_id"]
            bundle = server.holder.current.bundle
            user = str(bundle.users[bundle.history.getnnz(axis=1).argmax()])
            response = feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_service_pb2.GetFeedRequest(user_id=user, page_size=20), timeout=10)
    finally:
        server.stop(grace=None)
    ids = [item.product_id for item in response.items]
    assert response.model_version == "1" and len(ids) == 20 and len(set(ids)) == 20
    assert not (serving.home / "mlflow.db").exists()
