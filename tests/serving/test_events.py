"""EventService.RecordEvents on the real server over loopback gRPC: validation, the log, live state, faults."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharerank.dataset.reader import load_dataset
from sharerank.models.seeding.plan import SeedingContext
from sharerank.serving.errors import error_info
from sharerank.serving.events.log import EventLog, EventLogError
from sharerank.serving.online_store import (
    FriendsBought,
    InMemoryOnlineStore,
    OnlineStore,
    ReceivedShare,
    RedisSettings,
    open_online_store,
)
from sharerank.serving.server import Server, create_server
from sharerank.v1 import event_service_pb2, event_service_pb2_grpc, feed_service_pb2, feed_service_pb2_grpc

pb = event_service_pb2
NOW = 1_718_000_000  # unix seconds; well in the past, so never "in the future"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[OnlineStore]:
    if request.param == "memory":
        yield InMemoryOnlineStore()
        return
    url = request.getfixturevalue("redis_url")
    store = open_online_store(url, settings=RedisSettings(key_prefix=f"test:events:{uuid.uuid4().hex[:12]}:"))
    yield store
    store.clear()
    store.close()


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(registry, tmp_path: Path) -> Iterator[StartServer]:
    """Starts servers on the trained model, by default all on ``tmp_path/events``; stops them at teardown."""
    base, _ = registry
    servers: list[Server] = []

    def start(store: OnlineStore, event_log_dir: Path | None = None, **update) -> Server:
        settings_ = base.model_copy(update={"event_log_dir": event_log_dir or tmp_path / "events",
                                            "metrics_port": 0, **update})
        server = create_server(settings_, store, address="127.0.0.1:0")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=None)


@pytest.fixture
def server(start_server: StartServer, store: OnlineStore) -> Server:
    return start_server(store)


def stub(server: Server) -> event_service_pb2_grpc.EventServiceStub:
    return event_service_pb2_grpc.EventServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def record(server: Server, *events: pb.Event) -> pb.RecordEventsResponse:
    return stub(server).RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)


def at(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=round((seconds - int(seconds)) * 1e9))


def share(event_id: str, sharer: str, recipient: str, product: str, ts: float = NOW) -> pb.Event:
    return pb.Event(event_id=event_id, event_time=at(ts),
                    share=pb.ShareEvent(sharer_id=sharer, recipient_id=recipient, product_id=product))


def purchase(event_id: str, user: str, product: str, ts: float = NOW, share_id: str = "") -> pb.Event:
    return pb.Event(event_id=event_id, event_time=at(ts),
                    purchase=pb.PurchaseEvent(user_id=user, product_id=product, share_id=share_id))


def view(event_id: str, user: str, product: str, ts: float = NOW) -> pb.Event:
    return pb.Event(event_id=event_id, event_time=at(ts), view=pb.ViewEvent(user_id=user, product_id=product))


def user_with_friends(server: Server, rank: int = 0) -> tuple[str, list[str]]:
    """A user of the serving model with friends, and their friends' ids."""
    bundle = server.holder.current.bundle
    counts = bundle.friends.getnnz(axis=1)
    row = int(counts.argsort()[::-1][rank])
    return str(bundle.users[row]), [str(bundle.users[f]) for f in bundle.friends_of(row)]


# --- the happy path


def test_concurrent_calls_lose_nothing(server: Server, store: OnlineStore, tmp_path: Path) -> None:
    """8 clients at once, each sending its own events in batches and replaying one batch of another client's:
    every event is logged exactly once, every acknowledgement adds up, and every purchase is live state."""
    import threading

    clients, batches, size = 8, 6, 25
    events = {c: [[purchase(f"c{c}-b{b}-{i}", f"user-{c}-{i % 5}", f"p-{c}-{b}-{i}", NOW + i) for i in range(size)]
                  for b in range(batches)] for c in range(clients)}
    answers: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(clients)

    def client(c: int) -> None:
        try:
            channel_stub = stub(server)
            start.wait(timeout=30)
            for batch in events[c] + [events[(c + 1) % clients][0]]:  # the last one replays a neighbour's
                reply = channel_stub.RecordEvents(pb.RecordEventsRequest(events=batch), timeout=30)
                answers.append((reply.accepted_count, reply.duplicate_count))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    total = clients * batches * size
    assert len(answers) == clients * (batches + 1)
    assert sum(a for a, _ in answers) == total  # each event acknowledged as new exactly once
    assert sum(a + d for a, d in answers) == total + clients * size
    logged = load_dataset(tmp_path / "events")
    with (tmp_path / "events" / "purchases.csv").open() as f:
        ids = [line.rsplit(",", 1)[1].strip() for line in f.readlines()[1:]]
    assert len(ids) == len(set(ids)) == total == len(logged.purchases)
    for c in range(clients):
        for u in range(5):
            bought = store.get_purchases(f"user-{c}-{u}")
            assert set(bought) == {f"p-{c}-{b}-{i}" for b in range(batches) for i in range(u, size, 5)}


