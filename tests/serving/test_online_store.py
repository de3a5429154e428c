"""One contract suite for every OnlineStore backend, plus Redis layout and fault tests.

The contract tests take ``make_store``, parametrized over the backends; Redis runs against a real private
server (see ``tests/conftest.py``), each store under its own key prefix.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from sharerank.serving.online_store import (
    DEFAULT_FATIGUE_WINDOW_S,
    FRIEND_BUYERS_KEPT,
    FriendsBought,
    InMemoryOnlineStore,
    LiveState,
    OnlineStore,
    OnlineStoreError,
    Purchase,
    ReceivedShare,
    RedisOnlineStore,
    RedisSettings,
    Share,
    ShareFatigue,
    open_online_store,
)
from sharerank.serving.online_store.base import SHARE_EVENTS_KEPT
from sharerank.serving.online_store.breaker import CircuitBreaker, GuardedOnlineStore

StoreFactory = Callable[..., OnlineStore]


def _unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["memory", "redis", "guarded-redis", "redis-cluster"])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """Factory of fresh, empty stores of one backend; each call is a separate namespace. ``guarded-redis`` is
    Redis behind the circuit breaker the server puts in front of its store: the same contract.
    ``redis-cluster`` is Redis on a real local Redis Cluster (3 primaries, 3 replicas).

    ``max_items_per_key`` sets the per-collection cap and ``fatigue_window_s`` the fatigue window (default: each
    backend's default); ``clock`` is the store's clock (default: ``time.time``).
    """
    stores: list[OnlineStore] = []

    def make(max_items_per_key: int | None = None, fatigue_window_s: float | None = None,
             clock: Callable[[], float] = time.time) -> OnlineStore:
        cap: dict[str, Any] = {} if max_items_per_key is None else {"max_items_per_key": max_items_per_key}
        if fatigue_window_s is not None:
            cap["fatigue_window_s"] = fatigue_window_s
        if request.param == "memory":
            store: OnlineStore = InMemoryOnlineStore(**cap, clock=clock)
        elif request.param == "guarded-redis":
            inner = RedisOnlineStore(request.getfixturevalue("redis_url"),
                                     RedisSettings(key_prefix=_unique_prefix(), **cap), clock=clock)
            store = GuardedOnlineStore(inner, CircuitBreaker(inner.ping))
        else:
            url = request.getfixturevalue("redis_cluster_url" if request.param == "redis-cluster" else "redis_url")
            store = RedisOnlineStore(url, RedisSettings(key_prefix=_unique_prefix(), **cap), clock=clock)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.clear()
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> OnlineStore:
    return make_store()


# --- contract: every backend


def test_record_then_read(store: OnlineStore) -> None:
    store.record_purchases(
        [Purchase("alice", "p1", 100.0), Purchase("alice", "p2", 200.5), Purchase("bob", "p1", 300.0)]
    )
    assert store.get_purchases("alice") == {"p1": 100.0, "p2": 200.5}
    assert store.get_purchases("bob") == {"p1": 300.0}


def test_unknown_user_reads_empty(store: OnlineStore) -> None:
    assert store.get_purchases("nobody") == {}
    assert store.get_purchases_many([]) == []


def test_empty_batch_is_a_noop(store: OnlineStore) -> None:
    store.record_purchases([])
    assert store.get_purchases("alice") == {}


def test_older_replay_never_overwrites_newer(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", "p1", 200.0)])
    store.record_purchases([Purchase("alice", "p1", 100.0)])
    assert store.get_purchases("alice") == {"p1": 200.0}


def test_newer_event_wins(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", "p1", 100.0)])
    store.record_purchases([Purchase("alice", "p1", 150.0)])
    assert store.get_purchases("alice") == {"p1": 150.0}


def test_newest_wins_within_one_batch(store: OnlineStore) -> None:
    store.record_purchases(
        [Purchase("alice", "p1", 300.0), Purchase("alice", "p1", 100.0), Purchase("alice", "p1", 200.0)]
    )
    assert store.get_purchases("alice") == {"p1": 300.0}


def test_get_purchases_many_keeps_order_and_marks_missing(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", "p1", 1.0), Purchase("carol", "p3", 3.0)])
    got = store.get_purchases_many(["carol", "nobody", "alice", "carol"])
    assert got == [{"p3": 3.0}, {}, {"p1": 1.0}, {"p3": 3.0}]


def test_results_are_the_callers_copies(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", "p1", 1.0)])
    first, second = store.get_purchases_many(["alice", "alice"])
    first["p9"] = 9.0
    assert second == {"p1": 1.0}
    assert store.get_purchases("alice") == {"p1": 1.0}


def test_clear_drops_only_its_own_namespace(make_store: StoreFactory) -> None:
    mine, other = make_store(), make_store()
    mine.record_purchases([Purchase("alice", "p1", 1.0)])
    other.record_purchases([Purchase("alice", "p2", 2.0)])
    mine.clear()
    assert mine.get_purchases("alice") == {}
    assert other.get_purchases("alice") == {"p2": 2.0}
    mine.record_purchases([Purchase("alice", "p3", 3.0)])
    assert mine.get_purchases("alice") == {"p3": 3.0}


def test_ping_answers(store: OnlineStore) -> None:
    assert store.ping() is True


def test_markers_live_as_long_as_the_state(make_store: StoreFactory) -> None:
    store, other = make_store(), make_store()
    assert store.get_marker("events-a") is None
    store.set_marker("events-a", "applied")
    store.set_marker("events-b", "x")
    store.set_marker("events-b", "y")
    assert store.get_marker("events-a") == "applied" and store.get_marker("events-b") == "y"
    assert other.get_marker("events-a") is None  # namespaced like everything else
    store.clear()
    assert store.get_marker("events-a") is None and store.get_marker("events-b") is None


def test_close_is_idempotent(store: OnlineStore) -> None:
    store.close()
    store.close()


@given(data=st.data())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_order_and_batching_converge_to_newest(store: OnlineStore, data: st.DataObject) -> None:
    events = data.draw(
        st.lists(
            st.builds(
                Purchase,
                st.sampled_from(["u0", "u1", "u2"]),
                st.sampled_from(["p0", "p1", "p2", "p3"]),
                st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False),
            ),
            max_size=40,
        )
    )
    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=5)))
    store.clear()  # the fixture's store is shared by every example hypothesis runs
    for start, end in zip([0, *cuts], [*cuts, len(shuffled)], strict=True):
        store.record_purchases(shuffled[start:end])

    expected: dict[str, dict[str, float]] = {"u0": {}, "u1": {}, "u2": {}}
    for p in events:
        expected[p.user_id][p.product_id] = max(p.ts, expected[p.user_id].get(p.product_id, p.ts))
    assert store.get_purchases_many(["u0", "u1", "u2"]) == [expected["u0"], expected["u1"], expected["u2"]]


# --- contract: live state (shares received, friends bought) and the cap


def test_live_state_of_an_unknown_user_is_empty(store: OnlineStore) -> None:
    assert store.get_live_state("nobody") == LiveState({}, [], [])


def test_live_state_reads_all_three_collections_newest_first(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", "p1", 100.0), Purchase("alice", "p2", 300.0)])
    store.record_shares([Share("bob", "alice", "p3", 50.0), Share("carol", "alice", "p4", 70.5)])
    store.record_friend_purchases([("alice", Purchase("bob", "p5", 10.0)), ("alice", Purchase("carol", "p6", 20.0))])
    state = store.get_live_state("alice")
    assert state.purchases == {"p2": 300.0, "p1": 100.0}
    assert list(state.purchases) == ["p2", "p1"]
    assert state.shares_received == [ReceivedShare("p4", "carol", 70.5), ReceivedShare("p3", "bob", 50.0)]
    assert state.friends_bought == [FriendsBought("p6", 1, "carol", 20.0), FriendsBought("p5", 1, "bob", 10.0)]
    # Other users see nothing of it: shares land at the recipient, fan-out at the follower.
    assert store.get_live_state("bob") == LiveState({}, [], [])


def test_live_state_ties_order_by_product_descending(store: OnlineStore) -> None:
    store.record_shares([Share("bob", "alice", p, 5.0) for p in ("pa", "pc", "pb")])
    assert [s.product_id for s in store.get_live_state("alice").shares_received] == ["pc", "pb", "pa"]


def test_live_state_limit_keeps_the_newest(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", f"p{i}", float(i)) for i in range(10)])
    store.record_shares([Share("bob", "alice", f"s{i}", float(i)) for i in range(10)])
    store.record_friend_purchases([("alice", Purchase("bob", f"f{i}", float(i))) for i in range(10)])
    state = store.get_live_state("alice", limit=3)
    assert list(state.purchases) == ["p9", "p8", "p7"]
    assert [s.product_id for s in state.shares_received] == ["s9", "s8", "s7"]
    assert [f.product_id for f in state.friends_bought] == ["f9", "f8", "f7"]
    assert store.get_live_state("alice", limit=0) == LiveState({}, [], [])
    with pytest.raises(ValueError):
        store.get_live_state("alice", limit=-1)


def test_shares_keep_the_newest_share_and_its_sharer(store: OnlineStore) -> None:
    store.record_shares([Share("bob", "alice", "p1", 100.0)])
    store.record_shares([Share("carol", "alice", "p1", 200.0)])
    store.record_shares([Share("dave", "alice", "p1", 150.0)])  # an older replay: changes nothing
    assert store.get_live_state("alice").shares_received == [ReceivedShare("p1", "carol", 200.0)]


def test_shares_at_the_same_time_keep_the_larger_sharer_in_any_order(make_store: StoreFactory) -> None:
    forward, backward = make_store(), make_store()
    shares = [Share("bob", "alice", "p1", 5.0), Share("carol", "alice", "p1", 5.0)]
    forward.record_shares(shares)
    for share in reversed(shares):
        backward.record_shares([share])
    expected = [ReceivedShare("p1", "carol", 5.0)]
    assert forward.get_live_state("alice").shares_received == expected
    assert backward.get_live_state("alice").shares_received == expected


def test_shares_and_purchases_are_separate(store: OnlineStore) -> None:
    store.record_shares([Share("bob", "alice", "p1", 1.0)])
    assert store.get_purchases("alice") == {}
    assert store.get_live_state("alice").purchases == {}


def test_empty_social_batches_are_noops(store: OnlineStore) -> None:
    store.record_shares([])
    store.record_friend_purchases([])
    assert store.get_live_state("alice") == LiveState({}, [], [])


def test_friends_bought_counts_distinct_friends_and_keeps_the_last_buyer(store: OnlineStore) -> None:
    store.record_friend_purchases([
        ("alice", Purchase("bob", "p1", 100.0)),
        ("alice", Purchase("carol", "p1", 300.0)),
        ("alice", Purchase("bob", "p1", 200.0)),  # bob again, newer: still one friend
    ])
    assert store.get_live_state("alice").friends_bought == [FriendsBought("p1", 2, "carol", 300.0)]
    # An older replay of each changes nothing.
    store.record_friend_purchases([("alice", Purchase("bob", "p1", 50.0)), ("alice", Purchase("carol", "p1", 1.0))])
    assert store.get_live_state("alice").friends_bought == [FriendsBought("p1", 2, "carol", 300.0)]
    store.record_friend_purchases([("alice", Purchase("bob", "p1", 400.0))])
    assert store.get_live_state("alice").friends_bought == [FriendsBought("p1", 2, "bob", 400.0)]


def test_friends_bought_count_saturates_at_the_newest_buyers(store: OnlineStore) -> None:
    n = FRIEND_BUYERS_KEPT + 5
    store.record_friend_purchases([("alice", Purchase(f"f{i:02d}", "p1", float(i))) for i in range(n)])
    assert store.get_live_state("alice").friends_bought == [FriendsBought("p1", FRIEND_BUYERS_KEPT, f"f{n - 1:02d}",
                                                                          float(n - 1))]
    # A friend older than every buyer kept does not displace one; a newer one does and becomes the last buyer.
    store.record_friend_purchases([("alice", Purchase("old", "p1", -1.0)), ("alice", Purchase("new", "p1", 99.0))])
    assert store.get_live_state("alice").friends_bought == [FriendsBought("p1", FRIEND_BUYERS_KEPT, "new", 99.0)]


def test_fan_out_writes_to_each_follower(store: OnlineStore) -> None:
    bought = Purchase("bob", "p1", 10.0)
    store.record_friend_purchases([("alice", bought), ("carol", bought)])
    for follower in ("alice", "carol"):
        assert store.get_live_state(follower).friends_bought == [FriendsBought("p1", 1, "bob", 10.0)]
    assert store.get_live_state("bob").friends_bought == []
    assert store.get_purchases("bob") == {}  # fan-out is not the buyer's own purchase


def test_every_collection_keeps_the_newest_items_up_to_the_cap(make_store: StoreFactory) -> None:
    store = make_store(max_items_per_key=3)
    store.record_purchases([Purchase("alice", f"p{i}", float(i)) for i in range(6)])
    store.record_shares([Share("bob", "alice", f"s{i}", float(i)) for i in range(6)])
    store.record_friend_purchases([("alice", Purchase("bob", f"f{i}", float(i))) for i in range(6)])
    # An event older than everything kept comes back and is dropped again; a newer one displaces the oldest.
    store.record_purchases([Purchase("alice", "p0", 0.5), Purchase("alice", "p9", 9.0)])
    store.record_shares([Share("bob", "alice", "s0", 0.5), Share("bob", "alice", "s9", 9.0)])
    store.record_friend_purchases([("alice", Purchase("carol", "f0", 0.5)), ("alice", Purchase("bob", "f9", 9.0))])
    assert store.get_purchases("alice") == {"p9": 9.0, "p5": 5.0, "p4": 4.0}
    state = store.get_live_state("alice", limit=100)
    assert list(state.purchases) == ["p9", "p5", "p4"]
    assert [s.product_id for s in state.shares_received] == ["s9", "s5", "s4"]
    assert [f.product_id for f in state.friends_bought] == ["f9", "f5", "f4"]


def test_clear_drops_live_state(store: OnlineStore) -> None:
    store.record_shares([Share("bob", "alice", "p1", 1.0)])
    store.record_friend_purchases([("alice", Purchase("bob", "p2", 2.0))])
    store.clear()
    assert store.get_live_state("alice") == LiveState({}, [], [])


def test_fan_out_rejects_an_empty_follower_before_writing(store: OnlineStore) -> None:
    with pytest.raises(ValueError):
        store.record_friend_purchases([("alice", Purchase("bob", "p1", 1.0)), ("", Purchase("bob", "p1", 1.0))])
    assert store.get_live_state("alice").friends_bought == []


_USERS = st.sampled_from(["u0", "u1", "u2"])
_PRODUCTS = st.sampled_from(["p0", "p1", "p2", "p3"])
_TIMES = st.sampled_from([0.0, 1.0, 1.5, 2.0, 1e9 + 0.25])  # few values: ties are the interesting case


@given(data=st.data())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_social_writes_converge_in_any_order_and_batching(store: OnlineStore, data: st.DataObject) -> None:
    shares = data.draw(st.lists(_shares(), max_size=30))
    buys = data.draw(st.lists(st.tuples(_USERS, st.builds(
        Purchase, st.sampled_from([f"b{i}" for i in range(FRIEND_BUYERS_KEPT + 3)]), _PRODUCTS, _TIMES)),
        max_size=60))
    store.clear()  # the fixture's store is shared by every example hypothesis runs
    for batch in _batches(data, data.draw(st.permutations(shares))):
        store.record_shares(batch)
    for batch in _batches(data, data.draw(st.permutations(buys))):
        store.record_friend_purchases(batch)

    for user in ("u0", "u1", "u2"):
        newest_share: dict[str, tuple[float, str]] = {}
        for s in shares:
            if s.recipient_id == user:
                newest_share[s.product_id] = max(newest_share.get(s.product_id, (s.ts, s.sharer_id)),
                                                 (s.ts, s.sharer_id))
        by_buyer: dict[str, dict[str, float]] = {}
        for follower, p in buys:
            if follower == user:
                per = by_buyer.setdefault(p.product_id, {})
                per[p.user_id] = max(per.get(p.user_id, p.ts), p.ts)
        expected_friends = []
        for product_id, per in by_buyer.items():
            kept = sorted(((ts, buyer) for buyer, ts in per.items()), reverse=True)[:FRIEND_BUYERS_KEPT]
            expected_friends.append(FriendsBought(product_id, len(kept), kept[0][1], kept[0][0]))
        state = store.get_live_state(user)
        assert state.shares_received == sorted(
            (ReceivedShare(p, sharer, ts) for p, (ts, sharer) in newest_share.items()),
            key=lambda r: (r.ts, r.product_id), reverse=True)
        assert state.friends_bought == sorted(expected_friends, key=lambda f: (f.ts, f.product_id), reverse=True)


def _shares() -> st.SearchStrategy[Share]:
    return st.tuples(_USERS, _USERS, _PRODUCTS, _TIMES).filter(lambda t: t[0] != t[1]).map(lambda t: Share(*t))


def _batches(data: st.DataObject, items: list) -> Iterator[list]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=4)))
    for start, end in zip([0, *cuts], [*cuts, len(items)], strict=True):
        yield items[start:end]


# --- contract: share fatigue (shares received in the window, distinct event ids)


class Clock:
    """A store clock the test moves: unix seconds, starting now (Redis TTLs are computed from it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_fatigue_counts_shares_received_in_the_window_in_all_and_per_sharer(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(fatigue_window_s=100.0, clock=clock)
    t = clock.now
    store.record_shares([Share("bob", "alice", "p1", t - 10, "e1"), Share("bob", "alice", "p2", t - 20, "e2"),
                         Share("carol", "alice", "p1", t - 30, "e3"), Share("dave", "alice", "p3", t - 200, "e4"),
                         Share("alice", "bob", "p1", t - 5, "e5")])
    assert store.get_live_state("alice").fatigue == ShareFatigue(3, {"bob": 2, "carol": 1})
    assert store.get_live_state("bob").fatigue == ShareFatigue(1, {"alice": 1})
    # The newest share per product is kept as before, whatever the window says.
    assert [s.product_id for s in store.get_live_state("alice").shares_received] == ["p1", "p2", "p3"]
    assert store.get_live_state("nobody").fatigue == ShareFatigue()
    assert store.get_live_state("alice", limit=0) == LiveState({}, [], [])


def test_fatigue_counters_expire_as_the_window_passes(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(fatigue_window_s=100.0, clock=clock)
    t = clock.now
    store.record_shares([Share("bob", "alice", "p1", t - 10, "e1"), Share("carol", "alice", "p2", t - 50, "e2")])
    clock.now = t + 50  # the window starts at t - 50, exclusive: e2 has left it
    assert store.get_live_state("alice").fatigue == ShareFatigue(1, {"bob": 1})
    clock.now = t + 90
    assert store.get_live_state("alice").fatigue == ShareFatigue()
    # A write after the window passed drops what left it and counts only the new share.
    store.record_shares([Share("carol", "alice", "p3", t + 89, "e3")])
    assert store.get_live_state("alice").fatigue == ShareFatigue(1, {"carol": 1})


def test_fatigue_counters_expire_on_the_real_clock(make_store: StoreFactory) -> None:
    store = make_store(fatigue_window_s=1.0)
    store.record_shares([Share("bob", "alice", "p1", time.time(), "e1")])
    assert store.get_live_state("alice").fatigue.received == 1
    deadline = time.monotonic() + 10
    while store.get_live_state("alice").fatigue != ShareFatigue():
        assert time.monotonic() < deadline, "the fatigue count did not expire within 10 s of a 1 s window"
        time.sleep(0.05)


def test_replayed_shares_do_not_double_count(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    t = clock.now
    shares = [Share("bob", "alice", f"p{i}", t - i, f"e{i}") for i in range(5)]
    store.record_shares(shares)
    store.record_shares(shares)  # the healer re-applying the log
    store.record_shares(list(reversed(shares[:3])))
    assert store.get_live_state("alice").fatigue == ShareFatigue(5, {"bob": 5})
    # Without an event id a share is identified by its content: the same content counts once, other times twice.
    store.record_shares([Share("carol", "alice", "p1", t - 1), Share("carol", "alice", "p1", t - 1)])
    store.record_shares([Share("carol", "alice", "p1", t - 2)])
    assert store.get_live_state("alice").fatigue == ShareFatigue(7, {"bob": 5, "carol": 2})


def test_fatigue_keeps_the_newest_share_events_up_to_the_cap(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock=clock)
    t = clock.now
    extra = 5
    store.record_shares([Share("bob" if i < extra else "carol", "alice", f"p{i % 7}", t - 1000 + i, f"e{i}")
                         for i in range(SHARE_EVENTS_KEPT + extra)])
    # The oldest `extra` events (bob's) were dropped; a replay of one of them is dropped again.
    store.record_shares([Share("bob", "alice", "p0", t - 1000, "e0")])
    assert store.get_live_state("alice").fatigue == ShareFatigue(SHARE_EVENTS_KEPT, {"carol": SHARE_EVENTS_KEPT})


@given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fatigue_converges_in_any_order_batching_and_replay(store: OnlineStore, data: st.DataObject) -> None:
    now = time.time()
    events = data.draw(st.lists(st.tuples(_USERS, _USERS, st.sampled_from([1.0, 50.0, DEFAULT_FATIGUE_WINDOW_S * 2])),
                                max_size=25).map(lambda rows: [r for r in rows if r[0] != r[1]]))
    shares = [Share(sharer, recipient, "p1", now - age, f"e{i}") for i, (sharer, recipient, age) in enumerate(events)]
    replayed = shares + data.draw(st.lists(st.sampled_from(shares), max_size=10)) if shares else []
    store.clear()  # the fixture's store is shared by every example hypothesis runs
    for batch in _batches(data, data.draw(st.permutations(replayed))):
        store.record_shares(batch)
    for user in ("u0", "u1", "u2"):
        by_sharer: dict[str, int] = {}
        for s in shares:
            if s.recipient_id == user and s.ts > now - DEFAULT_FATIGUE_WINDOW_S:
                by_sharer[s.sharer_id] = by_sharer.get(s.sharer_id, 0) + 1
        assert store.get_live_state(user).fatigue == ShareFatigue(sum(by_sharer.values()), by_sharer)


# --- values every backend rejects the same way


@pytest.mark.parametrize(
    ("user_id", "product_id", "ts"),
    [
        ("", "p1", 1.0),
        ("alice", "", 1.0),
        ("alice", "p1", float("nan")),
        ("alice", "p1", float("inf")),
    ],
)
def test_purchase_rejects_invalid_values(user_id: str, product_id: str, ts: float) -> None:
    with pytest.raises(ValueError):
        Purchase(user_id, product_id, ts)


@pytest.mark.parametrize(
    ("sharer_id", "recipient_id", "product_id", "ts"),
    [
        ("", "bob", "p1", 1.0),
        ("alice", "", "p1", 1.0),
        ("alice", "bob", "", 1.0),
        ("alice", "alice", "p1", 1.0),
        ("alice", "bob", "p1", float("nan")),
        ("alice", "bob", "p1", float("-inf")),
    ],
)
def test_share_rejects_invalid_values(sharer_id: str, recipient_id: str, product_id: str, ts: float) -> None:
    with pytest.raises(ValueError):
        Share(sharer_id, recipient_id, product_id, ts)


def test_memory_store_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError):
        InMemoryOnlineStore(max_items_per_key=0)


@pytest.mark.parametrize("window", [0.0, -1.0, float("nan"), float("inf")])
def test_memory_store_rejects_a_fatigue_window_that_is_not_positive(window: float) -> None:
    with pytest.raises(ValueError):
        InMemoryOnlineStore(fatigue_window_s=window)


# --- Redis: the written key layout (KEYS.md)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def test_redis_layout_matches_keys_md(redis_url: str, raw_redis: redis.Redis) -> None:
    prefix = _unique_prefix()
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=prefix, purchase_ttl_s=3600)) as store:
        store.record_purchases([Purchase("u42", "p7", 1718003600.5), Purchase("u42", "p9", 1718000000.0)])
        store.record_purchases([Purchase("u8", "p7", 1718000000.0)])
        key = f"{prefix}purchases:{{u42}}"
        buyers = f"{prefix}buyers:{{p7}}"
        assert sorted(raw_redis.keys(f"{prefix}*")) == sorted([key, f"{prefix}purchases:{{u8}}", buyers,
                                                               f"{prefix}buyers:{{p9}}"])
        assert raw_redis.type(key) == "zset" and raw_redis.type(buyers) == "zset"
        assert raw_redis.zrange(key, 0, -1, withscores=True) == [("p9", 1718000000.0), ("p7", 1718003600.5)]
        assert raw_redis.zrange(buyers, 0, -1, withscores=True) == [("u8", 1718000000.0), ("u42", 1718003600.5)]
        assert 0 < raw_redis.ttl(key) <= 3600 and 0 < raw_redis.ttl(buyers) <= 3600
        store.clear()


def test_redis_social_layout_matches_keys_md(redis_url: str, raw_redis: redis.Redis) -> None:
    prefix = _unique_prefix()
    settings_ = RedisSettings(key_prefix=prefix, social_ttl_s=600)
    with RedisOnlineStore(redis_url, settings_) as store:
        store.record_shares([Share("u1", "u42", "p7", 1718000000.0), Share("u2", "u42", "p7", 1718000500.0)])
        store.record_friend_purchases([("u42", Purchase("u1", "p9", 1718000000.0)),
                                       ("u42", Purchase("u3", "p9", 1718003600.5))])
        keys = {f"{prefix}{name}:{{u42}}" for name in
                ("shared_to", "shared_to_by", "friends_bought", "friends_bought_by")}
        assert set(raw_redis.keys(f"{prefix}*")) == keys
        assert raw_redis.zrange(f"{prefix}shared_to:{{u42}}", 0, -1, withscores=True) == [("p7", 1718000500.0)]
        assert raw_redis.hgetall(f"{prefix}shared_to_by:{{u42}}") == {"p7": "u2"}
        assert raw_redis.zrange(f"{prefix}friends_bought:{{u42}}", 0, -1, withscores=True) == [("p9", 1718003600.5)]
        raw = raw_redis.hget(f"{prefix}friends_bought_by:{{u42}}", "p9")
        assert json.loads(raw) == [["u3", "1718003600.5"], ["u1", "1718000000.0"]]
        for key in keys:
            assert raw_redis.type(key) in {"zset", "hash"}
            assert 0 < raw_redis.ttl(key) <= 600
        store.clear()


def test_redis_fatigue_layout_matches_keys_md(redis_url: str, raw_redis: redis.Redis) -> None:
    prefix = _unique_prefix()
    now = time.time()
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=prefix, fatigue_window_s=600), clock=lambda: now
                          ) as store:
        store.record_shares([Share("u1", "u42", "p7", now - 100, "e1"), Share("u2", "u42", "p7", now - 10, "e2"),
                             Share("u2", "u42", "p8", now - 700, "e3")])  # e3: before the window, never counted
        events, by = f"{prefix}share_events:{{u42}}", f"{prefix}share_events_by:{{u42}}"
        assert raw_redis.zrange(events, 0, -1, withscores=True) == [("e1", now - 100), ("e2", now - 10)]
        assert raw_redis.hgetall(by) == {"e1": "u1", "e2": "u2"}
        # Both expire when the newest event (e2, 10 s old) leaves the 600 s window.
        for key in (events, by):
            assert 580 <= raw_redis.ttl(key) <= 590
        # A writer following KEYS.md: another share event, read back by the store.
        raw_redis.zadd(events, {"e9": now - 1})
        raw_redis.hset(by, "e9", "u3")
        assert store.get_live_state("u42").fatigue == ShareFatigue(3, {"u1": 1, "u2": 1, "u3": 1})
        store.clear()


