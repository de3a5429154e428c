"""Shared fixtures: a private Redis for the session, throwaway Redis servers tests may kill, private Redis
Clusters (one for the session, one per test that kills nodes), a private NATS JetStream server for the session
(and throwaway ones tests may kill), and an isolated environment.

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
import random
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


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` after ``timeout_s`` (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


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
        self.extra_args: list[str] = []
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
            *self.extra_args,
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


def port_below_ephemeral(*offsets: int) -> int:
    """A free loopback port p with p + each of ``offsets`` free too, all below the OS's ephemeral range: an
    outgoing connection's local port can then never take one between this check and a server's start (or its
    restart after a kill), which an OS-picked port from that range allowed."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    candidates = list(range(10000, min(ephemeral_low, 65536) - max(offsets, default=0)))
    random.shuffle(candidates)
    for port in candidates:
        if all(_bindable(port + offset) for offset in (0, *offsets)):
            return port
    raise RuntimeError(f"no free ports at offsets {offsets} below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisClusterProcess:
    """A private Redis Cluster: ``masters`` primaries with one replica each, every node its own non-persistent
    ``redis-server --cluster-enabled yes`` on a loopback port, joined by ``redis-cli --cluster create``.

    Args:
        binary: path to ``redis-server``.
        cli: path to ``redis-cli``.
        workdir: folder for each node's log, ``nodes.conf`` and working directory.
        masters: number of primaries (>= 3, as ``redis-cli --cluster create`` requires). (default: ``3``)
    """

    def __init__(self, binary: str, cli: str, workdir: Path, masters: int = 3) -> None:
        self.binary = binary
        self.cli = cli
        self.workdir = workdir
        self.nodes = [self._new_node() for _ in range(2 * masters)]

    def _new_node(self) -> RedisProcess:
        port = port_below_ephemeral(10000)  # the cluster bus port
        node_dir = self.workdir / f"node-{port}"
        node_dir.mkdir(exist_ok=True)
        node = RedisProcess(self.binary, node_dir, port)
        node.extra_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                           "--cluster-node-timeout", "1000"]
        return node

    @property
    def url(self) -> str:
        """The store URL: ``redis+cluster://`` and one node; the client discovers the others."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_s: float = 30.0) -> RedisClusterProcess:
        """Start every node, create the cluster, and wait until every node says ``cluster_state:ok``."""
        for i in range(len(self.nodes)):
            self.nodes[i] = self._start_fresh(self.nodes[i])
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run([self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout_s)
        self.wait_until_ok(timeout_s)
        # Every replica in sync with its primary, and every node's slot map listing it, before any test runs.
        deadline = time.monotonic() + timeout_s
        while not self._replicas_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster replicas not in sync after {timeout_s} s")
            time.sleep(0.05)
        return self

    def _start_fresh(self, node: RedisProcess, attempts: int = 3) -> RedisProcess:
        """Start a node not yet in the cluster; when another process took its port pair since it was picked,
        start a new node on another pair instead."""
        for _ in range(attempts - 1):
            try:
                return node.start()
            except RuntimeError:
                node = self._new_node()
        return node.start()

    def _replicas_ready(self) -> bool:
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=0.5, decode_responses=True)
            try:
                role = client.role()
                if role[0] == "slave" and role[3] != "connected":
                    return False
                if any(len(entry) < 4 for entry in client.execute_command("CLUSTER SLOTS")):
                    return False  # [start, end, primary, replica, ...]: a primary without a known replica
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def cluster_info(self, node: RedisProcess) -> dict[str, str]:
        """``CLUSTER INFO`` of one node as a dict; empty when it does not answer."""
        client = redis.Redis(port=node.port, socket_timeout=0.5, socket_connect_timeout=0.5, decode_responses=True)
        try:
            return {k: str(v) for k, v in client.cluster("INFO").items()}
        except redis.RedisError:
            return {}
        finally:
            client.close()

    def masters(self) -> list[RedisProcess]:
        """The running nodes that are primaries now (by ``ROLE``)."""
        found = []
        for node in self.nodes:
            if not node.running:
                continue
            client = redis.Redis(port=node.port, socket_timeout=0.5, decode_responses=True)
            try:
                if client.role()[0] == "master":
                    found.append(node)
            except redis.RedisError:
                pass
            finally:
                client.close()
        return found

    def wait_until_ok(self, timeout_s: float = 30.0) -> None:
        """Wait until every running node reports ``cluster_state:ok`` with all 16384 slots served by a live
        primary; raise past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            infos = [self.cluster_info(node) for node in self.nodes if node.running]
            if all(i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                   and i.get("cluster_slots_pfail") == "0" and i.get("cluster_slots_fail") == "0" for i in infos):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis cluster not ok after {timeout_s} s: {infos}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """A private Redis Cluster (3 primaries, 3 replicas) for the session. Shared: isolate with a key prefix;
    a test that kills a node must leave the cluster ok again (see ``wait_until_ok``) or use its own."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        unavailable("redis-server or redis-cli is not on PATH; the cluster tests start their own cluster")
    cluster = RedisClusterProcess(binary, cli, tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisClusterProcess) -> str:
    """``redis+cluster://`` URL of the session's Redis Cluster."""
    return redis_cluster.url


@pytest.fixture
def private_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    """A Redis Cluster of this test's own (3 primaries, 3 replicas), which it may kill nodes of; all stopped
    at teardown."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        unavailable("redis-server or redis-cli is not on PATH; the cluster tests start their own cluster")
    cluster = RedisClusterProcess(binary, cli, tmp_path)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class NatsProcess:
    """A private ``nats-server`` with JetStream (its storage under ``workdir``) on a loopback port: the event
    stream's broker, one per session, or one a test may kill (the stream's file storage outlives a kill)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> NatsProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.workdir / "jetstream")],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "nats.log").open("ab"))
        wait_for(lambda: self._answers() or self._process.poll() is not None, f"nats-server on {self.port} answers",
                 timeout_s)
        assert self._process.poll() is None, (self.workdir / "nats.log").read_text()[-2000:]
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private NATS server with JetStream for this session (``nats-server`` on PATH); tests isolate
    with their own stream (``event_stream``). Skips (fails under ``CI=true``) without ``nats-server``."""
    binary = shutil.which("nats-server")
    if binary is None:
        unavailable("nats-server is not on PATH (the event-stream tests need a JetStream server)")
    server = NatsProcess(binary, tmp_path_factory.mktemp("nats")).start()
    yield server.url
    server.kill()


@pytest.fixture
def nats_process_factory(tmp_path: Path) -> Iterator[Callable[[], NatsProcess]]:
    """Factory of started private nats-servers a test may kill; all killed at teardown."""
    binary = shutil.which("nats-server")
    if binary is None:
        unavailable("nats-server is not on PATH; fault tests need their own server to kill")
    servers: list[NatsProcess] = []

    def start() -> NatsProcess:
        server = NatsProcess(binary, tmp_path / f"nats{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def event_stream(nats_url: str) -> str:
    """A JetStream stream name of this test's own on the session's NATS server (created at first use)."""
    import uuid

    return f"T{uuid.uuid4().hex[:12].upper()}"
