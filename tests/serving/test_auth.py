"""Bearer-token roles on the real server: who may call what, and the status and ErrorInfo of everyone else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError

from sharerank.config import Settings
from sharerank.serving.auth import ROLE_SERVICES, BearerAuthInterceptor
from sharerank.serving.errors import error_info
from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.serving.server import SERVICE_NAMES, Server, create_server
from sharerank.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    feed_service_pb2,
    feed_service_pb2_grpc,
    seeding_service_pb2,
    seeding_service_pb2_grpc,
)

TOKENS = {"storefront-token-0123": "storefront", "growth-token-4567": "growth", "admin-token-89ab": "admin"}
STOREFRONT, GROWTH, ADMIN = TOKENS


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def start(registry, **update) -> Server:
    settings, _ = registry
    # Each server its own event log: a log has one writer, and the module's server is up meanwhile.
    event_log_dir = settings.home / f"events-{uuid.uuid4().hex[:8]}"
    return create_server(settings.model_copy(update={"metrics_port": 0, "event_log_dir": event_log_dir, **update}),
                         InMemoryOnlineStore(), address="127.0.0.1:0")


@pytest.fixture(scope="module")
def server(registry) -> Iterator[Server]:
    server = start(registry, auth_tokens=TOKENS)
    yield server
    server.stop(grace=None)


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


DEADLINE = 60
"""Seconds a call may take: the first seeding call starts its worker process, at the lowest CPU priority, which loads
the model and compiles its kernels (a cold cache on a fresh clone): over 10 s on a loaded machine."""


def get_feed(channel: grpc.Channel, metadata=None) -> feed_service_pb2.GetFeedResponse:
    return feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
        feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3), metadata=metadata, timeout=DEADLINE)


def reload_model(channel: grpc.Channel, metadata=None) -> admin_service_pb2.ReloadModelResponse:
    return admin_service_pb2_grpc.AdminServiceStub(channel).ReloadModel(
        admin_service_pb2.ReloadModelRequest(), metadata=metadata, timeout=DEADLINE)


def get_seed_targets(channel: grpc.Channel, metadata=None):
    return seeding_service_pb2_grpc.SeedingServiceStub(channel).GetSeedTargets(
        seeding_service_pb2.GetSeedTargetsRequest(category="Beauty", budget=3), metadata=metadata, timeout=DEADLINE)


def record_events(channel: grpc.Channel, metadata=None):
    return event_service_pb2_grpc.EventServiceStub(channel).RecordEvents(
        event_service_pb2.RecordEventsRequest(), metadata=metadata, timeout=DEADLINE)


def fails(call, code: grpc.StatusCode, reason: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    if reason is not None:
        info = error_info(err.value)
        assert info is not None and info.reason == reason and info.domain == "sharerank.v1"
    return err.value


def test_without_tokens_auth_is_off(registry) -> None:
    server = start(registry)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert len(get_feed(channel).items) == 3
            assert reload_model(channel).model_version
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize(
    ("metadata", "reason", "message"),
    [
        (None, "MISSING_TOKEN", "missing bearer token"),
        ((("authorization", "Basic dXNlcjpwdw=="),), "MISSING_TOKEN", "expected 'Bearer <token>'"),
        ((("authorization", "Bearer "),), "MISSING_TOKEN", "expected 'Bearer <token>'"),
        (bearer("not-a-token"), "INVALID_TOKEN", "invalid bearer token"),
        (bearer(STOREFRONT[:-1]), "INVALID_TOKEN", "invalid bearer token"),
        (bearer(STOREFRONT + "x"), "INVALID_TOKEN", "invalid bearer token"),
    ],
)
def test_calls_without_a_known_token_are_unauthenticated(channel, metadata, reason: str, message: str) -> None:
    error = fails(lambda: get_feed(channel, metadata), grpc.StatusCode.UNAUTHENTICATED, reason)
    assert message in error.details()
    assert STOREFRONT not in error.details()
    assert error_info(error).metadata["method"] == "sharerank.v1.FeedService/GetFeed"


def test_unknown_methods_need_a_token_too(channel) -> None:
    call = channel.unary_unary("/sharerank.v1.FeedService/NoSuchMethod")
    fails(lambda: call(b"", timeout=10), grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")
    fails(lambda: call(b"", metadata=bearer(ADMIN), timeout=10), grpc.StatusCode.UNIMPLEMENTED)


def test_storefront_may_read_feeds_and_record_events_only(channel) -> None:
    assert len(get_feed(channel, bearer(STOREFRONT)).items) == 3
    assert len(get_feed(channel, (("authorization", f"bearer  {STOREFRONT} "),)).items) == 3  # scheme is any case
    # Past auth: an empty batch is the handler's INVALID_ARGUMENT, not PERMISSION_DENIED.
    fails(lambda: record_events(channel, bearer(STOREFRONT)), grpc.StatusCode.INVALID_ARGUMENT, "NO_EVENTS")
    error = fails(lambda: reload_model(channel, bearer(STOREFRONT)), grpc.StatusCode.PERMISSION_DENIED,
                  "ROLE_NOT_ALLOWED")
    assert "'storefront'" in error.details() and "sharerank.v1.AdminService/ReloadModel" in error.details()
    assert dict(error_info(error).metadata) == {"role": "storefront",
                                                "method": "sharerank.v1.AdminService/ReloadModel"}
    fails(lambda: get_seed_targets(channel, bearer(STOREFRONT)), grpc.StatusCode.PERMISSION_DENIED,
          "ROLE_NOT_ALLOWED")


def test_growth_may_seed_but_not_read_feeds(channel) -> None:
    assert len(get_seed_targets(channel, bearer(GROWTH)).seeds) > 0
    error = fails(lambda: get_feed(channel, bearer(GROWTH)), grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    assert "'growth'" in error.details() and "sharerank.v1.FeedService/GetFeed" in error.details()
    for call in (record_events, reload_model):
        fails(lambda call=call: call(channel, bearer(GROWTH)), grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


def test_admin_may_call_everything(channel, registry) -> None:
    _, report = registry
    assert len(get_feed(channel, bearer(ADMIN)).items) == 3
    assert reload_model(channel, bearer(ADMIN)).model_version == report["version"]
    info = admin_service_pb2_grpc.AdminServiceStub(channel).GetModelInfo(
        admin_service_pb2.GetModelInfoRequest(), metadata=bearer(ADMIN), timeout=10)
    assert info.model_version == report["version"]
    assert len(get_seed_targets(channel, bearer(ADMIN)).seeds) > 0
    fails(lambda: record_events(channel, bearer(ADMIN)), grpc.StatusCode.INVALID_ARGUMENT, "NO_EVENTS")  # admitted


def test_health_and_reflection_need_no_token(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICE_NAMES):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    assert set(SERVICE_NAMES) <= {s.name for r in responses for s in r.list_services_response.service}


def test_every_role_has_its_services() -> None:
    assert ROLE_SERVICES["admin"] is None
    assert ROLE_SERVICES["storefront"] == {"sharerank.v1.FeedService", "sharerank.v1.EventService"}
    assert ROLE_SERVICES["growth"] == {"sharerank.v1.SeedingService"}


def test_interceptor_matches_tokens_exactly() -> None:
    interceptor = BearerAuthInterceptor(TOKENS)
    assert [interceptor.role_of(t) for t in TOKENS] == ["storefront", "growth", "admin"]
    assert interceptor.role_of("") is None and interceptor.role_of(ADMIN.upper()) is None
    with pytest.raises(ValueError, match="unknown roles"):
        BearerAuthInterceptor({"t": "root"})
    with pytest.raises(ValueError, match="at least one token"):
        BearerAuthInterceptor({})


def test_tokens_load_from_the_environment_and_stay_secret(monkeypatch) -> None:
    monkeypatch.setenv("SHARERANK_AUTH_TOKENS", '{"s3cr3t-one": "storefront", "s3cr3t-two": "admin"}')
    settings = Settings()
    assert settings.auth_tokens == {"s3cr3t-one": "storefront", "s3cr3t-two": "admin"}
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ('{"s3cr3t-one": "root"}', "unknown role 'root'"),
        ('{"s3cr3t one": "admin"}', "without whitespace"),
        ('{"": "admin"}', "non-empty"),
    ],
)
def test_bad_tokens_fail_at_load_without_echoing_them(monkeypatch, value: str, match: str) -> None:
    monkeypatch.setenv("SHARERANK_AUTH_TOKENS", value)
    with pytest.raises(ValidationError, match=match) as err:
        Settings()
    assert "s3cr3t" not in str(err.value)


def test_defaults_leave_auth_off() -> None:
    assert Settings().auth_tokens == {}