def test_a_mixed_batch_is_accepted_and_logged(server: Server, registry, tmp_path: Path) -> None:
    _, report = registry
    response = record(server, share("s1", "alice", "bob", "p1", NOW), purchase("b1", "bob", "p1", NOW + 60.5, "s1"),
                      view("v1", "carol", "p2", NOW + 120))
    assert (response.accepted_count, response.duplicate_count) == (3, 0)
    assert response.model_version == report["version"]
    root = tmp_path / "events"
    assert (root / "purchases.csv").read_text().splitlines() == [
        "user_id,product_id,ts,share_id,event_id", f"bob,p1,{NOW + 60.5!r},s1,b1"]
    assert (root / "shares.csv").read_text().splitlines()[1] == f"s1,alice,bob,p1,{float(NOW)!r}"
    assert (root / "views.csv").read_text().splitlines()[1] == f"carol,p2,{float(NOW + 120)!r},v1"


def test_the_log_loads_as_a_dataset(server: Server, tmp_path: Path) -> None:
    record(server, share("s1", "alice", "bob", "p1"), purchase("b1", "bob", "p1", NOW + 1, "s1"),
           purchase("b2", "brand-new-user", "brand-new-product", NOW + 2), view("v1", "carol", "p2"))
    record(server, purchase("b3", "carol", "p1", NOW + 3, "s1"))  # cites a share of an earlier call
    data = load_dataset(tmp_path / "events")
    assert data.summary()["purchases"] == 3 and data.summary()["shares"] == 1 and data.summary()["views"] == 1
    assert data.users[data.purchases.user].tolist() == ["bob", "brand-new-user", "carol"]
    assert data.purchases.share.tolist() == [0, -1, 0]
    assert data.purchases.ts.tolist() == [NOW + 1.0, NOW + 2.0, NOW + 3.0]


def test_replays_are_duplicates_also_after_a_restart(start_server: StartServer, store: OnlineStore,
                                                     tmp_path: Path) -> None:
    batch = (share("s1", "alice", "bob", "p1"), purchase("b1", "bob", "p1", NOW + 1, "s1"))
    first = start_server(store)
    assert (record(first, *batch).accepted_count, record(first, *batch).duplicate_count) == (2, 2)
    mixed = record(first, *batch, view("v1", "bob", "p3"))
    assert (mixed.accepted_count, mixed.duplicate_count) == (1, 2)
    first.stop(grace=None)
    again = start_server(store)  # the same log folder: the ids are read back
    response = record(again, *batch, view("v1", "bob", "p3"))
    assert (response.accepted_count, response.duplicate_count) == (0, 3)
    assert load_dataset(tmp_path / "events").summary()["purchases"] == 1


def test_a_purchase_disappears_from_the_next_feed(server: Server) -> None:
    feed = feed_service_pb2_grpc.FeedServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    user, _ = user_with_friends(server, rank=3)
    request = feed_service_pb2.GetFeedRequest(user_id=user, page_size=20)
    first = feed.GetFeed(request, timeout=10).items[0].product_id
    assert record(server, purchase("b1", user, first)).accepted_count == 1
    assert first not in {item.product_id for item in feed.GetFeed(request, timeout=10).items}


def test_purchases_fan_out_to_friends_and_shares_reach_the_recipient(server: Server, store: OnlineStore) -> None:
    buyer, friends = user_with_friends(server)
    product = str(server.holder.current.bundle.products[0])
    record(server, purchase("b1", buyer, product, NOW + 5), share("s1", buyer, friends[0], "p-new", NOW + 7))
    assert store.get_live_state(buyer).purchases == {product: NOW + 5.0}
    for friend in friends:
        assert FriendsBought(product, 1, buyer, NOW + 5.0) in store.get_live_state(friend).friends_bought
    assert store.get_live_state(friends[0]).shares_received == [ReceivedShare("p-new", buyer, NOW + 7.0)]
    # A buyer the model has never seen has no friends yet: their purchase is stored, nothing fans out.
    record(server, purchase("b2", "brand-new-user", product, NOW + 9))
    assert store.get_live_state("brand-new-user").purchases == {product: NOW + 9.0}
    assert all(f.last_buyer != "brand-new-user" for f in store.get_live_state(friends[0]).friends_bought)


