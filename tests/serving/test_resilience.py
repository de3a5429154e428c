"""Resilience over real gRPC: model swaps under load, versions that fail to load, rollbacks that stick, and a
Redis restart (malformed requests: ``test_fuzz.py``).

Every test runs a real server on a loopback port against the session's MLflow registry (``registry``); the
Redis test starts, kills and restarts a private redis-server of its own.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sharerank.config import Settings
from sharerank.serving.online_store import (
    InMemoryOnlineStore,
    OnlineStoreError,
    Purchase,
    RedisSettings,
    open_online_store,
)
from sharerank.serving.server import SERVICE_NAMES, Server, create_server
from sharerank.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    feed_service_pb2,
    feed_service_pb2_grpc,
)

DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@pytest.fixture
def two_versions(registry, request) -> Settings:
    """Settings for a registered model of this test's own with two versions of the trained bundle (the same
    run, so the promotion gate lets either replace the other), champion at 1."""
    from mlflow import MlflowClient

    from sharerank.registry import connect, promote

    settings, report = registry
    name = "resilience-" + "".join(c if c.isalnum() else "-" for c in request.node.name)[:50]
    settings = settings.model_copy(update={"model_name": name})
    connect(settings)
    client = MlflowClient()
    source = client.get_model_version(registry[0].model_name, report["version"])
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source.source, run_id=source.run_id)
    promote(settings, "1")
    return settings


def start(settings: Settings, store=None, **kwargs) -> Server:
    return create_server(settings, store if store is not None else InMemoryOnlineStore(), address="127.0.0.1:0",
                         **kwargs)


@pytest.fixture
def channel_to() -> Iterator:
    """``channel_to(server)``: a channel to the server, closed at teardown."""
    channels: list[grpc.Channel] = []

    def open_channel(server: Server) -> grpc.Channel:
        channels.append(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        return channels[-1]

    yield open_channel
    for channel in channels:
        channel.close()


def known_user(server: Server, rank: int = 0) -> str:
    bundle = server.holder.current.bundle
    return str(bundle.users[bundle.history.getnnz(axis=1).argsort()[::-1][rank]])


def feed_request(user: str, page_size: int = 20) -> feed_service_pb2.GetFeedRequest:
    return feed_service_pb2.GetFeedRequest(user_id=user, page_size=page_size)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


class Hammer:
    """Client threads calling GetFeed back to back; records ``(start, end, model_version)`` or the error code."""

    def __init__(self, channel: grpc.Channel, users: list[str], threads: int = 4):
        self.stub = feed_service_pb2_grpc.FeedServiceStub(channel)
        self.users, self.stop_event = users, threading.Event()
        self.answers: list[tuple[float, float, str]] = []
        self.errors: list[tuple[grpc.StatusCode, str]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, number: int) -> None:
        i = number
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                response = self.stub.GetFeed(feed_request(self.users[i % len(self.users)]), timeout=10)
                self.answers.append((started, time.monotonic(), response.model_version))
            except grpc.RpcError as error:
                self.errors.append((error.code(), error.details()))
            i += 1

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def wait_for_answers(self, count: int, started_after: float = float("-inf"), timeout_s: float = 30.0) -> None:
        """Blocks until ``count`` calls that started after ``started_after`` have answered (or fails)."""
        deadline = time.monotonic() + timeout_s
        while sum(1 for start, _, _ in list(self.answers) if start > started_after) < count:
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout_s} s; errors {self.errors[:3]}"
            time.sleep(0.01)

    def __exit__(self, *_) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)


# (a) Model swaps under concurrent GetFeed calls.


@pytest.mark.parametrize("how", ["reload", "alias-poll"])
def test_swap_under_concurrent_feeds_loses_no_call(two_versions: Settings, channel_to, how: str) -> None:
    from sharerank.registry import promote

    settings = two_versions.model_copy(update={"reload_poll_seconds": 0.2 if how == "alias-poll" else 0})
    server = start(settings)
    try:
        channel = channel_to(server)
        users = [known_user(server, r) for r in range(8)] + ["someone-new"]
        with Hammer(channel, users) as hammer:
            hammer.wait_for_answers(20)  # calls in flight on version 1 before the swap
            if how == "reload":  # the alias moves, then ReloadModel follows it
                promote(settings, "2")
                reply = admin_service_pb2_grpc.AdminServiceStub(channel).ReloadModel(
                    admin_service_pb2.ReloadModelRequest(), timeout=60)
                assert reply.model_version == "2" and reply.previous_model_version == "1" and reply.changed
            else:  # the alias moves and the poller notices
                promote(settings, "2")
                deadline = time.monotonic() + 30
                while server.holder.current.version != "2":
                    assert time.monotonic() < deadline, "the alias poller did not swap"
                    time.sleep(0.01)
            swapped = time.monotonic()
            hammer.wait_for_answers(20, started_after=swapped)
        assert not hammer.errors, hammer.errors[:3]
        assert {version for _, _, version in hammer.answers} == {"1", "2"}
        before = [v for _, end, v in hammer.answers if end < swapped - 0.05]
        after = [v for start, _, v in hammer.answers if start > swapped]
        assert before and set(before) <= {"1", "2"}
        assert len(after) >= 20 and set(after) == {"2"}  # no call that started after the swap saw the old model
    finally:
        server.stop(grace=None)


# (b) Versions that fail to load.


def register_copy(settings: Settings, destination: Path) -> tuple[str, Path]:
    """Registers a new version of ``settings.model_name`` whose artifacts are a private copy of version 1's
    (so a test may break them); returns the version and the copy's folder."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    source = client.get_model_version(settings.model_name, "1")
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source.source, dst_path=str(destination)))
    version = client.create_model_version(settings.model_name, folder.as_uri(), run_id=source.run_id).version
    return str(version), folder


