"""The synthetic world: files, integrity, determinism and the behaviour the evaluations rely on."""

import csv
import math
from collections import Counter
from pathlib import Path

import pytest

from sharerank.training.sources.simulate import CATEGORIES, START_TS, simulate_world

USERS = 2000
SEED = 7
FILES = ("products.csv", "purchases.csv", "shares.csv", "social.csv",
         "truth/influence.csv", "truth/interests.csv", "truth/users.csv")
HEADERS = {
    "products.csv": ["product_id", "category", "price", "seller_id", "in_stock"],
    "purchases.csv": ["user_id", "product_id", "ts", "share_id"],
    "shares.csv": ["share_id", "sharer_id", "recipient_id", "product_id", "ts"],
    "social.csv": ["src_id", "dst_id"],
    "truth/influence.csv": ["src_id", "dst_id", "p"],
    "truth/interests.csv": ["user_id", "category", "weight"],
    "truth/users.csv": ["user_id", "community", "role"],
}


def _rows(folder: Path, name: str) -> list[dict]:
    with open(folder / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    stages = []
    summary = simulate_world(folder, users=USERS, seed=SEED, progress=lambda s, f: stages.append((s, f)))
    tables = {name: _rows(folder, name) for name in FILES}
    return folder, summary, tables, stages


@pytest.fixture(scope="module")
def by_share(world):
    return {s["share_id"]: s for s in world[2]["shares.csv"]}


@pytest.fixture(scope="module")
def roles(world):
    return {u["user_id"]: u["role"] for u in world[2]["truth/users.csv"]}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world, tmp_path):
    folder = world[0]
    simulate_world(tmp_path / "again", users=USERS, seed=SEED)
    simulate_world(tmp_path / "other", users=USERS, seed=SEED + 1)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes(), name
    assert (tmp_path / "other" / "shares.csv").read_bytes() != (folder / "shares.csv").read_bytes()


def test_headers(world):
    folder = world[0]
    for name, header in HEADERS.items():
        assert (folder / name).read_text().splitlines()[0] == ",".join(header), name


def test_summary_matches_files_and_progress_reported(world):
    _, summary, t, stages = world
    assert summary["users"] == len(t["truth/users.csv"]) == USERS
    assert summary["products"] == len(t["products.csv"])
    assert summary["purchases"] == len(t["purchases.csv"])
    assert summary["shares"] == len(t["shares.csv"])
    assert summary["social_arcs"] == len(t["social.csv"]) == 2 * summary["friendships"]
    assert summary["share_purchases"] == sum(1 for p in t["purchases.csv"] if p["share_id"])
    assert 0 < summary["share_driven_purchase_fraction"] < 0.5
    assert summary["kocs"] >= 5 and summary["spammers"] >= 5
    assert stages[-1] == ("done", 1.0)
    assert [f for _, f in stages] == sorted(f for _, f in stages)


def test_ids_are_zero_padded_and_sort(world):
    t = world[2]
    users = [u["user_id"] for u in t["truth/users.csv"]]
    assert users[0] == "u0001" and users == sorted(users)
    assert {len(u) for u in users} == {5}
    shares = [s["share_id"] for s in t["shares.csv"]]
    assert shares == sorted(shares) and len(set(map(len, shares))) == 1
    assert all(p["seller_id"].startswith("seller") for p in t["products.csv"])


def test_products_are_plausible(world):
    products = world[2]["products.csv"]
    assert {p["category"] for p in products} == set(CATEGORIES)
    assert all(float(p["price"]) > 0 and len(p["price"].partition(".")[2]) <= 2 for p in products)
    in_stock = sum(p["in_stock"] == "1" for p in products) / len(products)
    assert {p["in_stock"] for p in products} <= {"0", "1"} and 0.85 < in_stock < 1.0


def test_purchases_reference_shares_to_the_buyer_of_that_product_earlier(world, by_share):
    t = world[2]
    users = {u["user_id"] for u in t["truth/users.csv"]}
    products = {p["product_id"] for p in t["products.csv"]}
    for p in t["purchases.csv"]:
        assert p["user_id"] in users and p["product_id"] in products
        if p["share_id"]:
            share = by_share[p["share_id"]]
            assert share["recipient_id"] == p["user_id"] and share["product_id"] == p["product_id"]
            assert int(p["ts"]) > int(share["ts"])
    for s in t["shares.csv"]:
        assert s["sharer_id"] in users and s["recipient_id"] in users and s["product_id"] in products


def test_nobody_buys_a_product_twice(world):
    pairs = Counter((p["user_id"], p["product_id"]) for p in world[2]["purchases.csv"])
    assert max(pairs.values()) == 1


def test_organic_purchases_fall_in_the_window(world):
    organic = [int(p["ts"]) for p in world[2]["purchases.csv"] if not p["share_id"]]
    assert START_TS <= min(organic) and max(organic) < START_TS + 180 * 86_400


