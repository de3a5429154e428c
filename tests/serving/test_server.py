"""The gRPC server on a loopback port, serving a model from a real MLflow registry."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sharerank.config import Settings
from sharerank.serving.errors import error_info
from sharerank.serving.online_store import InMemoryOnlineStore, OnlineStore, Purchase, RedisSettings, open_online_store
from sharerank.serving.online_store.base import Share
from sharerank.serving.server import SERVICE_NAMES, Server, create_server
from sharerank.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    feed_service_pb2,
    feed_service_pb2_grpc,
    reason_pb2,
)


@pytest.fixture(params=["memory", "redis"])
def store(request) -> Iterator[OnlineStore]:
    if request.param == "memory":  # needs no Redis
        yield InMemoryOnlineStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    store = open_online_store(redis_url, settings=RedisSettings(key_prefix=f"sr:test-server-{id(request)}:"))
    yield store
    store.clear()
    store.close()


@pytest.fixture
def server(registry, store: OnlineStore) -> Iterator[Server]:
    settings, _ = registry
    server = create_server(settings, store, address="127.0.0.1:0")
    yield server
    server.stop(grace=None)


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def feed(channel: grpc.Channel) -> feed_service_pb2_grpc.FeedServiceStub:
    return feed_service_pb2_grpc.FeedServiceStub(channel)


def get_feed(stub, user_id: str, page_size: int = 20, **kwargs) -> feed_service_pb2.GetFeedResponse:
    return stub.GetFeed(feed_service_pb2.GetFeedRequest(user_id=user_id, page_size=page_size, **kwargs), timeout=10)


def known_user(server: Server, rank: int = 0) -> str:
    bundle = server.holder.current.bundle
    counts = bundle.history.getnnz(axis=1)
    return str(bundle.users[counts.argsort()[::-1][rank]])


def test_feed_for_a_known_user_never_shows_what_they_bought(server: Server, feed, registry) -> None:
    _, report = registry
    user = known_user(server)
    response = get_feed(feed, user, page_size=50)
    bundle = server.holder.current.bundle
    bought = {bundle.products[p] for p in bundle.bought(bundle.user_rows[user])}
    ids = [item.product_id for item in response.items]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert not bought & set(ids)
    assert response.model_version == report["version"]
    assert [i.score for i in response.items] == sorted((i.score for i in response.items), reverse=True)


def test_live_purchase_disappears_from_the_next_feed(server: Server, feed, store: OnlineStore) -> None:
    user = known_user(server, rank=1)
    first = get_feed(feed, user).items[0].product_id
    store.record_purchases([Purchase(user, first, 1.7e9)])
    assert first not in {item.product_id for item in get_feed(feed, user).items}


def test_unknown_user_gets_popular_products(server: Server, feed) -> None:
    response = get_feed(feed, "never-seen-before", page_size=10, explain=True)
    bundle = server.holder.current.bundle
    in_stock_popular = [bundle.products[p] for p in bundle.popular_order if bundle.in_stock[p]]
    ids = [item.product_id for item in response.items]
    # The most popular first; the diversity re-rank draws the rest from the popular head (page + pool).
    assert len(ids) == 10 and ids[0] == in_stock_popular[0] and set(ids) <= set(in_stock_popular[:31])
    assert all(item.reasons and item.reasons[0].text.startswith("popular") for item in response.items)


def test_out_of_stock_products_are_never_served(server: Server, feed) -> None:
    bundle = server.holder.current.bundle
    out = {bundle.products[p] for p in range(len(bundle.products)) if not bundle.in_stock[p]}
    assert out, "the simulated catalogue should have out-of-stock products"
    for user in (known_user(server), "never-seen-before"):
        assert not out & {i.product_id for i in get_feed(feed, user, page_size=200).items}


def test_pages_do_not_repeat_and_end(server: Server, feed) -> None:
    user = known_user(server)
    seen: list[str] = []
    token = ""
    for _ in range(4):
        response = get_feed(feed, user, page_size=7, page_token=token)
        seen += [item.product_id for item in response.items]
        token = response.next_page_token
        assert token
    assert len(seen) == len(set(seen)) == 28
    again = [item.product_id for item in get_feed(feed, user, page_size=7).items]
    assert seen[:7] == again  # the first page is stable (each page is re-ranked on its own)


def test_category_and_exclusion_filters(server: Server, feed) -> None:
    user = known_user(server)
    bundle = server.holder.current.bundle
    category = str(bundle.category[bundle.popular_order[0]])
    response = get_feed(feed, user, categories=[category])
    assert response.items and all(item.category == category for item in response.items)
    first = get_feed(feed, user).items[0].product_id
    excluded = get_feed(feed, user, exclude_product_ids=[first, "not-a-product"])
    assert first not in {item.product_id for item in excluded.items}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"user_id": "", "page_size": 10}, "EMPTY_USER_ID"),
        ({"user_id": "   ", "page_size": 10}, "EMPTY_USER_ID"),
        ({"user_id": "u1", "page_size": 0}, "PAGE_SIZE_OUT_OF_RANGE"),
        ({"user_id": "u1", "page_size": 501}, "PAGE_SIZE_OUT_OF_RANGE"),
        ({"user_id": "u1", "page_size": -3}, "PAGE_SIZE_OUT_OF_RANGE"),
        ({"user_id": "u1", "page_size": 5, "page_token": "%%%"}, "INVALID_PAGE_TOKEN"),
    ],
)
def test_bad_requests_are_invalid_argument(feed, kwargs, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        feed.GetFeed(feed_service_pb2.GetFeedRequest(**kwargs), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details()
    info = error_info(err.value)
    assert info is not None and info.reason == reason and info.domain == "sharerank.v1"


def test_page_token_reused_with_other_filters_is_rejected(server: Server, feed) -> None:
    user = known_user(server)
    token = get_feed(feed, user, page_size=5).next_page_token
    with pytest.raises(grpc.RpcError) as err:
        get_feed(feed, user, page_size=5, page_token=token, categories=["Books"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason == "PAGE_TOKEN_MISMATCH"


def test_model_info(channel, registry) -> None:
    settings, report = registry
    info = admin_service_pb2_grpc.AdminServiceStub(channel).GetModelInfo(admin_service_pb2.GetModelInfoRequest())
    assert info.model_name == settings.model_name and info.model_version == report["version"]
    assert info.run_id == report["run_id"] and info.model_type == "lightgcn"
    assert info.index_type == "Flat" and info.user_count > 0 and info.product_count > 0
    assert info.data_fingerprint == report["data_fingerprint"] and info.load_time.seconds > 0


def test_similar_products(server: Server, feed) -> None:
    bundle = server.holder.current.bundle
    product = str(bundle.products[bundle.popular_order[0]])
    response = feed.GetSimilarProducts(feed_service_pb2.GetSimilarProductsRequest(product_id=product, page_size=8))
    ids = [item.product_id for item in response.items]
    assert len(ids) == 8 and product not in ids and response.model_version
    assert all(item.reasons[0].kind == reason_pb2.REASON_KIND_SIMILAR for item in response.items)
    category = response.items[0].category
    same = feed.GetSimilarProducts(feed_service_pb2.GetSimilarProductsRequest(product_id=product, page_size=3,
                                                                              categories=[category]))
    assert {item.category for item in same.items} == {category}


@pytest.mark.parametrize(
    ("product_id", "page_size", "code", "reason"),
    [
        ("", 5, grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_PRODUCT_ID"),
        ("p1", 0, grpc.StatusCode.INVALID_ARGUMENT, "PAGE_SIZE_OUT_OF_RANGE"),
        ("no-such-product", 5, grpc.StatusCode.NOT_FOUND, "UNKNOWN_PRODUCT"),
    ],
)
def test_similar_products_errors(feed, product_id: str, page_size: int, code, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        feed.GetSimilarProducts(feed_service_pb2.GetSimilarProductsRequest(product_id=product_id,
                                                                           page_size=page_size))
    assert err.value.code() == code and error_info(err.value).reason == reason


def test_health_and_reflection(channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", *SERVICE_NAMES):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = {s.name for r in responses for s in r.list_services_response.service}
    assert set(SERVICE_NAMES) <= listed and "grpc.health.v1.Health" in listed


def test_feed_keeps_answering_with_the_online_store_down(registry, dead_redis_url: str) -> None:
    settings, report = registry
    server = create_server(settings, open_online_store(dead_redis_url), address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = feed_service_pb2_grpc.FeedServiceStub(channel)
            response = get_feed(stub, known_user(server), page_size=10)
            assert len(response.items) == 10 and response.model_version == report["version"]
    finally:
        server.stop(grace=None)


def test_server_without_a_champion_is_not_serving(tmp_path) -> None:
    from sharerank.config import Settings

    server = create_server(Settings(home=tmp_path, reload_poll_seconds=0), InMemoryOnlineStore(),
                           address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                get_feed(feed_service_pb2_grpc.FeedServiceStub(channel), "u1")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None)


def test_serve_command_answers_and_stops_cleanly_on_sigterm(registry) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    settings, report = registry
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SHARERANK_HOME": str(settings.home), "REDIS_URL": "memory://"}
    proc = subprocess.Popen([sys.executable, "-m", "sharerank.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.2)
            response = get_feed(feed_service_pb2_grpc.FeedServiceStub(channel), "anyone", page_size=3)
            assert len(response.items) == 3 and response.model_version == report["version"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# Feed serving: pages, live social proof, cold start.


def feed_ids(response: feed_service_pb2.GetFeedResponse) -> list[str]:
    return [item.product_id for item in response.items]


@pytest.fixture
def turned_around(registry, tmp_path) -> Settings:
    """Settings for a registered model of this test's own with two versions: 1 is the trained bundle, 2 the
    same ids with every user's taste turned around (negated user embeddings); champion at 1."""
    import dataclasses

    import mlflow
    from mlflow import MlflowClient

    from sharerank.models.artifact.bundle import ModelBundle
    from sharerank.registry import connect, promote

    settings, report = registry
    settings = settings.model_copy(update={"model_name": f"turned-{uuid.uuid4().hex}"})
    connect(settings)
    client = MlflowClient()
    source = client.get_model_version(registry[0].model_name, report["version"])
    client.create_registered_model(settings.model_name)
    client.create_model_version(settings.model_name, source.source, run_id=source.run_id)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source.source, dst_path=str(tmp_path)))
    (bundle_dir,) = [path.parent for path in folder.rglob("arrays.npz") if path.parent.name == "bundle"]
    bundle = ModelBundle.load(bundle_dir)
    dataclasses.replace(bundle, user_embedding=-bundle.user_embedding).save(bundle_dir)
    client.create_model_version(settings.model_name, folder.as_uri(), run_id=source.run_id)
    promote(settings, "1")
    return settings


