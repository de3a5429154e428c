"""Live state that heals: events logged while the online store missed them reach it once it answers, and a
store that lost its state (a Redis restarted empty, a fresh in-process store) is rebuilt from the event log.

Over real gRPC with a private redis-server that the tests stop and start again empty (it saves nothing).
"""

from __future__ import annotations

import json
import time

import grpc
from conftest import wait_for
from google.protobuf.timestamp_pb2 import Timestamp

from sharerank.serving.events.healer import CHECKPOINT_FILE, LiveStateHealer
from sharerank.serving.events.log import EventLog, PurchaseRecord, ShareRecord, ViewRecord
from sharerank.serving.online_store import InMemoryOnlineStore, RedisSettings, ShareFatigue, open_online_store
from sharerank.serving.server import Server, create_server
from sharerank.v1 import event_service_pb2, event_service_pb2_grpc, feed_service_pb2, feed_service_pb2_grpc


def purchase(event_id: str, user: str, product: str) -> event_service_pb2.Event:
    now = Timestamp()
    now.GetCurrentTime()
    return event_service_pb2.Event(event_id=event_id, event_time=now,
                                   purchase=event_service_pb2.PurchaseEvent(user_id=user, product_id=product))


class Client:
    def __init__(self, server: Server):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.feed = feed_service_pb2_grpc.FeedServiceStub(self.channel)
        self.events = event_service_pb2_grpc.EventServiceStub(self.channel)

    def ids(self, user: str) -> list[str]:
        request = feed_service_pb2.GetFeedRequest(user_id=user, page_size=20)
        return [item.product_id for item in self.feed.GetFeed(request, timeout=10).items]

    def record(self, *events: event_service_pb2.Event) -> int:
        return self.events.RecordEvents(event_service_pb2.RecordEventsRequest(events=events), timeout=10).accepted_count


def top_user(server: Server) -> str:
    bundle = server.holder.current.bundle
    return str(bundle.users[bundle.history.getnnz(axis=1).argmax()])


def test_a_purchase_recorded_while_redis_is_down_leaves_the_feed_once_redis_returns_empty(
        registry, redis_process_factory, tmp_path) -> None:
    redis = redis_process_factory()
    store = open_online_store(redis.url, settings=RedisSettings(key_prefix="sr:heal:"))
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events", "heal_seconds": 0.5,
                                              "store_probe_seconds": 0.2})
    server = create_server(settings, store, address="127.0.0.1:0")
    client = Client(server)
    try:
        user = top_user(server)
        bought_before, bought_during = client.ids(user)[:2]
        assert client.record(purchase("e-before", user, bought_before)) == 1
        wait_for(lambda: bought_before not in client.ids(user), "the purchase is a live feature")
        redis.kill()
        assert client.record(purchase("e-during", user, bought_during)) == 1  # logged and acknowledged
        assert bought_during in client.ids(user)  # no live features while Redis is down
        # Re-sending is answered as a duplicate; it is the healer, not the client, that repairs the state.
        assert client.record(purchase("e-during", user, bought_during)) == 0
        redis.start()  # empty: it saves nothing
        wait_for(lambda: bought_during not in client.ids(user), "the purchase logged during the outage applies")
        # The restarted Redis lost the earlier purchase too; the whole log was re-applied.
        assert bought_before not in client.ids(user)
    finally:
        client.channel.close()
        server.stop(grace=None)
        store.close()


def test_start_up_rebuilds_a_lost_store_from_the_event_log(registry, redis_process_factory, tmp_path) -> None:
    redis = redis_process_factory()
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events"})
    store = open_online_store(redis.url, settings=RedisSettings(key_prefix="sr:heal-start:"))
    server = create_server(settings, store, address="127.0.0.1:0")
    client = Client(server)
    user = top_user(server)
    bought = client.ids(user)[0]
    assert client.record(purchase("e1", user, bought)) == 1
    client.channel.close()
    server.stop(grace=None)
    redis.restart()  # state gone while no server runs
    for fresh_store in (store, InMemoryOnlineStore()):  # Redis restarted empty; a brand-new in-process store
        server = create_server(settings, fresh_store, address="127.0.0.1:0")
        client = Client(server)
        try:
            wait_for(lambda c=client: bought not in c.ids(user), f"start-up re-applies the log into {fresh_store!r}")
        finally:
            client.channel.close()
            server.stop(grace=None)
    store.close()


def test_replay_is_idempotent_and_resumes_from_the_checkpoint(tmp_path) -> None:
    store = InMemoryOnlineStore()
    with EventLog(tmp_path / "events") as event_log:
        event_log.append([ShareRecord("s1", "u1", "u2", "p1", 10.0), PurchaseRecord("e1", "u2", "p1", 11.0, "s1"),
                          ViewRecord("v1", "u3", "p2", 12.0)])
        healer = LiveStateHealer(event_log, store, lambda: None)
        assert healer.heal_once() == 2  # the store had no marker: the whole log (views change no live state)
        state = store.get_live_state("u2")
        assert state.purchases == {"p1": 11.0} and state.shares_received[0].sharer_id == "u1"
        assert healer.heal_once() == 0  # nothing missed, marker present: nothing re-applied
        event_log.append([PurchaseRecord("e2", "u2", "p3", 13.0)])
        healer.heal_once()
        healer.heal_once()  # the checkpoint trails the log by one cycle
        checkpoint = json.loads((tmp_path / "events" / CHECKPOINT_FILE).read_text())
        assert checkpoint["applied"] == event_log.offsets()
        healer.note_missed(checkpoint["applied"])
        assert healer.heal_once() == 0  # missed from the end: nothing to re-apply
        healer.note_missed({})
        assert healer.heal_once() == 3 and store.get_purchases("u2") == {"p1": 11.0, "p3": 13.0}  # same state
        log_id = checkpoint["log_id"]
    with EventLog(tmp_path / "events") as reopened:
        again = LiveStateHealer(reopened, store, lambda: None)
        assert again.log_id == log_id and again.heal_once() == 0  # start-up: the tail after the checkpoint only
        store.clear()
        assert again.heal_once() == 3  # the store lost its marker: everything again


def test_replaying_the_log_does_not_double_count_share_fatigue(tmp_path, redis_url) -> None:
    """The healer re-applies shares already in the store (a missed write, a lost marker): each share event counts
    once in the recipient's fatigue, in the in-process store and in Redis."""
    now = time.time()
    redis_store = open_online_store(redis_url, settings=RedisSettings(key_prefix=f"sr:heal-fatigue-{now}:"))
    for store in (InMemoryOnlineStore(), redis_store):
        with EventLog(tmp_path / f"events-{type(store).__name__}") as event_log:
            event_log.append([ShareRecord("s1", "spammer", "u2", "p1", now - 60),
                              ShareRecord("s2", "spammer", "u2", "p2", now - 30),
                              ShareRecord("s3", "friend", "u2", "p1", now - 10)])
            healer = LiveStateHealer(event_log, store, lambda: None)
            expected = ShareFatigue(3, {"spammer": 2, "friend": 1})
            assert healer.heal_once() == 3 and store.get_live_state("u2").fatigue == expected
            healer.note_missed({})  # a write was missed: the whole log again
            assert healer.heal_once() == 3 and store.get_live_state("u2").fatigue == expected
            store.set_marker(healer.marker, "lost")  # as if the state were lost: everything again
            assert healer.heal_once() == 3 and store.get_live_state("u2").fatigue == expected
        store.clear()
        store.close()
