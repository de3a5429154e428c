"""SeedingService.GetSeedTargets over a real loopback server, on the registry's model of a simulated world."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.models.seeding.spread import monte_carlo_spread
from sharerank.serving.api.seeding import parse_seed_request
from sharerank.serving.errors import error_info
from sharerank.serving.online_store import InMemoryOnlineStore, Purchase
from sharerank.serving.server import Server, create_server
from sharerank.v1 import reason_pb2, seeding_service_pb2, seeding_service_pb2_grpc


@pytest.fixture(scope="module")
def server(registry) -> Iterator[Server]:
    settings, _ = registry
    server = create_server(settings, InMemoryOnlineStore(), address="127.0.0.1:0")
    yield server
    server.stop(grace=None)


@pytest.fixture(scope="module")
def seeding(server: Server) -> Iterator[seeding_service_pb2_grpc.SeedingServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield seeding_service_pb2_grpc.SeedingServiceStub(channel)


@pytest.fixture(scope="module")
def world(tiny_world):
    return load_dataset(tiny_world)


def seeds(stub, **request) -> seeding_service_pb2.GetSeedTargetsResponse:
    return stub.GetSeedTargets(seeding_service_pb2.GetSeedTargetsRequest(**request), timeout=60)


def test_seeds_come_in_order_with_reach_intervals_and_reasons(seeding, server: Server, registry, world) -> None:
    response = seeds(seeding, category="Beauty", budget=5)
    assert len(response.seeds) == 5
    assert response.model_version == registry[1]["version"]
    assert len({s.user_id for s in response.seeds}) == 5
    assert set(s.user_id for s in response.seeds) <= set(world.users.tolist())
    cumulative = [s.cumulative_reach for s in response.seeds]
    compliance = server.holder.current.bundle.seeding.compliance
    assert cumulative == sorted(cumulative)
    first = server.holder.current.bundle.user_rows[response.seeds[0].user_id]
    assert cumulative[0] >= compliance[first] - 0.05  # an asked seed reaches at least itself when it shares
    assert np.allclose(np.cumsum([s.marginal_reach for s in response.seeds]), cumulative)
    assert response.expected_reach == pytest.approx(cumulative[-1])
    # Each reach and interval agree with an independent simulation of the served influence graph, each seed
    # sharing with its chance of complying (a handle node per user whose one arc is that chance).
    bundle = server.holder.current.bundle
    n = len(bundle.users)
    asked = bundle.seeding.graph("Beauty").with_seed_handles(bundle.seeding.compliance)
    rows = np.array([bundle.user_rows[s.user_id] for s in response.seeds]) + n
    check = monte_carlo_spread(asked, rows, runs=8000, seed=31337)
    check = dataclasses.replace(check, prefix_mean=check.prefix_mean - np.arange(1, len(rows) + 1))
    for j, s in enumerate(response.seeds):
        reported_se = (s.cumulative_reach_ci_high - s.cumulative_reach_ci_low) / (2 * 1.96)
        check_se = (check.prefix_ci_high[j] - check.prefix_ci_low[j]) / (2 * 1.96)
        assert abs(s.cumulative_reach - check.prefix_mean[j]) <= 4 * math.hypot(reported_se, check_se) + 1e-9 * (
            1 + check.prefix_mean[j]), (j, s.cumulative_reach, check.prefix_mean[j])
    for s in response.seeds:
        assert s.community and s.reasons
        kinds = {r.kind for r in s.reasons}
        assert {reason_pb2.REASON_KIND_SHARE_PROPENSITY, reason_pb2.REASON_KIND_NETWORK_POSITION} <= kinds
        assert kinds <= {reason_pb2.REASON_KIND_SHARE_PROPENSITY, reason_pb2.REASON_KIND_CONVERSION_HISTORY,
                         reason_pb2.REASON_KIND_NETWORK_POSITION}
    assert response.influence_regime == "recorded" and not response.warnings
    assert response.expected_reach_ci_low <= response.expected_reach_ci_high


def test_buyers_of_the_product_and_excluded_users_are_never_seeds(seeding, world) -> None:
    counts = np.bincount(world.purchases.product, minlength=world.num_products)
    product = int(np.argmax(counts))
    buyers = set(world.users[world.purchases.user[world.purchases.product == product]].tolist())
    first = seeds(seeding, product_id=str(world.products[product]), budget=10)
    picked = [s.user_id for s in first.seeds]
    assert not buyers & set(picked)
    again = seeds(seeding, product_id=str(world.products[product]), budget=10, exclude_user_ids=picked[:3])
    assert not set(picked[:3]) & {s.user_id for s in again.seeds}


def test_community_cap_and_minimum_activity_are_honoured(seeding, world) -> None:
    response = seeds(seeding, category="Beauty", budget=8, max_seeds_per_community=1)
    communities = [s.community for s in response.seeds]
    assert len(set(communities)) == len(communities)
    activity = np.bincount(world.purchases.user, minlength=world.num_users) + np.bincount(
        world.shares.sharer, minlength=world.num_users)
    threshold = int(np.quantile(activity, 0.9))
    rows = {u: i for i, u in enumerate(world.users.tolist())}
    active = seeds(seeding, category="Beauty", budget=5, min_activity=threshold)
    assert all(activity[rows[s.user_id]] >= threshold for s in active.seeds)


@pytest.mark.parametrize(("request_fields", "code", "reason"), [
    ({"category": "Beauty", "budget": 0}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_BUDGET"),
    ({"category": "Beauty", "budget": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_BUDGET"),
    ({"category": "Beauty", "budget": 5, "epsilon": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_EPSILON"),
    ({"category": "Beauty", "budget": 5, "min_activity": -1}, grpc.StatusCode.INVALID_ARGUMENT,
     "NEGATIVE_CONSTRAINT"),
    ({"category": "Beauty", "budget": 5, "min_activity": 10**9}, grpc.StatusCode.INVALID_ARGUMENT,
     "UNSATISFIABLE_REQUEST"),
    ({"product_id": "no-such-product", "budget": 5}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_PRODUCT"),
    ({"category": "Garden gnomes", "budget": 5}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_CATEGORY"),
    ({"category": "Beauty", "budget": 5, "max_fatigue": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_MAX_FATIGUE"),
    ({"category": "Beauty", "budget": 5, "max_fatigue": -0.1}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_MAX_FATIGUE"),
    ({"category": "Beauty", "budget": 5, "max_fatigue": float("nan")}, grpc.StatusCode.INVALID_ARGUMENT,
     "BAD_MAX_FATIGUE"),
    ({"category": "Beauty", "budget": 5, "ring_policy": 42}, grpc.StatusCode.INVALID_ARGUMENT, "BAD_RING_POLICY"),
])
def test_bad_requests_get_clear_errors(seeding, request_fields, code, reason) -> None:
    with pytest.raises(grpc.RpcError) as err:
        seeds(seeding, **request_fields)
    assert err.value.code() == code
    assert err.value.details()
    assert error_info(err.value).reason == reason


def test_budget_above_the_candidates_names_the_eligible_count(seeding, world) -> None:
    assert world.num_users < 1000
    with pytest.raises(grpc.RpcError) as err:
        seeds(seeding, category="Beauty", budget=1000)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "eligible" in err.value.details()


def test_buyers_since_training_are_never_seeds(registry, world, tmp_path) -> None:
    """A purchase the online store saw after training takes its buyer out of the product's seeds."""
    settings = registry[0].model_copy(update={"event_log_dir": tmp_path / "events"})
    store = InMemoryOnlineStore()
    live = create_server(settings, store, address="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{live.port}") as channel:
            stub = seeding_service_pb2_grpc.SeedingServiceStub(channel)
            counts = np.bincount(world.purchases.product, minlength=world.num_products)
            product = str(world.products[int(np.argmax(counts))])
            before = [s.user_id for s in seeds(stub, product_id=product, budget=5).seeds]
            store.record_purchases([Purchase(before[0], product, 2e9), Purchase(before[2], product, 2e9)])
            after = [s.user_id for s in seeds(stub, product_id=product, budget=5).seeds]
            assert before[0] not in after and before[2] not in after and len(after) == 5
    finally:
        live.stop(grace=None)


