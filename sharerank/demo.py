"""`make demo`: the whole path once on an embedded default, from a fresh clone.

Simulate a small world → train LightGCN → log and register in MLflow (sqlite under ``home``) → promote →
serve on a free loopback port → ask for three feeds and five seed sharers for a launch over real gRPC →
shut down. Redis is used when it answers, otherwise the in-process online store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sharerank.config import Settings

DEMO_PREFIX = "sr:demo:"


def run_demo(settings: Settings, *, users: int, epochs: int, seed: int, progress: Callable) -> dict[str, Any]:
    import grpc

    from sharerank.dataset.reader import load_dataset
    from sharerank.registry import promote
    from sharerank.serving.online_store import Purchase, RedisSettings, open_online_store
    from sharerank.serving.server import create_server
    from sharerank.training.feed.train import TrainConfig
    from sharerank.training.jobs import run_training
    from sharerank.training.sources.simulate import simulate_world
    from sharerank.v1 import feed_service_pb2, feed_service_pb2_grpc, seeding_service_pb2, seeding_service_pb2_grpc

    started = time.perf_counter()
    data_dir = settings.home / "demo-world"
    with progress("simulate", 1.0) as advance:
        world = simulate_world(data_dir, users=users, seed=seed,
                               progress=lambda stage, frac: advance(completed=frac, description=f"simulate: {stage}"))
    with progress("train", epochs) as advance:
        report = run_training(data_dir, settings, TrainConfig(epochs=epochs, patience=5, seed=seed),
                              on_epoch=lambda e, f: advance(completed=e, description=(
                                  f"train: epoch {e} loss={f['loss']:.4f} "
                                  f"val_recall@20={f.get('val_recall_20', float('nan')):.4f}")))
    promoted = promote(settings, report["version"], force=True)  # the demo serves what it just trained

    store = open_online_store(settings.resolved_redis_url, fallback_to_memory=True,
                              settings=RedisSettings(key_prefix=DEMO_PREFIX))
    store.clear()
    server = create_server(settings.model_copy(update={"reload_poll_seconds": 0, "metrics_port": 0}), store,
                           address="127.0.0.1:0")
    try:
        dataset = load_dataset(data_dir)
        activity = dataset.purchases.user
        busiest = [dataset.users[u] for u in sorted(set(activity.tolist()), key=lambda u: -(activity == u).sum())[:2]]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = feed_service_pb2_grpc.FeedServiceStub(channel)

            def feed(user_id: str) -> feed_service_pb2.GetFeedResponse:
                return stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id=user_id, page_size=10, explain=True),
                                    timeout=10)

            feeds = {user_id: feed(user_id) for user_id in (*busiest, "someone-new")}
            # A purchase recorded live disappears from that user's next feed.
            first_user = busiest[0]
            bought_now = feeds[first_user].items[0].product_id
            store.record_purchases([Purchase(first_user, bought_now, time.time())])
            after = feed(first_user)
            # Seed sharers for a launch in the category shared most.
            categories = dataset.category[dataset.shares.product]
            launch = max(set(categories.tolist()), key=lambda c: (categories == c).sum())
            seeds = seeding_service_pb2_grpc.SeedingServiceStub(channel).GetSeedTargets(
                seeding_service_pb2.GetSeedTargetsRequest(category=launch, budget=5, max_seeds_per_community=1),
                timeout=60)
    finally:
        server.stop(grace=1.0)
        store.clear()
        store.close()
    return {
        "model_version": report["version"],
        "run_id": report["run_id"],
        "champion": promoted,
        "online_store": type(store).__name__,
        "world": {k: world[k] for k in ("users", "products", "purchases", "shares") if k in world},
        "test_metrics": {k: round(v, 4) for k, v in report["metrics"].items() if k.startswith("test_")},
        "seconds_per_epoch": round(report["metrics"]["seconds_per_epoch"], 3),
        "feeds": {
            user_id: {
                "model_version": response.model_version,
                "items": [{"product_id": i.product_id, "category": i.category, "score": round(i.score, 4),
                           "reasons": [r.text for r in i.reasons]} for i in response.items],
            }
            for user_id, response in feeds.items()
        },
        "live_purchase": {"user_id": first_user, "product_id": bought_now,
                          "gone_from_next_feed": bought_now not in {i.product_id for i in after.items}},
        "seeding": {
            "category": launch,
            "expected_reach": round(seeds.expected_reach, 2),
            "seeds": [{"user_id": t.user_id, "marginal_reach": round(t.marginal_reach, 2),
                       "cumulative_reach": round(t.cumulative_reach, 2),
                       "ci95": [round(t.cumulative_reach_ci_low, 2), round(t.cumulative_reach_ci_high, 2)],
                       "community": t.community, "reasons": [r.text for r in t.reasons]} for t in seeds.seeds],
        },
        "tracking_uri": settings.resolved_tracking_uri,
        "mlflow_ui": f"mlflow ui --backend-store-uri {settings.resolved_tracking_uri}",
        "seconds": round(time.perf_counter() - started, 1),
    }