def test_a_ring_members_purchase_is_no_social_proof(server: Server, store: OnlineStore) -> None:
    ring_buyer, ring_friends = user_with_friends(server, rank=0)
    buyer, friends = user_with_friends(server, rank=1)
    bundle = server.holder.current.bundle
    ring_score = np.zeros(len(bundle.users))
    ring_score[bundle.user_rows[ring_buyer]] = 0.9  # as the detector scores a ring's core member
    context = bundle.seeding
    server.holder.serve_bundle(dataclasses.replace(bundle, seeding=SeedingContext(
        context.users, context.influence, context.community, context.activity, context.fatigue, ring_score)),
        "ringed")
    product = str(bundle.products[0])
    record(server, purchase("b1", ring_buyer, product, NOW + 5), purchase("b2", buyer, product, NOW + 6))
    assert store.get_live_state(ring_buyer).purchases == {product: NOW + 5.0}  # their own state has it
    only_ring_friends = set(ring_friends) - set(friends) - {buyer}
    assert only_ring_friends, "the two buyers share every friend: pick others"
    for friend in only_ring_friends:
        assert store.get_live_state(friend).friends_bought == []
    for friend in set(friends) - {ring_buyer}:  # an ordinary buyer's purchase still fans out
        assert FriendsBought(product, 1, buyer, NOW + 6.0) in store.get_live_state(friend).friends_bought


def test_views_go_to_the_log_only(server: Server, store: OnlineStore, tmp_path: Path) -> None:
    record(server, view("v1", "alice", "p1"))
    assert store.get_live_state("alice") == store.get_live_state("nobody")
    assert (tmp_path / "events" / "views.csv").read_text().splitlines()[1:] == [f"alice,p1,{float(NOW)!r},v1"]


def test_events_are_taken_without_a_model(tmp_path: Path) -> None:
    from sharerank.config import Settings

    server = create_server(Settings(home=tmp_path, reload_poll_seconds=0, metrics_port=0), InMemoryOnlineStore(),
                           address="127.0.0.1:0")
    try:
        response = record(server, purchase("b1", "alice", "p1"))
        assert (response.accepted_count, response.model_version) == (1, "")
        assert (tmp_path / "events" / "purchases.csv").exists()  # the default folder: <home>/events
    finally:
        server.stop(grace=None)


# --- validation: the whole batch or nothing


def _unknown_field(message, number: int = 15):
    """A copy of ``message`` carrying a varint field ``number`` its schema does not have (a newer client)."""
    copy = type(message)()
    copy.ParseFromString(message.SerializeToString() + bytes([number << 3, 1]))
    return copy


def _with_bad_time(**kwargs) -> pb.Event:
    event = purchase("e1", "alice", "p1")
    event.event_time.CopyFrom(Timestamp(**kwargs))
    return event


def _unknown_in(part: str) -> pb.Event:
    event = purchase("e1", "alice", "p1")
    if part == "event":
        return _unknown_field(event)
    if part == "purchase":
        event.purchase.CopyFrom(_unknown_field(event.purchase))
    else:
        event.event_time.CopyFrom(_unknown_field(event.event_time))
    return event


