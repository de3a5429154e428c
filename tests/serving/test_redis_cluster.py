"""The Redis online store on a real local Redis Cluster, through a real gRPC server: killing the primary that
holds a user's slot (``kill -9``) during a feed loop fails no feed, and after its replica is promoted the
state is back, new writes are readable and feeds are no longer degraded.

The contract suite (``test_online_store.py``) runs on a cluster too, as its ``redis-cluster`` backend.
"""

from __future__ import annotations

import threading
import time

import grpc
import redis
from conftest import wait_for
from redis.cluster import RedisCluster

from sharerank.serving.online_store import OnlineStoreError, Purchase, RedisSettings, open_online_store
from sharerank.serving.server import Server, create_server
from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc


def test_a_primary_killed_during_a_feed_loop_fails_no_feed_and_state_returns_after_failover(
        registry, private_redis_cluster, tmp_path) -> None:
    cluster = private_redis_cluster
    store = open_online_store(cluster.url, settings=RedisSettings(key_prefix="sr:cluster:"))
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events", "store_probe_seconds": 0.2})
    server: Server = create_server(settings, store, address="127.0.0.1:0", metrics_address="127.0.0.1:0")
    errors: list[BaseException] = []
    served = [0]
    stop = threading.Event()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            feed = feed_service_pb2_grpc.FeedServiceStub(channel)
            bundle = server.holder.current.bundle
            user = str(bundle.users[bundle.history.getnnz(axis=1).argmax()])

            def ids() -> list[str]:
                request = feed_service_pb2.GetFeedRequest(user_id=user, page_size=20)
                return [item.product_id for item in feed.GetFeed(request, timeout=10).items]

            first, second = ids()[:2]
            store.record_purchases([Purchase(user, first, time.time())])
            wait_for(lambda: first not in ids(), "live features apply")

            # The primary serving the user's slot, and its replica, which must hold the purchase before the kill.
            key = store.purchases_key(user)
            topology = RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"), decode_responses=True)
            slot = topology.keyslot(key)
            primary, replica = topology.nodes_manager.slots_cache[slot][:2]
            topology.close()
            victim = next(node for node in cluster.nodes if node.port == primary.port)
            on_replica = redis.Redis(port=replica.port, decode_responses=True)
            on_replica.execute_command("READONLY")
            wait_for(lambda: on_replica.zscore(key, first) is not None, "the replica has the purchase")
            on_replica.close()

            def loop() -> None:
                while not stop.is_set():
                    try:
                        assert len(ids()) == 20
                        served[0] += 1
                    except BaseException as exc:  # noqa: BLE001 - any failure of a feed fails the test
                        errors.append(exc)
                        return

            feeder = threading.Thread(target=loop, daemon=True)
            feeder.start()
            wait_for(lambda: served[0] >= 5, "the feed loop runs")
            victim.kill()  # SIGKILL, like a crash
            wait_for(lambda: len(cluster.masters()) == 3 and replica.port in [n.port for n in cluster.masters()],
                     "the replica is promoted", timeout_s=30)
            cluster.wait_until_ok(timeout_s=30)
            during = served[0]
            wait_for(lambda: served[0] >= during + 20 or bool(errors), "the feed loop goes on after failover")
            stop.set()
            feeder.join(timeout=15)
            assert not errors, errors
            assert served[0] > 25

            # State written before the kill survived on the promoted replica; a write after failover is readable.
            def write() -> bool:
                try:
                    store.record_purchases([Purchase(user, second, time.time())])
                    return True
                except OnlineStoreError:
                    return False

            wait_for(write, "a write after failover succeeds")
            assert set(store.get_live_state(user).purchases) >= {first, second}
            wait_for(lambda: not server.breaker.is_open, "the breaker is closed")
            wait_for(lambda: first not in (page := ids()) and second not in page, "live features are back")
            sample = server.metrics.registry.get_sample_value
            degraded_before = sample("sharerank_feed_degraded_total", {"hydrator": "LiveState"}) or 0.0
            for _ in range(20):
                page = ids()
                assert len(page) == 20 and first not in page and second not in page
            assert (sample("sharerank_feed_degraded_total", {"hydrator": "LiveState"}) or 0.0) == degraded_before
    finally:
        stop.set()
        server.stop(grace=None)
        store.close()