def test_redis_share_events_go_when_the_last_leaves_the_window(redis_url: str, raw_redis: redis.Redis) -> None:
    prefix = _unique_prefix()
    clock = Clock()
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=prefix, fatigue_window_s=60), clock=clock) as store:
        store.record_shares([Share("u1", "u42", "p7", clock.now - 30, "e1")])
        clock.now += 31
        store.record_shares([Share("u1", "u42", "p8", clock.now - 100, "e2")])  # a replay from before the window
        assert raw_redis.exists(f"{prefix}share_events:{{u42}}", f"{prefix}share_events_by:{{u42}}") == 0
        store.clear()


def test_redis_trim_drops_hash_fields_with_their_members(redis_url: str, raw_redis: redis.Redis) -> None:
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=_unique_prefix(), max_items_per_key=2)) as store:
        store.record_shares([Share("bob", "alice", f"p{i}", float(i)) for i in range(5)])
        store.record_friend_purchases([("alice", Purchase("bob", f"p{i}", float(i))) for i in range(5)])
        assert set(raw_redis.hkeys(store.shared_to_by_key("alice"))) == {"p3", "p4"}
        assert set(raw_redis.hkeys(store.friends_bought_by_key("alice"))) == {"p3", "p4"}
        store.clear()


def test_redis_reloads_scripts_it_lost(redis_url: str, raw_redis: redis.Redis) -> None:
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=_unique_prefix())) as store:
        store.record_shares([Share("bob", "alice", "p1", 1.0)])
        raw_redis.script_flush()  # what a Redis restart or failover does to the script cache
        assert store.get_live_state("alice").shares_received == [ReceivedShare("p1", "bob", 1.0)]
        raw_redis.script_flush()
        store.record_friend_purchases([("alice", Purchase("bob", "p2", 2.0))])
        assert store.get_live_state("alice").friends_bought == [FriendsBought("p2", 1, "bob", 2.0)]
        store.clear()