INVALID = [
    # (events, reason, index, field)
    ([purchase("", "alice", "p1")], "EMPTY_EVENT_ID", 0, "events[0].event_id"),
    ([purchase("   ", "alice", "p1")], "EMPTY_EVENT_ID", 0, "events[0].event_id"),
    ([purchase("a\nb", "alice", "p1")], "INVALID_EVENT_ID", 0, "events[0].event_id"),
    ([purchase("x" * 513, "alice", "p1")], "INVALID_EVENT_ID", 0, "events[0].event_id"),
    ([purchase("e1", "alice", "p1"), view("e1", "alice", "p1")], "DUPLICATE_EVENT_ID", 1, "events[1].event_id"),
    ([pb.Event(event_id="e1", purchase=pb.PurchaseEvent(user_id="alice", product_id="p1"))],
     "INVALID_EVENT_TIME", 0, "events[0].event_time"),
    ([_with_bad_time(seconds=-1)], "INVALID_EVENT_TIME", 0, "events[0].event_time"),
    ([_with_bad_time(seconds=NOW, nanos=-1)], "INVALID_EVENT_TIME", 0, "events[0].event_time"),
    ([_with_bad_time(seconds=NOW, nanos=1_000_000_000)], "INVALID_EVENT_TIME", 0, "events[0].event_time"),
    ([_with_bad_time(seconds=4_000_000_000)], "INVALID_EVENT_TIME", 0, "events[0].event_time"),  # year 2096
    ([_with_bad_time(seconds=2**62)], "INVALID_EVENT_TIME", 0, "events[0].event_time"),
    ([pb.Event(event_id="e1", event_time=at(NOW))], "MISSING_EVENT_KIND", 0, "events[0].kind"),
    ([purchase("e1", "", "p1")], "EMPTY_ID", 0, "events[0].purchase.user_id"),
    ([purchase("e1", "alice", " ")], "EMPTY_ID", 0, "events[0].purchase.product_id"),
    ([purchase("e1", "alice", "p1", share_id="\t")], "EMPTY_ID", 0, "events[0].purchase.share_id"),
    ([share("e1", "alice", "", "p1")], "EMPTY_ID", 0, "events[0].share.recipient_id"),
    ([view("e1", "alice", "")], "EMPTY_ID", 0, "events[0].view.product_id"),
    ([purchase("e1", "al\x00ice", "p1")], "INVALID_ID", 0, "events[0].purchase.user_id"),
    ([share("e1", "alice", "alice", "p1")], "SELF_SHARE", 0, "events[0].share.recipient_id"),
    ([purchase("e1", "alice", "p1", share_id="never-shared")], "UNKNOWN_SHARE", 0, "events[0].purchase.share_id"),
    ([view("e0", "alice", "p1"), purchase("e1", "alice", "p1", share_id="e0")], "UNKNOWN_SHARE", 1,
     "events[1].purchase.share_id"),  # an event id, but a view's
    ([_unknown_in("event")], "UNKNOWN_FIELDS", 0, "events[0]"),
    ([_unknown_in("purchase")], "UNKNOWN_FIELDS", 0, "events[0].purchase"),
    ([_unknown_in("time")], "UNKNOWN_FIELDS", 0, "events[0].event_time"),
]


@pytest.mark.parametrize(("events", "reason", "index", "field"), INVALID,
                         ids=[f"{case[1]}-{i}" for i, case in enumerate(INVALID)])
def test_an_invalid_event_rejects_the_whole_batch(server: Server, store: OnlineStore, tmp_path: Path,
                                                  events, reason: str, index: int, field: str) -> None:
    valid_first = purchase("ok-0", "dora", "p9")  # valid, yet not applied: the batch is all or nothing
    with pytest.raises(grpc.RpcError) as err:
        record(server, valid_first, *events)
    index += 1
    field = field.replace(f"events[{index - 1}]", f"events[{index}]", 1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err.value)
    assert info is not None and info.reason == reason and info.domain == "sharerank.v1"
    assert info.metadata["index"] == str(index) and info.metadata["field"] == field
    assert err.value.details().startswith(field)
    assert not (tmp_path / "events" / "purchases.csv").exists()
    assert store.get_purchases("dora") == {}
    assert record(server, valid_first).accepted_count == 1  # was never recorded


