"""SeedingService.GetAudience over a real loopback server, on the registry's model of a simulated world."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.serving.errors import error_info
from sharerank.serving.online_store import InMemoryOnlineStore, Purchase
from sharerank.serving.server import Server, create_server
from sharerank.v1 import reason_pb2, seeding_service_pb2, seeding_service_pb2_grpc


@pytest.fixture(scope="module")
def store() -> InMemoryOnlineStore:
    return InMemoryOnlineStore()


@pytest.fixture(scope="module")
def server(registry, store, tmp_path_factory) -> Iterator[Server]:
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path_factory.mktemp("events")})
    server = create_server(settings, store, address="127.0.0.1:0")
    yield server
    server.stop(grace=None)


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[seeding_service_pb2_grpc.SeedingServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield seeding_service_pb2_grpc.SeedingServiceStub(channel)


@pytest.fixture(scope="module")
def world(tiny_world):
    return load_dataset(tiny_world)


def most_bought(world) -> tuple[str, set[str]]:
    counts = np.bincount(world.purchases.product, minlength=world.num_products)
    product = int(np.argmax(counts))
    buyers = set(world.users[world.purchases.user[world.purchases.product == product]].tolist())
    return str(world.products[product]), buyers


def get(stub, **request) -> seeding_service_pb2.GetAudienceResponse:
    # a deadline, not a wait: the first call starts a worker process at the lowest CPU priority, which loads the
    # model and compiles its kernels: over 30 s on a loaded machine with a cold cache
    return stub.GetAudience(seeding_service_pb2.GetAudienceRequest(**request), timeout=120)


def test_audience_is_ranked_without_buyers_and_carries_reasons(stub, registry, world) -> None:
    product, buyers = most_bought(world)
    response = get(stub, product_id=product, k=50)
    assert response.model_version == registry[1]["version"]
    ids = [m.user_id for m in response.members]
    assert len(ids) == 50 == len(set(ids))
    assert not set(ids) & buyers
    scores = [m.score for m in response.members]
    assert scores == sorted(scores, reverse=True)
    for member in response.members:
        assert member.reasons[-1].kind == reason_pb2.REASON_KIND_PERSONALIZED
    social = [r for m in response.members for r in m.reasons if r.kind == reason_pb2.REASON_KIND_FRIENDS_BOUGHT]
    assert social and all("bought it" in r.text for r in social)


def test_friends_count_in_reasons_matches_the_social_graph(stub, server: Server, world) -> None:
    """"N friends bought it" counts the user's neighbours among the product's training buyers."""
    product, _ = most_bought(world)
    bundle = server.holder.current.bundle
    buyer_rows = set(bundle.buyers(bundle.product_rows[product]).tolist())
    for member in get(stub, product_id=product, k=30).members:
        expected = len(set(bundle.friends_of(bundle.user_rows[member.user_id]).tolist()) & buyer_rows)
        said = [r.text for r in member.reasons if r.kind == reason_pb2.REASON_KIND_FRIENDS_BOUGHT]
        assert said == ([f"{expected} friend{'s' if expected > 1 else ''} bought it"] if expected else [])


def test_excluded_users_and_buyers_since_training_are_left_out(stub, store, world) -> None:
    product, _ = most_bought(world)
    first = [m.user_id for m in get(stub, product_id=product, k=10).members]
    again = [m.user_id for m in get(stub, product_id=product, k=10, exclude_user_ids=first[:2]).members]
    assert not set(first[:2]) & set(again) and len(again) == 10
    store.record_purchases([Purchase(first[3], product, 2e9)])
    live = [m.user_id for m in get(stub, product_id=product, k=10).members]
    assert first[3] not in live


def test_k_larger_than_the_eligible_users_returns_them_all(stub, world) -> None:
    product, buyers = most_bought(world)
    response = get(stub, product_id=product, k=10_000)
    assert len(response.members) <= world.num_users - len(buyers)
    assert len(response.members) >= world.num_users - len(buyers) - 2  # at most the live buyer and a spare


@pytest.mark.parametrize(("request_fields", "code", "reason"), [
    ({"product_id": "no-such-product", "k": 5}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_PRODUCT"),
    ({"product_id": "", "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_PRODUCT_ID"),
    ({"product_id": "p\x00", "k": 5}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PRODUCT_ID"),
    ({"product_id": "KNOWN", "k": 0}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_K"),
    ({"product_id": "KNOWN", "k": 10_001}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_K"),
    ({"product_id": "KNOWN", "k": -3}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_K"),
])
def test_bad_requests_get_clear_errors(stub, world, request_fields, code, reason) -> None:
    if request_fields["product_id"] == "KNOWN":
        request_fields = {**request_fields, "product_id": most_bought(world)[0]}
    with pytest.raises(grpc.RpcError) as err:
        get(stub, **request_fields)
    assert err.value.code() == code
    assert err.value.details()
    assert error_info(err.value).reason == reason


def test_shared_to_them_names_someone_who_shared_the_product_to_them(stub, world) -> None:
    shares = world.shares
    counts = np.bincount(shares.product, minlength=world.num_products)
    product = int(np.argmax(counts))
    sent = {(str(world.users[r]), str(world.users[s])) for r, s in
            zip(shares.recipient[shares.product == product], shares.sharer[shares.product == product], strict=True)}
    named = [(m.user_id, r.text.removeprefix("shared to them by "))
             for m in get(stub, product_id=str(world.products[product]), k=10_000).members
             for r in m.reasons if r.kind == reason_pb2.REASON_KIND_SHARED_TO_YOU]
    assert named and set(named) <= sent