def test_versions_that_fail_to_load_leave_the_old_one_serving(two_versions: Settings, channel_to,
                                                              tmp_path: Path, caplog) -> None:
    from sharerank.registry import promote

    settings = two_versions
    deleted, deleted_folder = register_copy(settings, tmp_path / "deleted")
    corrupt, corrupt_folder = register_copy(settings, tmp_path / "corrupt")
    shutil.rmtree(deleted_folder)
    bundles = [path for path in corrupt_folder.rglob("arrays.npz") if path.parent.name == "bundle"]
    assert len(bundles) == 1
    bundles[0].write_bytes(b"not a numpy archive")
    server = start(settings)
    try:
        channel = channel_to(server)
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        feed = feed_service_pb2_grpc.FeedServiceStub(channel)
        user = known_user(server)
        for version in ("999", deleted, corrupt):
            with pytest.raises(grpc.RpcError) as err:
                admin.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version=version), timeout=60)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert f"version {version}" in err.value.details() and "still serving version 1" in err.value.details()
            assert server.holder.current.version == "1"
            serving = health_pb2.HealthCheckResponse.SERVING
            assert all(health_status(channel, s) == serving for s in ("", *SERVICE_NAMES))
            response = feed.GetFeed(feed_request(user), timeout=10)
            assert len(response.items) == 20 and response.model_version == "1"
        # The alias itself moved to a broken version (forced past the gate): ReloadModel and the poller refuse it.
        promote(settings, corrupt, force=True)
        with pytest.raises(grpc.RpcError) as err:
            admin.ReloadModel(admin_service_pb2.ReloadModelRequest(), timeout=60)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        caplog.clear()
        server.holder.start_polling(0.1)
        deadline = time.monotonic() + 30
        while sum("alias poll" in r.getMessage() and f"version {corrupt}" in r.getMessage()
                  for r in caplog.records) < 2:  # the poller tried the broken version, twice, and refused it
            assert time.monotonic() < deadline, "the alias poller never tried the broken version"
            time.sleep(0.02)
        assert server.holder.current.version == "1" and health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert feed.GetFeed(feed_request(user), timeout=10).model_version == "1"
        # A good version still loads afterwards.
        reply = admin.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version="2"), timeout=60)
        assert reply.model_version == "2" and feed.GetFeed(feed_request(user), timeout=10).model_version == "2"
    finally:
        server.stop(grace=None)


# (b2) Rollbacks that stick: a version loaded by name stays until the alias moves.


def model_info(channel: grpc.Channel) -> admin_service_pb2.GetModelInfoResponse:
    return admin_service_pb2_grpc.AdminServiceStub(channel).GetModelInfo(admin_service_pb2.GetModelInfoRequest(),
                                                                         timeout=10)


