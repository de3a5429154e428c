"""Prometheus metrics of the real server, scraped over HTTP: requests, latency, degraded feeds, model version."""

from __future__ import annotations

import logging
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from sharerank.serving import observability
from sharerank.serving.online_store import InMemoryOnlineStore, open_online_store
from sharerank.serving.server import Server, create_server
from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc, feed_service_pb2, feed_service_pb2_grpc

GET_FEED = "sharerank.v1.FeedService/GetFeed"


def scrape(server: Server) -> dict[tuple[str, frozenset], float]:
    """Every sample on the server's /metrics page, keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, sample: str, /, **labels: str) -> float:
    return samples.get((sample, frozenset(labels.items())), 0.0)


def get_feed(channel: grpc.Channel, user_id: str = "anyone", page_size: int = 5, metadata=None):
    return feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
        feed_service_pb2.GetFeedRequest(user_id=user_id, page_size=page_size), metadata=metadata, timeout=10)


def own_event_log(settings) -> dict:
    """A fresh event_log_dir: an event log has one writer, and some tests run two servers at once."""
    return {"event_log_dir": settings.home / f"events-{uuid.uuid4().hex[:8]}"}


def start(registry, store=None, **update) -> Server:
    settings, _ = registry
    return create_server(settings.model_copy(update={**own_event_log(settings), **update}),
                         store or InMemoryOnlineStore(), address="127.0.0.1:0", metrics_address="127.0.0.1:0")


@pytest.fixture
def server(registry) -> Iterator[Server]:
    server = start(registry)
    yield server
    server.stop(grace=None)


def test_requests_latency_and_model_version_are_exported(server: Server, registry) -> None:
    _, report = registry
    assert server.metrics_port
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for _ in range(3):
            assert len(get_feed(channel).items) == 5
        with pytest.raises(grpc.RpcError):
            get_feed(channel, page_size=0)
        admin_service_pb2_grpc.AdminServiceStub(channel).GetModelInfo(admin_service_pb2.GetModelInfoRequest())
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/no.Such/Method")(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    samples = scrape(server)
    assert value(samples, "sharerank_grpc_requests_total", method=GET_FEED, code="OK") == 3
    assert value(samples, "sharerank_grpc_requests_total", method=GET_FEED, code="INVALID_ARGUMENT") == 1
    assert value(samples, "sharerank_grpc_requests_total", method="sharerank.v1.AdminService/GetModelInfo",
                 code="OK") == 1
    assert value(samples, "sharerank_grpc_requests_total", method="grpc.health.v1.Health/Check", code="OK") == 1
    assert value(samples, "sharerank_grpc_requests_total", method="unknown", code="UNIMPLEMENTED") == 1
    assert value(samples, "sharerank_grpc_request_duration_seconds_count", method=GET_FEED) == 4
    assert 0 < value(samples, "sharerank_grpc_request_duration_seconds_sum", method=GET_FEED) < 4
    buckets = sorted(float(dict(labels)["le"]) for name, labels in samples
                     if name == "sharerank_grpc_request_duration_seconds_bucket" and (("method", GET_FEED) in labels))
    assert buckets[0] == 0.0001 and buckets[-2] == 1.0 and len(buckets) == 14  # 100 µs ... 1 s, +Inf
    assert value(samples, "sharerank_grpc_request_duration_seconds_bucket", method=GET_FEED, le="+Inf") == 4
    assert value(samples, "sharerank_model_info", name=server.holder.current.name, version=report["version"]) == 1
    assert not any(name == "sharerank_feed_degraded_total" for name, _ in samples)


def test_auth_rejections_are_counted_by_code(registry) -> None:
    server = start(registry, auth_tokens={"storefront-token": "storefront"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            for metadata in (None, (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError):
                    get_feed(channel, metadata=metadata)
            get_feed(channel, metadata=(("authorization", "Bearer storefront-token"),))
        samples = scrape(server)
        assert value(samples, "sharerank_grpc_requests_total", method=GET_FEED, code="UNAUTHENTICATED") == 2
        assert value(samples, "sharerank_grpc_requests_total", method=GET_FEED, code="OK") == 1
    finally:
        server.stop(grace=None)


def test_degraded_feeds_are_counted_and_logged(registry, dead_redis_url: str, caplog) -> None:
    observability.record_feed_degraded(())  # whatever earlier tests left: start from "not degraded"
    server = start(registry, store=open_online_store(dead_redis_url))
    try:
        with caplog.at_level(logging.INFO, logger=observability.__name__), \
                grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            for _ in range(2):
                assert len(get_feed(channel).items) == 5
        samples = scrape(server)
        assert value(samples, "sharerank_feed_degraded_total", hydrator="LiveState") == 2
        assert value(samples, "sharerank_grpc_requests_total", method=GET_FEED, code="OK") == 2
        logged = [r.getMessage() for r in caplog.records if r.name == observability.__name__]
        assert logged == ["feed degraded: LiveState failed open, serving without live features"]
    finally:
        server.stop(grace=None)
    with caplog.at_level(logging.INFO, logger=observability.__name__):
        observability.record_feed_degraded(())
    assert caplog.records[-1].getMessage() == "feed recovered: serving with live features again"


@pytest.fixture(scope="module")
def two_versions(registry):
    """Settings for a registered model of its own with two versions of the trained bundle, champion at 1."""
    from mlflow import MlflowClient

    from sharerank.registry import connect, promote

    settings, report = registry
    settings = settings.model_copy(update={"model_name": "sharerank-metrics-swap"})
    connect(settings)
    client = MlflowClient()
    source = client.get_model_version(registry[0].model_name, report["version"])
    client.create_registered_model(settings.model_name)
    for _ in range(2):
        client.create_model_version(settings.model_name, source.source, run_id=source.run_id)
    promote(settings, "1")
    return settings


def test_model_version_follows_swaps(two_versions) -> None:
    server = create_server(two_versions, InMemoryOnlineStore(), address="127.0.0.1:0", metrics_address="127.0.0.1:0")
    try:
        assert value(scrape(server), "sharerank_model_info", name="sharerank-metrics-swap", version="1") == 1
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            admin_service_pb2_grpc.AdminServiceStub(channel).ReloadModel(
                admin_service_pb2.ReloadModelRequest(model_version="2"), timeout=30)
        samples = scrape(server)
        assert value(samples, "sharerank_model_info", name="sharerank-metrics-swap", version="2") == 1
        assert value(samples, "sharerank_model_info", name="sharerank-metrics-swap", version="1") == 0
    finally:
        server.stop(grace=None)


def test_servers_have_separate_registries_and_stop_frees_the_port(registry) -> None:
    first, second = start(registry), start(registry)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            get_feed(channel)
        assert value(scrape(first), "sharerank_grpc_requests_total", method=GET_FEED, code="OK") == 1
        assert value(scrape(second), "sharerank_grpc_requests_total", method=GET_FEED, code="OK") == 0
    finally:
        first.stop(grace=None)
        second.stop(grace=None)
    with pytest.raises(OSError):
        scrape(first)


def test_metrics_port_zero_turns_metrics_off(registry) -> None:
    settings, _ = registry
    server = create_server(settings.model_copy(update={"metrics_port": 0}), InMemoryOnlineStore(),
                           address="127.0.0.1:0")
    try:
        assert server.metrics is None and server.metrics_port is None
    finally:
        server.stop(grace=None)


def test_a_taken_metrics_port_leaves_serving_up(registry, caplog) -> None:
    settings, _ = registry
    first = start(registry)
    try:
        with caplog.at_level(logging.ERROR):
            second = create_server(settings.model_copy(update={"metrics_port": first.metrics_port,
                                                               **own_event_log(settings)}),
                                   InMemoryOnlineStore(), address="127.0.0.1:0")
        try:
            assert second.metrics_port is None
            with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
                assert len(get_feed(channel).items) == 5
        finally:
            second.stop(grace=None)
        assert any("metrics off: cannot listen" in r.getMessage() for r in caplog.records)
        assert value(scrape(first), "sharerank_grpc_requests_total", method=GET_FEED, code="OK") == 0
    finally:
        first.stop(grace=None)