def test_redis_refused_commands_raise_store_errors(redis_url: str, raw_redis: redis.Redis) -> None:
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=_unique_prefix())) as store:
        # Keys of the wrong type (a foreign writer broke the layout): Redis answers WRONGTYPE inside the scripts.
        for key in (store.shared_to_key("alice"), store.friends_bought_key("alice")):
            raw_redis.set(key, "not a sorted set")
        with pytest.raises(OnlineStoreError, match="record_shares"):
            store.record_shares([Share("bob", "alice", "p1", 1.0)])
        with pytest.raises(OnlineStoreError, match="record_friend_purchases"):
            store.record_friend_purchases([("alice", Purchase("bob", "p1", 1.0))])
        with pytest.raises(OnlineStoreError, match="get_live_state"):
            store.get_live_state("alice")
        store.clear()


def test_redis_without_ttl_keeps_keys(redis_url: str, raw_redis: redis.Redis) -> None:
    settings_ = RedisSettings(key_prefix=_unique_prefix(), purchase_ttl_s=None)
    with RedisOnlineStore(redis_url, settings_) as store:
        store.record_purchases([Purchase("u1", "p1", 1.0)])
        assert raw_redis.ttl(store.purchases_key("u1")) == -1
        store.clear()


def test_redis_reads_what_a_keys_md_writer_wrote(redis_url: str, raw_redis: redis.Redis) -> None:
    with RedisOnlineStore(redis_url, RedisSettings(key_prefix=_unique_prefix())) as store:
        raw_redis.zadd(store.purchases_key("u1"), {"p1": 50.0}, gt=True)
        store.record_purchases([Purchase("u1", "p1", 10.0), Purchase("u1", "p2", 20.0)])
        assert store.get_purchases("u1") == {"p1": 50.0, "p2": 20.0}
        store.clear()


