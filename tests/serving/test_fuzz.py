"""Every RPC fuzzed with malformed requests (hypothesis) against the real server on loopback: only the codes
documented for each RPC (``fuzzing.DOCUMENTED``), bounded errors with ErrorInfo, the server alive and its
memory bounded afterwards. ``bench/bench_fuzz.py`` runs the same fuzzers for ≥ 10,000 requests."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from fuzzing import FUZZERS, PAGE_TOKEN_KEY, Catalogue, rss_mb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharerank.serving.online_store import InMemoryOnlineStore
from sharerank.serving.server import Server, create_server
from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc

RSS_GROWTH_MB = 300
"""Most this process (server and client) may grow over the fuzzing; a leak of the inputs (up to 1 MB each,
hundreds of them) would pass it."""

_start_rss: list[float] = []


@pytest.fixture(scope="module")
def fuzzed(registry, tmp_path_factory) -> Iterator[tuple[Server, grpc.Channel, Catalogue]]:
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path_factory.mktemp("events"),
                                              "page_token_key": PAGE_TOKEN_KEY})
    server = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    catalogue = Catalogue.of(server.holder.current.bundle, [server.holder.current.version])
    _start_rss.append(rss_mb())
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield server, channel, catalogue
    server.stop(grace=None)


@pytest.mark.parametrize("rpc", sorted(FUZZERS))
@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_malformed_requests_get_documented_codes(fuzzed, rpc: str, data) -> None:
    _, channel, catalogue = fuzzed
    FUZZERS[rpc](channel, catalogue, data)


def test_the_server_is_alive_and_bounded_after_fuzzing(fuzzed) -> None:
    server, channel, catalogue = fuzzed
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reply = feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
        feed_service_pb2.GetFeedRequest(user_id=catalogue.users[0], page_size=10), timeout=10)
    assert len(reply.items) == 10
    assert rss_mb() - _start_rss[0] < RSS_GROWTH_MB
