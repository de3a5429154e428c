"""`sharerank serve --processes N`: replicas on one port (SO_REUSEPORT) sharing a real Redis and the event
stream (a real private nats-server); what a multi-process configuration refuses; a replica killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import redis
from conftest import free_port, port_below_ephemeral, wait_for
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from sharerank.cli import app
from sharerank.serving.events.stream import JetStreamJournal
from sharerank.v1 import event_service_pb2 as pb
from sharerank.v1 import event_service_pb2_grpc, feed_service_pb2, feed_service_pb2_grpc

CHANNELS = 12
"""Connections the test opens: the kernel spreads connections, not calls, so each is its own channel. All 12
landing on one of two replicas has a chance of 1 in 2,048."""


def test_processes_refuse_the_in_process_store_and_the_file_log(monkeypatch: pytest.MonkeyPatch,
                                                                redis_url: str) -> None:
    runner = CliRunner()
    monkeypatch.setenv("SHARERANK_REDIS_URL", "memory://")
    result = runner.invoke(app, ["serve", "--processes", "2", "--port", "0"])
    assert result.exit_code == 2 and "in-process online store" in result.output
    monkeypatch.setenv("SHARERANK_REDIS_URL", redis_url)
    result = runner.invoke(app, ["serve", "--processes", "2", "--port", "0"])
    assert result.exit_code == 2 and "SHARERANK_EVENT_STREAM_URL" in result.output


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return response.read().decode()


def feeds_served(port: int) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text(port).splitlines()
               if line.startswith("sharerank_grpc_requests_total{") and "GetFeed" in line)


def serving(channel: grpc.Channel) -> bool:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def answers(port: int) -> bool:
    try:
        metrics_text(port)
        return True
    except OSError:
        return False


def event(event_id: str, **kind) -> pb.Event:
    stamp = Timestamp()
    stamp.FromSeconds(int(time.time()) - 60)
    return pb.Event(event_id=event_id, event_time=stamp, **kind)


def test_two_replicas_share_one_port_the_store_the_stream_and_page_tokens(registry, redis_url: str, nats_url: str,
                                                                          event_stream: str, tmp_path: Path) -> None:
    settings, _ = registry
    store_url = redis_url.rsplit("/", 1)[0] + "/9"  # a database of this test's own: the replicas use the default prefix
    redis.Redis.from_url(store_url).flushdb()
    port, metrics = free_port(), port_below_ephemeral(1)  # replica i serves metrics on metrics + i
    env = {**os.environ, "SHARERANK_HOME": str(settings.home), "SHARERANK_REDIS_URL": store_url,
           "SHARERANK_EVENT_STREAM_URL": nats_url, "SHARERANK_EVENT_STREAM_NAME": event_stream,
           "SHARERANK_METRICS_PORT": str(metrics), "SHARERANK_RELOAD_POLL_SECONDS": "0",
           "SHARERANK_MAX_CONNECTION_AGE_SECONDS": "2"}
    supervisor = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "serve", "--processes", "2", "--port",
                                   str(port)], env=env, stderr=(tmp_path / "serve.log").open("w"))
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("sharerank.test.channel", i)])
                for i in range(CHANNELS)]
    try:
        wait_for(lambda: answers(metrics) and answers(metrics + 1) and all(serving(c) for c in channels),
                 "both replicas serve", timeout_s=120)
        assert len(children(supervisor.pid)) == 2

        # Feeds on every connection; both replicas served some (their own metrics say so).
        for channel in channels:
            feed = feed_service_pb2_grpc.FeedServiceStub(channel).GetFeed(
                feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3), timeout=10)
            assert len(feed.items) == 3
            # A page token from whichever replica answered works on every other connection.
            for other in channels:
                feed_service_pb2_grpc.FeedServiceStub(other).GetFeed(
                    feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3, page_token=feed.next_page_token),
                    timeout=10)
        assert feeds_served(metrics) > 0 and feeds_served(metrics + 1) > 0

        # A share recorded through one connection is known to every replica; a resend anywhere is a duplicate.
        events = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
        share = event("s1", share=pb.ShareEvent(sharer_id="ann", recipient_id="bob", product_id="p1"))
        assert events[0].RecordEvents(pb.RecordEventsRequest(events=[share]), timeout=10).accepted_count == 1
        for i, stub in enumerate(events):
            reply = stub.RecordEvents(pb.RecordEventsRequest(events=[share, event(
                f"b{i}", purchase=pb.PurchaseEvent(user_id="bob", product_id="p1", share_id="s1"))]), timeout=10)
            assert (reply.accepted_count, reply.duplicate_count) == (1, 1)
        journal = JetStreamJournal(nats_url, event_stream, tmp_path / "read.json")
        try:
            stored = [r.event_id for batch in journal.read({}, {"seq": 10_000}) for r in batch]
        finally:
            journal.close()
        assert sorted(stored) == sorted(["s1", *(f"b{i}" for i in range(CHANNELS))])

        # kill -9 replica 0: new connections reach the other at once; the supervisor starts a new one, and the
        # old connections, aged out (GOAWAY after 2 s here), reconnect and bring it load again.
        victim = next(pid for pid in children(supervisor.pid)
                      if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2] == b"0")
        os.kill(victim, signal.SIGKILL)
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("sharerank.test.channel", "after")]) as fresh:
            wait_for(lambda: serving(fresh), "the surviving replica answers a new connection", timeout_s=10)
        wait_for(lambda: victim not in children(supervisor.pid) and len(children(supervisor.pid)) == 2
                 and answers(metrics), "the supervisor replaced the killed replica", timeout_s=120)
        stubs = [feed_service_pb2_grpc.FeedServiceStub(c) for c in channels]
        wait_for(lambda: all(stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id="anyone", page_size=3), timeout=10)
                             for stub in stubs) and feeds_served(metrics) > 0,
                 "the replacement serves feeds on the test's old connections", timeout_s=60)
    finally:
        for channel in channels:
            channel.close()
        supervisor.send_signal(signal.SIGTERM)
        try:
            code = supervisor.wait(timeout=60)
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