def test_redis_clear_treats_glob_characters_in_the_prefix_literally(redis_url: str) -> None:
    base = _unique_prefix()
    with (
        RedisOnlineStore(redis_url, RedisSettings(key_prefix=f"{base}[a]*:")) as globby,
        RedisOnlineStore(redis_url, RedisSettings(key_prefix=f"{base}a:")) as plain,
    ):
        globby.record_purchases([Purchase("u1", "p1", 1.0)])
        plain.record_purchases([Purchase("u1", "p2", 2.0)])
        globby.clear()
        assert globby.get_purchases("u1") == {}
        assert plain.get_purchases("u1") == {"p2": 2.0}
        plain.clear()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_prefix": ""},
        {"key_prefix": "sr:{x}:"},
        {"socket_timeout_s": 0},
        {"purchase_ttl_s": 0},
        {"social_ttl_s": -1},
        {"max_items_per_key": 0},
        {"fatigue_window_s": 0},
        {"fatigue_window_s": float("nan")},
        {"max_connections": 0},
        {"retries": -1},
        {"connect_timeout_s": float("inf")},
        {"max_connections": "many"},
    ],
)
def test_redis_settings_reject_bad_values(kwargs: dict[str, object]) -> None:
    (field,) = kwargs
    with pytest.raises(ValueError, match=field):
        RedisSettings(**kwargs)  # type: ignore[arg-type]


