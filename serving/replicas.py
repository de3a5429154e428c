"""``sharerank serve --processes N``: N server processes on one port, kept running by one supervisor.

Python serves gRPC on one core per process (the GIL), so a machine's cores are used by processes. Each replica
is a whole ``sharerank serve`` of its own, listening on the same port: gRPC sets ``SO_REUSEPORT`` on Linux,
and the kernel spreads incoming *connections* over the listening processes. What replicas share must live
outside them, so a multi-process configuration needs:

- a shared online store (Redis or Redis Cluster): the in-process store refuses it;
- the shared event stream (``event_stream_url``): the file log has one writer per folder;
- one page-token key: set ``page_token_key``, or the supervisor makes one random key for all its replicas, so
  a page token from one replica works on another (until the supervisor restarts).

The supervisor restarts a replica that dies (its clients reconnect to the others meanwhile; a call in flight
on it fails UNAVAILABLE and may be retried), with a back-off when one dies right after starting. SIGTERM or
SIGINT stops every replica gracefully. Replica ``i`` serves Prometheus metrics on ``metrics_port + i``.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from sharerank.config import Settings
from sharerank.serving.online_store import open_online_store

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 30.0)
"""First and longest wait before restarting a replica that died within :data:`STABLE_S` of its start."""
STABLE_S = 10.0
STOP_GRACE_S = 10.0


class ReplicaSettingsError(ValueError):
    """The settings cannot be shared by several processes (what to change is in the message)."""


def check_replicable(settings: Settings, processes: int) -> None:
    """Refuse, with what to set, a configuration whose state would split over ``processes`` processes.

    Raises:
        ReplicaSettingsError: the in-process online store, or the file event log, with more than one process.
    """
    if processes <= 1:
        return
    try:
        open_online_store(settings.resolved_redis_url, processes=processes).close()
    except ValueError as exc:
        raise ReplicaSettingsError(str(exc)) from None
    if not settings.event_stream_url:
        raise ReplicaSettingsError(
            f"--processes {processes} needs the shared event stream: the file event log has one writer per folder; "
            "set SHARERANK_EVENT_STREAM_URL=nats://host:4222 (NATS JetStream)")


@dataclass
class _Replica:
    index: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    backoff_s: float = RESTART_BACKOFF_S[0]
    restart_at: float = field(default=0.0)


class Supervisor:
    """Starts ``processes`` replicas of ``sharerank serve`` on ``host:port`` and keeps them running.

    Port 0 picks a free port first and holds it (bound, not listening, ``SO_REUSEPORT``) so every replica
    listens on the same one: :attr:`port`.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        check_replicable(settings, processes)
        self.settings, self.processes = settings, processes
        self._reservation = _reserve(settings.host, settings.port)
        self.port = self._reservation.getsockname()[1]
        self._env = _replica_env(settings, self.port)
        self._replicas = [_Replica(i) for i in range(processes)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.restarts = 0

    def pids(self) -> list[int]:
        with self._lock:
            return [r.process.pid for r in self._replicas if r.process is not None and r.process.poll() is None]

    def run(self) -> int:
        """Start the replicas and supervise them until :meth:`stop` (SIGTERM/SIGINT in the CLI); returns 0."""
        try:
            for replica in self._replicas:
                self._start(replica)
            while not self._stop.wait(0.2):
                self._restart_dead()
        finally:
            self._stop_all()
            self._reservation.close()
        return 0

    def stop(self) -> None:
        self._stop.set()

    def _start(self, replica: _Replica) -> None:
        env = dict(self._env)
        if self.settings.metrics_port:
            env["SHARERANK_METRICS_PORT"] = str(self.settings.metrics_port + replica.index)
        command = [sys.executable, "-m", "sharerank.cli", "serve", "--replica", str(replica.index)]
        with self._lock:
            replica.process = subprocess.Popen(command, env=env)
            replica.started = time.monotonic()
        log.info("replica %d started (pid %d) on port %d", replica.index, replica.process.pid, self.port)

    def _restart_dead(self) -> None:
        now = time.monotonic()
        for replica in self._replicas:
            code = replica.process.poll() if replica.process is not None else None
            if code is None:
                continue
            if replica.restart_at == 0.0:
                quick = now - replica.started < STABLE_S
                replica.backoff_s = min(replica.backoff_s * 2, RESTART_BACKOFF_S[1]) if quick else RESTART_BACKOFF_S[0]
                replica.restart_at = now + replica.backoff_s
                log.warning("replica %d (pid %d) exited with code %s; restarting in %.1f s", replica.index,
                            replica.process.pid, code, replica.backoff_s)
            elif now >= replica.restart_at:
                replica.restart_at = 0.0
                self.restarts += 1
                self._start(replica)

    def _stop_all(self) -> None:
        with self._lock:
            running = [r.process for r in self._replicas if r.process is not None and r.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("replica pid %d did not stop in %g s; killing it", process.pid, STOP_GRACE_S)
                process.kill()
                process.wait()


def _replica_env(settings: Settings, port: int) -> dict[str, str]:
    env = dict(os.environ, SHARERANK_HOST=settings.host, SHARERANK_PORT=str(port))
    if settings.page_token_key is None:
        env["SHARERANK_PAGE_TOKEN_KEY"] = secrets.token_hex(32)  # one key for all: tokens work on every replica
    return env


def _reserve(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT and not listening: holds a picked port for the replicas
    (the kernel hands connections only to listening sockets)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock
