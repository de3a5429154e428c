"""One contract suite for every OnlineStore backend, plus Redis layout and fault tests.

The contract tests take ``make_store``, parametrized over the backends; Redis runs against a real private
server (see ``tests/conftest.py``), each store under its own key prefix.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sharerank.serving.online_store import (
    InMemoryOnlineStore,
    OnlineStore,
    OnlineStoreError,
    Purchase,
    RedisOnlineStore,
    RedisSettings,
    open_online_store,
)

StoreFactory = Callable[[], OnlineStore]


def _unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """Factory of fresh, empty stores of one backend; each call is a separate namespace."""
    stores: list[OnlineStore] = []

    def make() -> OnlineStore:
        if request.param == "memory":
            store: OnlineStore = InMemoryOnlineStore()
        else:
            url = request.getfixturevalue("redis_url")
            store = RedisOnlineStore(url, RedisSettings(key_prefix=_unique_prefix()))
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
        key = f"{prefix}purchases:{{u42}}"
        assert raw_redis.keys(f"{prefix}*") == [key]
        assert raw_redis.type(key) == "zset"
        assert raw_redis.zrange(key, 0, -1, withscores=True) == [("p9", 1718000000.0), ("p7", 1718003600.5)]
        assert 0 < raw_redis.ttl(key) <= 3600
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
        {"max_connections": 0},
        {"retries": -1},
    ],
)
def test_redis_settings_reject_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RedisSettings(**kwargs)  # type: ignore[arg-type]


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


# --- the factory


@pytest.mark.parametrize("url", [None, "", "memory://", "MEMORY://"])
def test_factory_opens_memory(url: str | None) -> None:
    assert isinstance(open_online_store(url), InMemoryOnlineStore)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/none.sock"])
def test_factory_returns_redis_even_when_down(url: str) -> None:
    store = open_online_store(url)
    assert isinstance(store, RedisOnlineStore)
    assert store.ping() is False


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