def test_redis_settings_come_from_the_environment_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARERANK_REDIS_KEY_PREFIX", "staging:")
    monkeypatch.setenv("SHARERANK_REDIS_PURCHASE_TTL_S", "none")
    monkeypatch.setenv("SHARERANK_REDIS_MAX_CONNECTIONS", "8")
    monkeypatch.setenv("SHARERANK_REDIS_FATIGUE_WINDOW_S", "1")  # not a name it reads: the window has its own
    monkeypatch.setenv("SHARERANK_FATIGUE_WINDOW_SECONDS", "60")
    found = RedisSettings()
    assert (found.key_prefix, found.purchase_ttl_s, found.max_connections, found.fatigue_window_s) == (
        "staging:", None, 8, 60.0)
    given = RedisSettings(key_prefix="mine:", fatigue_window_s=5)
    assert (given.key_prefix, given.fatigue_window_s, given.max_connections) == ("mine:", 5.0, 8)
    monkeypatch.setenv("SHARERANK_REDIS_SOCKET_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="socket_timeout_s"):
        RedisSettings()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/0?socket_timeout=x"])
def test_redis_rejects_a_malformed_url_up_front(url: str) -> None:
    with pytest.raises(ValueError):
        RedisOnlineStore(url)


def test_redis_repr_hides_the_password() -> None:
    store = RedisOnlineStore("redis://user:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in repr(store)
    assert "user:***@127.0.0.1" in repr(store)


# --- Redis: faults


def test_redis_down_pings_false_and_raises_store_errors_fast(dead_redis_url: str) -> None:
    store = RedisOnlineStore(dead_redis_url, RedisSettings(key_prefix=_unique_prefix()))
    calls: list[Callable[[], object]] = [
        lambda: store.record_purchases([Purchase("u1", "p1", 1.0)]),
        lambda: store.get_purchases("u1"),
        lambda: store.get_purchases_many(["u1", "u2"]),
        lambda: store.record_shares([Share("u2", "u1", "p1", 1.0)]),
        lambda: store.record_friend_purchases([("u1", Purchase("u2", "p1", 1.0))]),
        lambda: store.get_live_state("u1"),
        store.clear,
    ]
    started = time.monotonic()
    assert store.ping() is False
    for call in calls:
        with pytest.raises(OnlineStoreError):
            call()
    # Loose bound: the point is "fails fast instead of hanging", timings belong in bench/.
    assert time.monotonic() - started < 5.0
    store.close()


def test_redis_recovers_after_a_restart(redis_process_factory: Callable[[], Any]) -> None:
    server = redis_process_factory()
    with RedisOnlineStore(server.url, RedisSettings(key_prefix=_unique_prefix())) as store:
        store.record_purchases([Purchase("u1", "p1", 1.0)])
        server.kill()
        assert store.ping() is False
        with pytest.raises(OnlineStoreError):
            store.get_purchases("u1")
        server.start()
        # The pooled connections died with the old server; the store must reconnect on its own.
        assert store.get_purchases("u1") == {}  # nothing persisted: a restart loses live state
        store.record_purchases([Purchase("u1", "p2", 2.0)])
        assert store.get_purchases("u1") == {"p2": 2.0}
        # The new server has no scripts cached either: the store loads them again on its own.
        store.record_shares([Share("u2", "u1", "p3", 3.0)])
        assert store.get_live_state("u1") == LiveState({"p2": 2.0}, [ReceivedShare("p3", "u2", 3.0)], [])


def test_redis_live_state_resends_over_a_connection_the_server_dropped(
        redis_process_factory: Callable[[], Any]) -> None:
    server = redis_process_factory()
    with RedisOnlineStore(server.url, RedisSettings(key_prefix=_unique_prefix(), retries=1)) as store:
        store.record_purchases([Purchase("u1", "p1", 1.0)])
        assert store.get_live_state("u1").purchases == {"p1": 1.0}  # the reading thread's connection is open now
        # What an idle timeout, a proxy or `CLIENT KILL` does: the next read finds its connection closed.
        assert redis.Redis.from_url(server.url).client_kill_filter(_type="normal", skipme=True) >= 1
        assert store.get_live_state("u1").purchases == {"p1": 1.0}
        with RedisOnlineStore(server.url, RedisSettings(key_prefix=store.settings.key_prefix, retries=0)) as once:
            assert once.get_live_state("u1").purchases == {"p1": 1.0}
            redis.Redis.from_url(server.url).client_kill_filter(_type="normal", skipme=True)
            with pytest.raises(OnlineStoreError, match="get_live_state"):  # no retry allowed: the drop shows
                once.get_live_state("u1")


def test_redis_close_closes_its_connections(redis_process_factory: Callable[[], Any]) -> None:
    server = redis_process_factory()
    admin = redis.Redis.from_url(server.url)
    store = RedisOnlineStore(server.url, RedisSettings(key_prefix=_unique_prefix()))
    store.record_purchases([Purchase("u1", "p1", 1.0)])  # over a pooled connection
    store.get_live_state("u1")  # over this thread's own connection, outside the pool
    assert len(admin.client_list(_type="normal")) == 3
    store.close()
    wait_for(lambda: len(admin.client_list(_type="normal")) == 1, "only the admin's connection is left")


# --- the factory


@pytest.mark.parametrize("url", [None, "", "memory://", "MEMORY://"])
def test_factory_opens_memory(url: str | None) -> None:
    assert isinstance(open_online_store(url), InMemoryOnlineStore)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/none.sock",
                                 "redis+cluster://127.0.0.1:1", "REDISS+CLUSTER://127.0.0.1:1"])
