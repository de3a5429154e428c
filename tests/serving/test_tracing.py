"""Traces of the real server (spans read from an in-memory exporter): one GetFeed yields its call span, a span per
pipeline stage and one per Redis round trip, and the reply names its trace; off, no span and no header."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sharerank.serving.online_store import RedisSettings, open_online_store
from sharerank.serving.server import Server, create_server
from sharerank.serving.tracing import TRACE_ID_HEADER
from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc

STAGES = {"feed.hydrate", "feed.sources", "feed.filters", "feed.scorers", "feed.caps", "feed.rerankers", "feed.page"}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def start(registry, redis_url: str, provider: TracerProvider | None, sample_ratio: float = 1.0) -> Server:
    settings, _ = registry
    store = open_online_store(redis_url, settings=RedisSettings(key_prefix=f"trace-{uuid.uuid4().hex[:8]}:"))
    return create_server(settings.model_copy(update={"event_log_dir": settings.home / f"events-{uuid.uuid4().hex}",
                                                     "trace_sample_ratio": sample_ratio}),
                         store, address="127.0.0.1:0", metrics_address="127.0.0.1:0", tracer_provider=provider)


@pytest.fixture
def traced(registry, redis_url: str, exporter: InMemorySpanExporter) -> Iterator[Server]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = start(registry, redis_url, provider)
    yield server
    server.stop(grace=None)


def get_feed(server: Server, metadata: tuple[tuple[str, str], ...] = ()
             ) -> tuple[feed_service_pb2.GetFeedResponse, dict[str, str]]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response, call = feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed.with_call(
            feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=5, explain=True), metadata=metadata,
            timeout=10)
        return response, dict(call.initial_metadata())


def test_one_get_feed_yields_a_span_per_stage_and_redis_round_trip(traced: Server,
                                                                   exporter: InMemorySpanExporter) -> None:
    response, headers = get_feed(traced)
    assert len(response.items) == 5
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.name == "/sharerank.v1.FeedService/GetFeed"]
    trace_id = call.context.trace_id
    children = [s for s in spans if s.context.trace_id == trace_id and s is not call]
    assert STAGES <= {s.name for s in children}
    redis = [s for s in children if s.name.startswith("online_store.")]
    assert redis and all(s.attributes.get("db.system") == "redis" for s in redis)
    hydrate = next(s for s in children if s.name == "feed.hydrate")
    assert any(s.parent.span_id == hydrate.context.span_id for s in redis)  # the live-state read is the hydrator's
    assert all(s.parent is not None for s in children)
    assert headers[TRACE_ID_HEADER] == format(trace_id, "032x")


def test_tracing_off_sends_no_header_and_records_nothing(registry, redis_url: str,
                                                         exporter: InMemorySpanExporter) -> None:
    server = start(registry, redis_url, None)
    try:
        response, headers = get_feed(server)
    finally:
        server.stop(grace=None)
    assert len(response.items) == 5
    assert TRACE_ID_HEADER not in headers and exporter.get_finished_spans() == ()


def test_the_ratio_picks_calls_and_a_callers_traceparent_overrides_it(registry, redis_url: str,
                                                                      exporter: InMemorySpanExporter) -> None:
    """At ratio 0 a plain call makes no span at all (not even a dropped one), a caller's sampled traceparent is
    continued, an unsampled one is not; at ratio 0.5 about half the calls are traced."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    server = start(registry, redis_url, provider, sample_ratio=0.0)
    try:
        _, plain = get_feed(server)
        assert exporter.get_finished_spans() == () and TRACE_ID_HEADER not in plain
        _, unsampled = get_feed(server, (("traceparent", f"00-{parent_trace}-00f067aa0ba902b7-00"),))
        assert exporter.get_finished_spans() == () and TRACE_ID_HEADER not in unsampled
        _, sampled = get_feed(server, (("traceparent", f"00-{parent_trace}-00f067aa0ba902b7-01"),))
    finally:
        server.stop(grace=None)
    assert sampled[TRACE_ID_HEADER] == parent_trace
    assert {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()} == {parent_trace}
    exporter.clear()
    server = start(registry, redis_url, provider, sample_ratio=0.5)
    try:
        traced_calls = sum(TRACE_ID_HEADER in get_feed(server)[1] for _ in range(60))
    finally:
        server.stop(grace=None)
    assert 12 <= traced_calls <= 48  # binomial(60, 0.5): outside this once in ~10^5 runs


def test_calls_are_logged_with_their_ids_and_failures_always(traced: Server, caplog: pytest.LogCaptureFixture,
                                                             registry) -> None:
    _, report = registry
    with caplog.at_level(logging.DEBUG, logger="sharerank.requests"):
        with grpc.insecure_channel(f"127.0.0.1:{traced.port}") as channel:
            feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3), metadata=(("x-request-id", "r-1"),),
                timeout=10)
    (ok,) = [r for r in caplog.records if r.name == "sharerank.requests"]
    assert (ok.levelno, ok.request_id, ok.outcome, ok.model_version) == (logging.DEBUG, "r-1", "OK", report["version"])
    assert len(ok.trace_id) == 32 and ok.method == "sharerank.v1.FeedService/GetFeed"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sharerank.requests"):  # a refused request: one INFO line
        with grpc.insecure_channel(f"127.0.0.1:{traced.port}") as channel, pytest.raises(grpc.RpcError):
            feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_service_pb2.GetFeedRequest(user_id="", page_size=3), timeout=10)
    (refused,) = [r for r in caplog.records if r.name == "sharerank.requests"]
    assert refused.levelno == logging.INFO and refused.outcome == "INVALID_ARGUMENT" and len(refused.request_id) == 32


def test_a_call_the_server_fails_is_logged_at_warning(registry, caplog: pytest.LogCaptureFixture) -> None:
    """No model to serve: UNAVAILABLE, the server's failure, logged at the default level."""
    from sharerank.serving.online_store import InMemoryOnlineStore

    settings, _ = registry
    server = create_server(settings.model_copy(update={"event_log_dir": settings.home / f"events-{uuid.uuid4().hex}",
                                                       "model_name": f"absent-{uuid.uuid4().hex}"}),
                           InMemoryOnlineStore(), address="127.0.0.1:0")
    try:
        with caplog.at_level(logging.WARNING, logger="sharerank.requests"), pytest.raises(grpc.RpcError):
            get_feed(server)
    finally:
        server.stop(grace=None)
    (failed,) = [r for r in caplog.records if r.name == "sharerank.requests"]
    assert failed.levelno == logging.WARNING and failed.outcome == "UNAVAILABLE"


def test_spans_reach_an_otlp_collector_when_an_endpoint_is_set(registry, redis_url: str) -> None:
    """A real OTLP/gRPC receiver on loopback gets the call's spans (every call sampled here) by the server's stop."""
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[str] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.extend(span.name for resource in request.resource_spans for scope in resource.scope_spans
                            for span in scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    settings, _ = registry
    server = create_server(settings.model_copy(update={
        "event_log_dir": settings.home / f"events-{uuid.uuid4().hex}", "otlp_endpoint": f"http://127.0.0.1:{port}",
        "trace_sample_ratio": 1.0}), open_online_store(redis_url), address="127.0.0.1:0")
    try:
        _, headers = get_feed(server)
    finally:
        server.stop(grace=None)  # flushes the batch
        collector.stop(None)
    assert TRACE_ID_HEADER in headers
    assert "/sharerank.v1.FeedService/GetFeed" in received and STAGES <= set(received)


def test_serve_writes_json_request_lines_when_asked(registry, tmp_path) -> None:
    """SHARERANK_LOG_FORMAT=json with SHARERANK_LOG_LEVEL=debug: each call is one JSON object on stderr."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from conftest import free_port, wait_for

    settings, report = registry
    port = free_port()
    log_file = tmp_path / "serve.log"
    env = {**os.environ, "SHARERANK_HOME": str(settings.home), "REDIS_URL": "memory://",
           "SHARERANK_EVENT_LOG_DIR": str(tmp_path / "events"), "SHARERANK_METRICS_PORT": "0",
           "SHARERANK_LOG_FORMAT": "json", "SHARERANK_LOG_LEVEL": "debug"}
    with log_file.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "serve", "--port", str(port)], env=env,
                                stderr=stderr)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = feed_service_pb2_grpc.FeedServiceStub(channel)

            def answered() -> bool:
                try:
                    stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3),
                                 metadata=(("x-request-id", "json-1"),), timeout=5)
                    return True
                except grpc.RpcError:
                    return proc.poll() is not None

            wait_for(answered, "the server answers a feed", timeout_s=120)
        wait_for(lambda: '"json-1"' in log_file.read_text(), "the call's log line is written")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    (call,) = [line for line in lines if line.get("request_id") == "json-1"]
    assert call["outcome"] == "OK" and call["model_version"] == report["version"]
    assert call["name"] == "sharerank.requests" and call["levelname"] == "DEBUG"