def test_pages_never_repeat_across_live_purchases_and_model_swaps(turned_around: Settings,
                                                                  store: OnlineStore) -> None:
    server = create_server(turned_around, store, address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            feed = feed_service_pb2_grpc.FeedServiceStub(channel)
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            user = known_user(server, rank=3)
            whole = feed_ids(get_feed(feed, user, page_size=60))
            seen: list[str] = []
            token = ""
            for page in range(5):
                if page == 2:  # the user buys something further down, and a friend's purchase reorders the rest
                    fresh = next(p for p in whole if p not in seen)
                    store.record_purchases([Purchase(user, fresh, time.time())])
                    store.record_friend_purchases([(user, Purchase("friend-x", whole[-1], time.time()))])
                if page == 3:  # a real reload between pages: version 2 turns the user's taste around
                    reply = admin.ReloadModel(admin_service_pb2.ReloadModelRequest(model_version="2"), timeout=60)
                    assert reply.changed and reply.model_version == "2"
                    turned = feed_ids(get_feed(feed, user, page_size=20))
                    assert len(set(turned) & set(whole[:20])) < 10  # the new version ranks differently
                response = get_feed(feed, user, page_size=10, page_token=token)
                assert len(response.items) == 10 and response.next_page_token
                assert response.model_version == ("2" if page >= 3 else "1")
                ids = feed_ids(response)
                if page >= 2:
                    assert fresh not in ids
                seen += ids
                token = response.next_page_token
            assert len(seen) == len(set(seen)) == 50
    finally:
        server.stop(grace=None)


def test_social_proof_reasons_appear_for_friends_purchases_and_shares(server: Server, feed, store: OnlineStore) -> None:
    user = known_user(server, rank=2)
    deeper = feed_ids(get_feed(feed, user, page_size=40))[20:26]
    bought_by_friends, shared = deeper[0], deeper[3]
    now = time.time()
    store.record_friend_purchases([(user, Purchase("friend-a", bought_by_friends, now)),
                                   (user, Purchase("friend-b", bought_by_friends, now - 60))])
    store.record_shares([Share("friend-c", user, shared, now)])
    response = get_feed(feed, user, page_size=20, explain=True)
    reasons = {item.product_id: item.reasons for item in response.items}
    assert bought_by_friends in reasons and shared in reasons  # lifted onto the first page
    assert reasons[bought_by_friends][0].kind == reason_pb2.REASON_KIND_FRIENDS_BOUGHT
    assert reasons[bought_by_friends][0].text == "2 friends bought this"
    assert reasons[shared][0].kind == reason_pb2.REASON_KIND_SHARED_TO_YOU
    assert reasons[shared][0].text == "shared to you by friend-c"


def test_feed_caps_each_sharer_across_its_pages_and_says_more_come_later(registry, store: OnlineStore,
                                                                          tmp_path: Path) -> None:
    """A sharer who floods a user gets at most `feed_shares_per_sharer` products into one feed, whatever its
    pages: the signed page token carries what each sharer has had. Shares arrive through RecordEvents."""
    settings = registry[0].model_copy(update={"feed_shares_per_sharer": 2, "event_log_dir": tmp_path / "events"})
    server = create_server(settings, store, address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            feed = feed_service_pb2_grpc.FeedServiceStub(channel)
            user = known_user(server, rank=3)
            # The spammer shares the eight products the model ranks highest for the user: uncapped, they would
            # fill the first pages.
            flood = feed_ids(get_feed(feed, user, page_size=8))
            now = time.time()
            shares = [event_service_pb2.Event(
                event_id=f"spam-{i}", event_time=Timestamp(seconds=int(now) - i),
                share=event_service_pb2.ShareEvent(sharer_id="spammer", recipient_id=user, product_id=product))
                for i, product in enumerate(flood)]
            recorded = event_service_pb2_grpc.EventServiceStub(channel).RecordEvents(
                event_service_pb2.RecordEventsRequest(events=shares), timeout=10)
            assert recorded.accepted_count == 8
            seen: list[str] = []
            reasons: dict[str, list[tuple[int, str]]] = {}
            token = ""
            for _ in range(6):
                response = get_feed(feed, user, page_size=3, page_token=token, explain=True)
                seen += feed_ids(response)
                reasons.update((item.product_id, [(r.kind, r.text) for r in item.reasons]) for item in response.items)
                token = response.next_page_token
                assert token
            assert len(seen) == len(set(seen)) == 18
            shown = [product for product in seen if product in flood]
            assert len(shown) == 2, f"the spammer got {len(shown)} products into one feed: {shown}"
            for product in shown:
                assert (reason_pb2.REASON_KIND_SHARED_TO_YOU, "shared to you by spammer") in reasons[product]
            assert any((reason_pb2.REASON_KIND_SHARER_CAPPED, "more from spammer later") in reasons[product]
                       for product in shown)
            # A new feed (a first page without a token) starts a new session: the spammer's best are back.
            assert set(feed_ids(get_feed(feed, user, page_size=3))) & set(flood)
    finally:
        server.stop(grace=None)


def test_cold_start_user_with_friends_gets_a_personalised_feed(server: Server, feed, store: OnlineStore) -> None:
    bundle = server.holder.current.bundle
    popular = feed_ids(get_feed(feed, "nobody-knows-me", page_size=10))
    # An unknown user who received shares from three buyers is served from those buyers' taste.
    sharers = [known_user(server, rank=r) for r in (0, 1, 2)]
    store.record_shares([Share(s, "newcomer", str(bundle.products[i]), time.time() - 3600)
                         for i, s in enumerate(sharers)])
    response = get_feed(feed, "newcomer", page_size=10, explain=True)
    assert len(response.items) == 10 and feed_ids(response) != popular
    texts = {r.text for item in response.items for r in item.reasons}
    assert "picked for you from what your friends buy" in texts and not any(t.startswith("popular") for t in texts)
    # A user the model knows but who bought nothing in training: served from their friends in the model.
    cold = [u for u in range(len(bundle.users)) if not bundle.has_history[u]
            and bundle.has_history[bundle.friends_of(u)].any()]
    assert cold, "the simulated world should have users with friends but no purchases"
    response = get_feed(feed, str(bundle.users[cold[0]]), page_size=10, explain=True)
    assert feed_ids(response) != popular
    assert response.items[0].reasons[0].text == "picked for you from what your friends buy"


def test_catalogue_products_are_served_with_their_category_prior(registry, tmp_path) -> None:
    import numpy as np

    from sharerank.serving.model_holder import load_version

    settings, report = registry
    trained = load_version(settings, report["version"]).bundle
    counts = trained.history.getnnz(axis=1)
    user = str(trained.users[counts.argmax()])
    vector = trained.user_embedding[trained.user_rows[user]]
    # A new product in the category whose prior (mean embedding) this user likes best.
    best = max(set(trained.category.tolist()),
               key=lambda c: float(trained.product_embedding[trained.category == c].mean(axis=0) @ vector))
    catalogue = tmp_path / "products.csv"
    catalogue.write_text(f"product_id,category,seller_id,in_stock\n{trained.products[0]},x,y,1\n"
                         f"brand-new,{best},seller-new,1\n")
    server = create_server(settings.model_copy(update={"catalogue_path": catalogue}), InMemoryOnlineStore(),
                           address="127.0.0.1:0")
    try:
        bundle = server.holder.current.bundle
        assert len(bundle.products) == len(trained.products) + 1  # known products keep their trained data
        assert bundle.products[-1] == "brand-new" and bundle.category_prior[-1]
        prior = trained.product_embedding[trained.category == best].mean(axis=0)
        assert bool(np.isclose(bundle.product_embedding[-1], prior).all())
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = feed_service_pb2_grpc.FeedServiceStub(channel)
            items = {item.product_id: item for item in get_feed(stub, user, page_size=100, explain=True).items}
        assert "brand-new" in items and items["brand-new"].category == best
        assert items["brand-new"].reasons[0].kind == reason_pb2.REASON_KIND_CATEGORY_PRIOR
    finally:
        server.stop(grace=None)