def test_each_seed_carries_a_spammer_score_with_its_interval(seeding, world) -> None:
    """Over real gRPC: shares sent and conversions as the world's files count them (shares to someone who had
    not bought the product yet; those a purchase names), and a spammer score inside its 95% interval."""
    response = seeds(seeding, category=None, budget=10)
    rows = {u: i for i, u in enumerate(world.users.tolist())}
    shares, purchases = world.shares, world.purchases
    first_buy: dict[tuple[int, int], float] = {}
    for user, product, ts in zip(purchases.user.tolist(), purchases.product.tolist(), purchases.ts.tolist(),
                                 strict=True):
        first_buy[(user, product)] = min(ts, first_buy.get((user, product), np.inf))
    converted = set(purchases.share[purchases.share >= 0].tolist())
    for s in response.seeds:
        mine = np.flatnonzero(shares.sharer == rows[s.user_id])
        trials = [i for i in mine.tolist()
                  if not first_buy.get((int(shares.recipient[i]), int(shares.product[i])), np.inf) < shares.ts[i]]
        assert s.shares_sent == len(trials)
        assert s.conversions == sum(i in converted for i in trials)
        assert 0.0 <= s.spammer_score_ci_low <= s.spammer_score <= s.spammer_score_ci_high <= 1.0
        assert s.ring_score == 0.0 and s.audience_fatigue == 0.0  # a world without rings or fatigue
    assert any(s.spammer_score_ci_high > s.spammer_score_ci_low for s in response.seeds)


def test_max_fatigue_zero_keeps_fresh_audiences(seeding) -> None:
    """Without fatigue in the served world every audience is fresh (fatigue 0), so the strictest limit keeps
    the seeds it would pick anyway."""
    plain = [s.user_id for s in seeds(seeding, category="Beauty", budget=5).seeds]
    assert [s.user_id for s in seeds(seeding, category="Beauty", budget=5, max_fatigue=0.0).seeds] == plain


def test_unset_max_fatigue_and_ring_policy_mean_no_limit_and_exclude() -> None:
    parsed = parse_seed_request(seeding_service_pb2.GetSeedTargetsRequest(category="Beauty", budget=5))
    assert parsed.max_fatigue is None and parsed.ring_policy == "exclude"
    parsed = parse_seed_request(seeding_service_pb2.GetSeedTargetsRequest(
        category="Beauty", budget=5, max_fatigue=0.0, ring_policy=seeding_service_pb2.RING_POLICY_DISCOUNT))
    assert parsed.max_fatigue == 0.0 and parsed.ring_policy == "discount"
