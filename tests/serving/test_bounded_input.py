"""Bounded input over real gRPC: one id rule for every RPC, errors that quote a short prefix only (so they never
exceed a client's metadata limit), signed page tokens, ErrorInfo on every error, warnings that do not flood
during an outage, and a one-line refusal when the event-log folder is taken."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from sharerank.serving.errors import error_info
from sharerank.serving.online_store import InMemoryOnlineStore, open_online_store
from sharerank.serving.server import Server, create_server
from sharerank.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    feed_service_pb2,
    feed_service_pb2_grpc,
    internal_pb2,
    seeding_service_pb2,
    seeding_service_pb2_grpc,
)

LONG_ID = "x" * 9000
"""An unknown 9 KB id: echoed into the error it used to make the reply exceed the client's metadata limit, so
the client saw RESOURCE_EXHAUSTED instead of the server's answer."""


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory) -> Iterator[Server]:
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path_factory.mktemp("events")})
    server = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    yield server
    server.stop(grace=None)


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


def failure(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    info = error_info(err.value)
    assert info is not None and info.domain == "sharerank.v1", (err.value.code(), err.value.details())
    assert len(err.value.details()) < 300 and all(len(v) <= 128 for v in info.metadata.values())
    return err.value


@pytest.mark.parametrize(("method", "request_", "code", "reason"), [
    ("GetSimilarProducts", feed_service_pb2.GetSimilarProductsRequest(product_id=LONG_ID, page_size=5),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PRODUCT_ID"),
    ("GetSimilarProducts", feed_service_pb2.GetSimilarProductsRequest(product_id="y" * 500, page_size=5),
     grpc.StatusCode.NOT_FOUND, "UNKNOWN_PRODUCT"),
    ("GetSimilarProducts", feed_service_pb2.GetSimilarProductsRequest(product_id="p1", page_size=5,
                                                                      categories=["Beauty\n"]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID"),
    ("GetFeed", feed_service_pb2.GetFeedRequest(user_id="\x1b[31m" + "u" * 1_000_000, page_size=5),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_USER_ID"),
    ("GetFeed", feed_service_pb2.GetFeedRequest(user_id="u1\x00", page_size=5),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_USER_ID"),
    ("GetFeed", feed_service_pb2.GetFeedRequest(user_id="u1", page_size=5, exclude_product_ids=[LONG_ID]),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID"),
    ("GetFeed", feed_service_pb2.GetFeedRequest(user_id="u1", page_size=5, categories=["c"] * 101),
     grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_IDS"),
])
def test_feed_ids_follow_one_rule_and_errors_quote_a_prefix(channel, method: str, request_, code,
                                                            reason: str) -> None:
    stub = feed_service_pb2_grpc.FeedServiceStub(channel)
    error = failure(lambda: getattr(stub, method)(request_, timeout=10))
    assert error.code() == code and error_info(error).reason == reason


@pytest.mark.parametrize(("fields", "code", "reason"), [
    ({"product_id": LONG_ID, "budget": 3}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PRODUCT_ID"),
    ({"product_id": "", "budget": 3}, grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_PRODUCT_ID"),  # was NOT_FOUND
    ({"category": "", "budget": 3}, grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_CATEGORY"),
    ({"category": "z" * 600, "budget": 3}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CATEGORY"),
    ({"category": "Beauty", "budget": 3, "exclude_user_ids": ["ok", "bad\t"]}, grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_ID"),
    ({"product_id": "z" * 400, "budget": 3}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_PRODUCT"),
])
def test_seeding_ids_follow_one_rule(channel, fields, code, reason: str) -> None:
    stub = seeding_service_pb2_grpc.SeedingServiceStub(channel)
    error = failure(lambda: stub.GetSeedTargets(seeding_service_pb2.GetSeedTargetsRequest(**fields), timeout=30))
    assert error.code() == code and error_info(error).reason == reason


@pytest.mark.parametrize(("version", "code", "reason"), [
    ("9" * 1_000_000, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID"),
    ("12\n", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID"),
    ("4242", grpc.StatusCode.FAILED_PRECONDITION, "MODEL_LOAD_FAILED"),  # carried no ErrorInfo before
])
def test_reload_model_errors_are_bounded_and_carry_error_info(channel, version: str, code, reason: str) -> None:
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    error = failure(lambda: stub.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version=version), timeout=60))
    assert error.code() == code and error_info(error).reason == reason


def test_forged_page_tokens_are_refused_and_never_echoed(server: Server, channel) -> None:
    stub = feed_service_pb2_grpc.FeedServiceStub(channel)
    user = str(server.holder.current.bundle.users[0])
    issued = stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id=user, page_size=3), timeout=10).next_page_token
    assert issued
    import base64

    from sharerank.serving.api import feed as marshal

    request_hash = marshal._request_hash(user, frozenset(), frozenset())
    forged = internal_pb2.FeedPageToken(offset=1, request_hash=request_hash, served_product_ids=["p" * 2400] * 999)
    unsigned = base64.urlsafe_b64encode(forged.SerializeToString()).decode()  # 2.4 MB, accepted and echoed before
    assert len(unsigned) > 2_400_000
    for token in (unsigned, issued[:-2] + "AA", issued.replace(".", "!", 1)):
        error = failure(lambda t=token: stub.GetFeed(
            feed_service_pb2.GetFeedRequest(user_id=user, page_size=3, page_token=t), timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "INVALID_PAGE_TOKEN"
    follow = stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id=user, page_size=3, page_token=issued), timeout=10)
    assert len(follow.items) == 3


def test_an_outage_logs_a_line_per_interval_not_per_feed(registry, dead_redis_url, tmp_path, caplog) -> None:
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events"})
    server = create_server(settings, open_online_store(dead_redis_url), address="127.0.0.1:0")
    caplog.set_level(logging.WARNING)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = feed_service_pb2_grpc.FeedServiceStub(channel)
            for i in range(200):
                assert stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id=f"u{i}", page_size=5), timeout=10).items
    finally:
        server.stop(grace=None)
    lines = [r for r in caplog.records if r.name.startswith("sharerank.serving")]
    assert len(lines) <= 10, [r.getMessage() for r in lines]  # one per degraded feed before: 200


def test_a_second_server_on_a_taken_event_log_exits_2_with_one_line(registry, tmp_path) -> None:
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events"})
    first = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    try:
        env = {**os.environ, "SHARERANK_HOME": str(settings.home), "SHARERANK_EVENT_LOG_DIR": str(tmp_path / "events"),
               "REDIS_URL": "memory://", "SHARERANK_METRICS_PORT": "0"}
        proc = subprocess.run([sys.executable, "-m", "sharerank.cli", "serve", "--port", "0"], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        first.stop(grace=None)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already open for writing" in lines[0], proc.stderr  # a 45-line traceback before