@pytest.mark.parametrize(("count", "reason"), [(0, "NO_EVENTS"), (1001, "TOO_MANY_EVENTS")])
def test_batch_size_is_1_to_1000(server: Server, count: int, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        record(server, *(view(f"v{i}", "alice", "p1") for i in range(count)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(err.value).reason == reason
    assert "1 to 1000" in err.value.details()
    assert record(server, *(view(f"v{i}", "alice", "p1") for i in range(1000))).accepted_count == 1000


def test_unknown_fields_in_the_request_are_refused(server: Server) -> None:
    request = _unknown_field(pb.RecordEventsRequest(events=[view("v1", "alice", "p1")]), number=9)
    with pytest.raises(grpc.RpcError) as err:
        stub(server).RecordEvents(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err.value)
    assert info.reason == "UNKNOWN_FIELDS" and info.metadata["field_numbers"] == "9"


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
_ID = st.one_of(st.sampled_from(["u1", "u2", "p1", "s0", "", " ", "a,b", 'q"x']), _TEXT)


@st.composite
def _events(draw) -> pb.Event:
    event = pb.Event(event_id=draw(st.one_of(st.sampled_from(["e0", "e1", "s0", ""]), _TEXT)))
    if draw(st.booleans()):
        event.event_time.seconds = draw(st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(0, 2 * NOW)))
        event.event_time.nanos = draw(st.one_of(st.integers(-2**31, 2**31 - 1), st.integers(0, 999_999_999)))
    kind = draw(st.sampled_from(["share", "purchase", "view", None]))
    if kind == "share":
        event.share.CopyFrom(pb.ShareEvent(sharer_id=draw(_ID), recipient_id=draw(_ID), product_id=draw(_ID)))
    elif kind == "purchase":
        event.purchase.CopyFrom(pb.PurchaseEvent(user_id=draw(_ID), product_id=draw(_ID), share_id=draw(_ID)))
    elif kind == "view":
        event.view.CopyFrom(pb.ViewEvent(user_id=draw(_ID), product_id=draw(_ID)))
    if draw(st.integers(0, 9)) == 0:
        event = _unknown_field(event, draw(st.integers(6, 15)))
    return event


@given(events=st.lists(_events(), max_size=4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_events_get_ok_or_invalid_argument(server: Server, tmp_path: Path, events) -> None:
    try:
        response = record(server, *events)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert error_info(err).reason
        return
    assert response.accepted_count + response.duplicate_count == len(events)
    if (tmp_path / "events" / "purchases.csv").exists():
        load_dataset(tmp_path / "events")  # whatever got in, the log still loads


# --- faults


def test_redis_down_still_acknowledges_and_logs(start_server: StartServer, dead_redis_url: str,
                                                tmp_path: Path) -> None:
    server = start_server(open_online_store(dead_redis_url), metrics_port=0)
    buyer, friends = user_with_friends(server)
    # A second server with metrics on, on its own log: counts the store errors.
    metered = create_server(server.holder.settings.model_copy(update={"event_log_dir": tmp_path / "metered"}),
                            open_online_store(dead_redis_url), address="127.0.0.1:0",
                            metrics_address="127.0.0.1:0")
    try:
        for target in (server, metered):
            response = record(target, share("s1", buyer, friends[0], "p1"), purchase("b1", buyer, "p1", NOW + 1, "s1"))
            assert (response.accepted_count, response.duplicate_count) == (2, 0)
        data = load_dataset(tmp_path / "events")
        assert data.summary()["purchases"] == 1 and data.summary()["shares"] == 1
        sample = metered.metrics.registry.get_sample_value
        for operation in ("record_purchases", "record_friend_purchases", "record_shares"):
            assert sample("sharerank_online_store_errors_total", {"operation": operation}) == 1
    finally:
        metered.stop(grace=None)


def test_nothing_is_acknowledged_before_it_is_fsynced(server: Server, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    synced: list[str] = []

    def failing_fsync(fd: int) -> None:  # a fake only to inject the fault: the disk refuses to sync
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(grpc.RpcError) as err:
        record(server, purchase("b1", "alice", "p1"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(err.value).reason == "EVENT_LOG_UNAVAILABLE"
    assert any(path.endswith("purchases.csv") for path in synced)

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    server.stop(grace=None)  # the failed rollback left the log refusing appends: a restart reopens it
    again = create_server(server.holder.settings.model_copy(
        update={"event_log_dir": tmp_path / "events", "metrics_port": 0}), InMemoryOnlineStore(),
        address="127.0.0.1:0")
    try:
        synced.clear()
        response = record(again, purchase("b1", "alice", "p1"))
        # Not a duplicate: the failed call acknowledged nothing; this one returned after its fsync.
        assert response.accepted_count == 1
        assert synced and synced[0].endswith("purchases.csv")
    finally:
        again.stop(grace=None)


def test_one_server_per_event_log(start_server: StartServer, store: OnlineStore, tmp_path: Path) -> None:
    first = start_server(store)
    with pytest.raises(EventLogError, match="already open for writing"):
        start_server(store)
    first.stop(grace=None)
    with EventLog(tmp_path / "events"):  # stop released it
        pass