def test_factory_returns_redis_even_when_down(url: str) -> None:
    store = open_online_store(url)
    assert isinstance(store, RedisOnlineStore) and store.cluster == ("+cluster" in url.lower())
    assert store.ping() is False
    with pytest.raises(OnlineStoreError):  # a cluster with no reachable node is an outage like any other
        store.get_live_state("u1")


def test_cluster_url_is_redacted_like_any_other() -> None:
    assert "secret" not in repr(RedisOnlineStore("rediss+cluster://u:secret@h:7000"))
    with pytest.raises(ValueError):
        RedisOnlineStore("redis+cluster://h:notaport")


def test_factory_passes_settings(redis_url: str) -> None:
    settings_ = RedisSettings(key_prefix=_unique_prefix())
    store = open_online_store(redis_url, settings=settings_)
    assert isinstance(store, RedisOnlineStore) and store.settings is settings_
    store.close()


def test_factory_keeps_a_live_redis_with_fallback(redis_url: str) -> None:
    store = open_online_store(redis_url, fallback_to_memory=True)
    assert isinstance(store, RedisOnlineStore)
    store.close()


def test_factory_falls_back_to_memory_when_redis_is_down(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sharerank.serving.online_store"):
        store = open_online_store(dead_redis_url, fallback_to_memory=True)
    assert isinstance(store, InMemoryOnlineStore)
    assert any(
        "in-memory" in r.getMessage() and r.name == "sharerank.serving.online_store" for r in caplog.records
    )


@pytest.mark.parametrize("url", ["ftp://example.com/x", "localhost:6379", "postgres://db/x"])
def test_factory_rejects_unknown_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported online store URL"):
        open_online_store(url)


def test_redis_cluster_reloads_scripts_it_lost(redis_cluster_url: str) -> None:
    """A failover or restart leaves the primaries without the scripts; reads and writes load them again."""
    store = RedisOnlineStore(redis_cluster_url, RedisSettings(key_prefix=_unique_prefix()))
    raw = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis", 1), decode_responses=True)
    try:
        store.record_shares([Share("bob", "alice", "p1", 1.0)])
        raw.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
        assert store.get_live_state("alice").shares_received == [ReceivedShare("p1", "bob", 1.0)]
        raw.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
        assert raw.script_exists(store._scripts.record_friend_purchases.sha) == [False]
        store.record_friend_purchases([("alice", Purchase("bob", "p2", 2.0))])
        assert store.get_live_state("alice").friends_bought == [FriendsBought("p2", 1, "bob", 2.0)]
        assert raw.script_exists(store._scripts.record_friend_purchases.sha) == [True]
    finally:
        store.clear()
        store.close()
        raw.close()


def test_redis_cluster_keeps_a_users_keys_in_one_slot(redis_cluster_url: str) -> None:
    """On a cluster the KEYS.md names are unchanged and a user's seven keys hash to one slot (one-round-trip
    hydration); a fan-out write reaches users on every primary."""
    store = RedisOnlineStore(redis_cluster_url, RedisSettings(key_prefix=_unique_prefix()))
    raw = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis", 1), decode_responses=True)
    try:
        now = time.time()
        store.record_purchases([Purchase("u42", "p9", now)])
        store.record_shares([Share("u2", "u42", "p7", now, "e1")])
        store.record_friend_purchases([("u42", Purchase("u3", "p9", now))])
        keys = [store.purchases_key("u42"), store.shared_to_key("u42"), store.shared_to_by_key("u42"),
                store.friends_bought_key("u42"), store.friends_bought_by_key("u42"),
                store.share_events_key("u42"), store.share_events_by_key("u42")]
        assert keys[0] == f"{store.settings.key_prefix}purchases:{{u42}}"
        assert len({raw.keyslot(key) for key in keys}) == 1
        assert all(raw.exists(key) for key in keys)
        followers = [f"f{i}" for i in range(60)]
        store.record_friend_purchases([(f, Purchase("u3", "p1", now)) for f in followers])
        owners = {raw.get_node_from_key(store.friends_bought_key(f)).name for f in followers}
        assert len(owners) == 3  # spread over every primary, written by one call
        assert all(store.get_live_state(f).friends_bought for f in followers)
    finally:
        store.clear()
        store.close()
        raw.close()


# --- contract: buyers per product (seeding leaves them out)


def test_buyers_of_a_product_keep_each_buyers_newest_purchase(store: OnlineStore) -> None:
    store.record_purchases([Purchase("alice", "p1", 100.0), Purchase("bob", "p1", 50.0), Purchase("alice", "p2", 7.0)])
    store.record_purchases([Purchase("alice", "p1", 80.0), Purchase("bob", "p1", 60.0)])  # alice's is older
    assert store.get_buyers("p1") == {"alice": 100.0, "bob": 60.0}
    assert store.get_buyers("p2") == {"alice": 7.0}
    assert store.get_buyers("nobody-bought-this") == {}
    store.clear()
    assert store.get_buyers("p1") == {}