def test_social_graph_is_simple_symmetric_and_heavy_tailed(world):
    arcs = [(a["src_id"], a["dst_id"]) for a in world[2]["social.csv"]]
    assert all(a != b for a, b in arcs)
    assert len(set(arcs)) == len(arcs)
    assert set(arcs) == {(b, a) for a, b in arcs}
    degree = sorted(Counter(a for a, _ in arcs).values())
    assert degree[-1] > 5 * degree[len(degree) // 2]


def test_shares_go_to_friends_never_to_oneself(world):
    t = world[2]
    arcs = {(a["src_id"], a["dst_id"]) for a in t["social.csv"]}
    assert all((s["sharer_id"], s["recipient_id"]) in arcs for s in t["shares.csv"])


def test_friendships_are_mostly_inside_communities(world):
    t = world[2]
    community = {u["user_id"]: u["community"] for u in t["truth/users.csv"]}
    arcs = t["social.csv"]
    inside = sum(community[a["src_id"]] == community[a["dst_id"]] for a in arcs) / len(arcs)
    assert inside > 0.7


def test_roles_and_truth_tables_are_complete(world, roles):
    t = world[2]
    assert set(roles.values()) == {"normal", "koc", "spammer"}
    influence = {(r["src_id"], r["dst_id"]): float(r["p"]) for r in t["truth/influence.csv"]}
    assert set(influence) == {(a["src_id"], a["dst_id"]) for a in t["social.csv"]}
    assert all(0 < p <= 1 for p in influence.values())
    weights = {(r["user_id"], r["category"]): float(r["weight"]) for r in t["truth/interests.csv"]}
    assert len(weights) == USERS * len(CATEGORIES) and min(weights.values()) > 0


def test_koc_shares_convert_far_better_than_spammer_shares(world, roles):
    t = world[2]
    converted = {p["share_id"] for p in t["purchases.csv"] if p["share_id"]}
    sent, won = Counter(), Counter()
    for s in t["shares.csv"]:
        sent[roles[s["sharer_id"]]] += 1
        won[roles[s["sharer_id"]]] += s["share_id"] in converted
    rate = {role: won[role] / sent[role] for role in sent}
    assert rate["koc"] > 5 * rate["spammer"]
    assert rate["koc"] > rate["normal"] > rate["spammer"]
    population = Counter(roles.values())
    assert sent["spammer"] / population["spammer"] > 5 * sent["normal"] / population["normal"]


def test_only_spammers_share_what_they_did_not_buy(world, roles):
    t = world[2]
    bought_at = {(p["user_id"], p["product_id"]): int(p["ts"]) for p in t["purchases.csv"]}
    for s in t["shares.csv"]:
        if roles[s["sharer_id"]] != "spammer":
            assert int(s["ts"]) > bought_at[(s["sharer_id"], s["product_id"])]


def test_cascades_are_multi_hop_with_increasing_time(world, by_share, roles):
    t = world[2]
    via = {(p["user_id"], p["product_id"]): p for p in t["purchases.csv"] if p["share_id"]}
    onward = [s for s in t["shares.csv"]
              if (s["sharer_id"], s["product_id"]) in via and roles[s["sharer_id"]] != "spammer"]
    assert onward
    for s in onward:
        bought = via[(s["sharer_id"], s["product_id"])]
        assert int(s["ts"]) > int(bought["ts"]) > int(by_share[bought["share_id"]]["ts"])
    assert world[1]["max_cascade_depth"] >= 2


def test_conversions_match_the_true_probabilities(world):
    """Shares to people who had not bought yet convert at about min(1, p_uv * weight(v, c))."""
    t = world[2]
    p = {(r["src_id"], r["dst_id"]): float(r["p"]) for r in t["truth/influence.csv"]}
    weight = {(r["user_id"], r["category"]): float(r["weight"]) for r in t["truth/interests.csv"]}
    category = {r["product_id"]: r["category"] for r in t["products.csv"]}
    bought_at = {(r["user_id"], r["product_id"]): int(r["ts"]) for r in t["purchases.csv"]}
    converted = {r["share_id"] for r in t["purchases.csv"] if r["share_id"]}
    expected = variance = observed = 0.0
    for s in t["shares.csv"]:
        if bought_at.get((s["recipient_id"], s["product_id"]), math.inf) < int(s["ts"]):
            continue
        recipient = s["recipient_id"]
        q = min(1.0, p[(s["sharer_id"], recipient)] * weight[(recipient, category[s["product_id"]])])
        expected += q
        variance += q * (1 - q)
        observed += s["share_id"] in converted
    # A conversion is lost when the recipient buys the product another way during the delay, so allow
    # observed to fall a little short of expected.
    band = 4 * math.sqrt(variance) + 1e-9 * max(1.0, expected)  # never 0, even if every q were 0 or 1
    assert 0.9 * expected - band <= observed <= expected + band


def test_unknown_knob_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="unknown world knobs"):
        simulate_world(tmp_path, users=1000, colour="blue")


def test_a_successes_only_log_keeps_the_same_world_and_only_converted_shares(world, tmp_path):
    folder, summary, tables, _ = world
    other = simulate_world(tmp_path, users=USERS, seed=SEED, log="successes-only")
    converted = {r["share_id"] for r in tables["purchases.csv"] if r["share_id"]}
    kept = _rows(tmp_path, "shares.csv")
    assert {r["share_id"] for r in kept} == converted and len(kept) == other["shares_logged"] < summary["shares"]
    assert [r for r in tables["shares.csv"] if r["share_id"] in converted] == kept  # the same rows, in order
    for name in ("purchases.csv", "products.csv", "social.csv", "truth/influence.csv", "truth/users.csv"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name
    with pytest.raises(ValueError, match="log must be one of"):
        simulate_world(tmp_path / "x", users=USERS, seed=SEED, log="failures-only")
