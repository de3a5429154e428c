"""`make demo`: the whole loop once on an embedded default, from a fresh clone.

Simulate a small world and keep its latest events back → train (the automatic choice, within a budget) →
log and register in MLflow (sqlite under ``home``) → promote → serve on a free loopback port → ask for three
feeds and five seed sharers over real gRPC → send the held-back events through RecordEvents (the event log
and the online store) → retrain on the world plus that event log → the gate decides, serving reloads the
alias → one more feed → shut down. Redis is used when it answers, otherwise the in-process online store.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

from sharerank import progress
from sharerank.config import Settings

DEMO_PREFIX = "sr:demo:"
LIVE_FRACTION = 0.15
"""The latest share of the world's purchases and shares that arrives live, after the first model."""
BATCH = 500


def run_demo(settings: Settings, *, users: int, budget: float, seed: int) -> dict[str, Any]:
    import grpc

    from sharerank.dataset.reader import load_dataset
    from sharerank.registry import promote
    from sharerank.serving.online_store import RedisSettings, open_online_store
    from sharerank.serving.server import create_server
    from sharerank.training.jobs import run_retrain, run_training
    from sharerank.training.sources.simulate import simulate_world
    from sharerank.v1 import (
        admin_service_pb2,
        admin_service_pb2_grpc,
        event_service_pb2_grpc,
        feed_service_pb2,
        feed_service_pb2_grpc,
        seeding_service_pb2,
        seeding_service_pb2_grpc,
    )

    started = time.perf_counter()
    simulated, data_dir, events_dir = (settings.home / name for name in ("demo-simulated", "demo-world", "demo-events"))
    for folder in (simulated, data_dir, events_dir):
        shutil.rmtree(folder, ignore_errors=True)
    with progress.stage("simulate", 100, unit="percent") as stage:  # the note says which part
        world = simulate_world(simulated, users=users, seed=seed,
                               progress=lambda part, frac: stage.update(completed=100 * frac, note=part))
    live = _hold_back(simulated, data_dir, LIVE_FRACTION)
    with progress.stage("train"):  # tuning, trials and epochs report inside
        report = run_training([data_dir], settings, budget_seconds=budget, seed=seed)
    promoted = promote(settings, report["version"], force=True)  # the demo serves what it just trained

    store = open_online_store(settings.resolved_redis_url, fallback_to_memory=True,
                              settings=RedisSettings(key_prefix=DEMO_PREFIX,
                                                     fatigue_window_s=settings.fatigue_window_seconds))
    store.clear()
    server = create_server(settings.model_copy(update={"reload_poll_seconds": 0, "metrics_port": 0,
                                                       "event_log_dir": events_dir}), store, address="127.0.0.1:0")
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
            events = event_service_pb2_grpc.EventServiceStub(channel)
            events.RecordEvents(_request([_purchase(f"demo-{first_user}-{bought_now}", first_user, bought_now,
                                                    time.time())]), timeout=10)
            after = feed(first_user)
            # Seed sharers for a launch in the category shared most.
            categories = dataset.category[dataset.shares.product]
            launch = max(set(categories.tolist()), key=lambda c: (categories == c).sum())
            seeds = seeding_service_pb2_grpc.SeedingServiceStub(channel).GetSeedTargets(
                seeding_service_pb2.GetSeedTargetsRequest(category=launch, budget=5, max_seeds_per_community=1),
                timeout=60)
            # The world's later events arrive live, then the model is retrained on the world plus its log.
            recorded = {"accepted": 0, "duplicates": 0}
            for start in range(0, len(live), BATCH):
                response = events.RecordEvents(_request(live[start:start + BATCH]), timeout=30)
                recorded["accepted"] += response.accepted_count
                recorded["duplicates"] += response.duplicate_count
            with progress.stage("retrain"):
                retrain = run_retrain([data_dir, events_dir], settings, budget_seconds=budget, seed=seed)
            reloaded = admin_service_pb2_grpc.AdminServiceStub(channel).ReloadModel(
                admin_service_pb2.ReloadModelRequest(), timeout=60)
            after_retrain = feed(busiest[1])
    finally:
        server.stop(grace=1.0)
        store.clear()
        store.close()
    return {
        "model_version": report["version"],
        "run_id": report["run_id"],
        "chosen": {"model": report["model"], "params": report["params"],
                   "validation": {k: round(v, 4) for k, v in report["choice"]["validation"].items()},
                   "families": {name: round(r["val_recall_20"], 4) if "val_recall_20" in r else r["skipped"]
                                for name, r in report["choice"]["families"].items()}},
        "champion": promoted,
        "online_store": type(store).__name__,
        "world": {k: world[k] for k in ("users", "products", "purchases", "shares") if k in world},
        "fit_seconds": round(report["metrics"]["fit_seconds"], 2),
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
        "retrain": {
            "live_events": recorded,
            "event_log": str(events_dir),
            "candidate": retrain["comparison"]["candidate"],
            "champion_before": retrain["comparison"].get("champion"),
            "promoted": retrain["promotion"]["promoted"],
            "reason": retrain["promotion"]["reason"],
            "serving_after_reload": reloaded.model_version,
            "feed_model_version": after_retrain.model_version,
        },
        "tracking_uri": settings.resolved_tracking_uri,
        "mlflow_ui": f"mlflow ui --backend-store-uri {settings.resolved_tracking_uri}",
        # Optional, after the demo: the growth console over the demo's champion and world.
        "console": {"address": "http://127.0.0.1:8080",
                    "start": f"sharerank serve & sharerank demand --data {data_dir} --json > "
                             f"{settings.home}/demand.json && sharerank console --demand {settings.home}/demand.json"},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _hold_back(simulated: Path, out: Path, fraction: float) -> list:
    """Writes ``simulated`` to ``out`` without its latest ``fraction`` of purchases and shares, and returns
    those as RecordEvents events in time order (a live purchase keeps its share only when that share is live
    too: the event log accepts citations of shares it holds)."""
    out.mkdir(parents=True)
    for name in ("products.csv", "social.csv"):
        shutil.copy(simulated / name, out / name)
    rows = {name: list(csv.DictReader((simulated / name).open())) for name in ("purchases.csv", "shares.csv")}
    times = sorted(float(r["ts"]) for r in rows["purchases.csv"])
    cut = times[int(len(times) * (1 - fraction))]
    live_shares: set[str] = set()
    events: list[tuple[float, Any]] = []
    for name, kept in rows.items():
        with (out / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(kept[0]))
            writer.writeheader()
            for row in kept:
                if float(row["ts"]) < cut:
                    writer.writerow(row)
                elif name == "shares.csv":
                    live_shares.add(row["share_id"])
                    events.append((float(row["ts"]), _share(row)))
    for row in rows["purchases.csv"]:
        if float(row["ts"]) >= cut:
            share = row.get("share_id") or ""
            events.append((float(row["ts"]) + 1e-3,  # after a share of the same second
                           _purchase(f"live-{row['user_id']}-{row['product_id']}-{row['ts']}", row["user_id"],
                                     row["product_id"], float(row["ts"]), share if share in live_shares else "")))
    return [event for _, event in sorted(events, key=lambda e: e[0])]


def _share(row: dict[str, str]):
    from sharerank.v1 import event_service_pb2

    event = event_service_pb2.Event(event_id=row["share_id"], share=event_service_pb2.ShareEvent(
        sharer_id=row["sharer_id"], recipient_id=row["recipient_id"], product_id=row["product_id"]))
    event.event_time.FromNanoseconds(int(float(row["ts"]) * 1e9))
    return event


def _purchase(event_id: str, user_id: str, product_id: str, ts: float, share_id: str = ""):
    from sharerank.v1 import event_service_pb2

    event = event_service_pb2.Event(event_id=event_id, purchase=event_service_pb2.PurchaseEvent(
        user_id=user_id, product_id=product_id, share_id=share_id))
    event.event_time.FromNanoseconds(int(ts * 1e9))
    return event


def _request(events: list):
    from sharerank.v1 import event_service_pb2

    return event_service_pb2.RecordEventsRequest(events=events)
