"""Shared fixtures: a private Redis for the session, throwaway Redis servers tests may kill, and an isolated
environment.

Tests run against a real redis-server, never a fake, so latency-free mocks cannot hide protocol bugs; fakes
are only for injecting faults. Each test namespaces its keys with its own prefix.

Isolation: the caller's ``SHARERANK_*``, ``REDIS_URL`` and ``MLFLOW_*`` variables are removed before any test
runs, and ``HOME`` and ``SHARERANK_HOME`` point into a temporary folder, so no test reads the caller's settings
or writes to a real home folder (MLflow, matplotlib and Jupyter all write under ``HOME``). The suite's own
inputs are ``TEST_REDIS_URL`` (a Redis to use instead of starting one; ``.ci/run`` sets it) and ``CI``: with
``CI=true`` a test whose Redis or ``../shared`` is missing fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

CALLER_VARIABLES = ("SHARERANK_", "MLFLOW_")
"""Prefixes of environment variables the tests never read from the caller (with ``REDIS_URL``)."""

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL") or None
IN_CI = os.environ.get("CI", "").lower() == "true"
_SANDBOX = Path(tempfile.mkdtemp(prefix="sharerank-tests-"))


def _isolate_environment() -> None:
    for name in list(os.environ):
        if name.startswith(CALLER_VARIABLES) or name in ("REDIS_URL", "TEST_REDIS_URL"):
            del os.environ[name]
    home = _SANDBOX / "home"
    for folder in ("config", "cache", "data"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"), "MPLCONFIGDIR": str(home / "config" / "matplotlib"),
        "SHARERANK_HOME": str(_SANDBOX / "sharerank-home"),
    })


_isolate_environment()  # at import, before any test module (or sharerank) reads the environment


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SANDBOX, ignore_errors=True)


def unavailable(reason: str) -> None:
    """Skip for a missing Redis or ``../shared``; under ``CI=true`` fail instead, so CI cannot pass by skipping."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing dependency fails the run)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis at ``url`` answers PING within ``timeout_s``."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisProcess:
    """A private, non-persistent ``redis-server`` on a fixed loopback port.

    The port stays the same across :meth:`kill` and :meth:`start`, so a store opened on :attr:`url` sees the
    outage and then the recovery, as after a real Redis restart (with its data gone: nothing is saved).

    Args:
        binary: path to ``redis-server``.
        workdir: folder for the server's log and working directory.
        port: TCP port on 127.0.0.1. (default: a free one)
    """

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        """Start the server and wait until it answers PING; raise with its log if it does not."""
        if self.running:
            return self
        log_path = self.workdir / f"redis-{self.port}.log"
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if redis_answers(self.url, timeout_s=0.2):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), like a crash; no-op when it is not running."""
        self._stop(graceful=False)

    def stop(self) -> None:
        """Stop the server with SIGTERM; no-op when it is not running."""
        self._stop(graceful=True)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its port and accepts connections but never answers, as a hung
        Redis does."""
        assert self._proc is not None and self._proc.poll() is None, "not running"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        assert self._proc is not None, "not running"
        self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> RedisProcess:
        """Kill and start again on the same port."""
        self.kill()
        return self.start()

    def _stop(self, *, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            proc.terminate()
        else:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __repr__(self) -> str:
        return f"RedisProcess(port={self.port}, running={self.running})"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis for this test session: ``$TEST_REDIS_URL`` when set, else a private redis-server.

    Shared by every test; isolate with a unique key prefix and never kill it (use
    ``redis_process_factory`` for that). Skips (fails under ``CI=true``) when neither is available.
    """
    if TEST_REDIS_URL is not None:
        if not redis_answers(TEST_REDIS_URL):
            unavailable(f"TEST_REDIS_URL={TEST_REDIS_URL!r} does not answer PING")
        yield TEST_REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on PATH and TEST_REDIS_URL is not set")
    server = RedisProcess(binary, tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL on a loopback port where nothing listens: a store pointed here sees Redis down."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def redis_process_factory(tmp_path: Path) -> Iterator[Callable[[], RedisProcess]]:
    """Factory of started private redis-servers that a test may kill and restart; all stopped at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on PATH; fault tests need their own server to kill")
    servers: list[RedisProcess] = []

    def start() -> RedisProcess:
        server = RedisProcess(binary, tmp_path)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests on real datasets skip with a reason without it."""
    if not SHARED_DATA.is_dir():
        unavailable(f"real datasets not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated world in the dataset-folder format (shared, read-only by convention)."""
    from sharerank.training.sources.simulate import simulate_world

    out = tmp_path_factory.mktemp("world")
    simulate_world(out, users=800, seed=3)
    return out


SMALL_LIGHTGCN = {"epochs": 6, "embedding_dim": 16, "num_layers": 2, "lr": 5e-3, "batch_size": 2048}
"""A LightGCN that trains in seconds on the tiny world and still learns something."""


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, tiny_world: Path):
    """A real MLflow sqlite store with one trained LightGCN version (fixed settings) promoted to ``champion``.

    Returns ``(settings, report)`` where report is what ``sharerank train`` prints.
    """
    from sharerank.config import Settings
    from sharerank.registry import promote
    from sharerank.training.jobs import run_training

    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, reload_poll_seconds=0, metrics_port=0)
    report = run_training([tiny_world], settings, model="lightgcn", params=SMALL_LIGHTGCN)
    promote(settings, report["version"])
    return settings, report