def test_a_rollback_sticks_until_the_alias_moves(two_versions: Settings, channel_to) -> None:
    from mlflow import MlflowClient

    from sharerank.registry import promote

    settings = two_versions.model_copy(update={"reload_poll_seconds": 0.05})
    promote(settings, "2")
    server = start(settings)
    try:
        channel = channel_to(server)
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        info = model_info(channel)
        assert info.model_version == "2" and not info.pinned and info.alias == "champion"
        reply = admin.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version="1"), timeout=60)
        assert reply.model_version == "1" and reply.pinned
        polls = server.holder.polls
        deadline = time.monotonic() + 30
        while server.holder.polls < polls + 5:  # five alias polls later (one used to undo the rollback)
            assert time.monotonic() < deadline, "the alias poller stopped"
            time.sleep(0.01)
        info = model_info(channel)
        assert info.model_version == "1" and info.pinned and info.pinned_alias_version == "2"
        # The alias moves (a new champion): the pin ends and serving follows it.
        source = MlflowClient().get_model_version(settings.model_name, "1")
        MlflowClient().create_model_version(settings.model_name, source.source, run_id=source.run_id)
        promote(settings, "3")
        deadline = time.monotonic() + 30
        while server.holder.current.version != "3":
            assert time.monotonic() < deadline, "the poller did not follow the moved alias"
            time.sleep(0.01)
        assert not model_info(channel).pinned
        # A pin, then an explicit unpin (ReloadModel without a version): back to following the alias.
        admin.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version="2"), timeout=60)
        assert model_info(channel).pinned
        reply = admin.ReloadModel(admin_service_pb2.ReloadModelRequest(), timeout=60)
        assert reply.model_version == "3" and not reply.pinned and not model_info(channel).pinned
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize("pin_file", [False, True])
def test_pins_survive_restarts_if_configured(two_versions: Settings, channel_to, tmp_path, pin_file: bool) -> None:
    from sharerank.registry import promote

    settings = two_versions.model_copy(update={"pin_file": tmp_path / "pin.json" if pin_file else None})
    promote(settings, "2")
    server = start(settings)
    try:
        admin_service_pb2_grpc.AdminServiceStub(channel_to(server)).ReloadModel(
            admin_service_pb2.ReloadModelRequest(model_version="1"), timeout=60)
    finally:
        server.stop(grace=None)
    server = start(settings)
    try:
        info = model_info(channel_to(server))
        assert (info.model_version, info.pinned) == (("1", True) if pin_file else ("2", False))
    finally:
        server.stop(grace=None)


# (c) Redis killed mid-run and restarted on the same port.


def test_feed_rides_out_a_redis_restart(registry, redis_process_factory, channel_to) -> None:
    settings, _ = registry
    redis = redis_process_factory()
    store = open_online_store(redis.url, settings=RedisSettings(key_prefix="sr:resilience:"))
    server = start(settings, store, metrics_address="127.0.0.1:0")
    try:
        channel = channel_to(server)
        feed = feed_service_pb2_grpc.FeedServiceStub(channel)
        user = known_user(server, rank=1)

        def ids() -> list[str]:
            return [item.product_id for item in feed.GetFeed(feed_request(user), timeout=10).items]

        first = ids()[0]
        store.record_purchases([Purchase(user, first, time.time())])
        assert first not in ids()  # live features work
        with Hammer(channel, [user, known_user(server, 2), "someone-new"]) as hammer:
            hammer.wait_for_answers(10)
            redis.kill()
            killed = time.monotonic()
            down = [ids() for _ in range(20)]  # every call answers, without the live purchase
            hammer.wait_for_answers(20, started_after=killed)  # concurrent calls during the outage
            redis.start()  # returns once the new server answers PING
            restarted = time.monotonic()
            hammer.wait_for_answers(20, started_after=restarted)
        assert not hammer.errors, hammer.errors[:3]  # never UNAVAILABLE (nor anything else)
        assert all(len(page) == 20 for page in down) and first in down[-1]
        degraded = server.metrics.registry.get_sample_value("sharerank_feed_degraded_total",
                                                            {"hydrator": "LiveState"})
        assert degraded is not None and degraded > 0, "the feed should have counted degraded responses"
        # Redis came back empty (nothing is saved); a purchase recorded now is a live feature again.
        deadline = time.monotonic() + 10
        while True:
            try:
                store.record_purchases([Purchase(user, first, time.time())])
                break
            except OnlineStoreError:
                assert time.monotonic() < deadline, "the store did not reconnect to the restarted Redis"
                time.sleep(0.05)
        deadline = time.monotonic() + 10  # once the server's circuit breaker has probed Redis and closed
        while first in ids():
            assert time.monotonic() < deadline, "the server did not read live features again"
            time.sleep(0.05)
    finally:
        server.stop(grace=None)
        store.close()
