"""Feed stages, each alone on a hand-built query, and the pipeline over a tiny hand-built model."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
import scipy.sparse as sp

from sharerank.dataset.reader import read_products as read_catalogue
from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.artifact.catalogue import apply_catalogue
from sharerank.models.artifact.index import ProductIndex
from sharerank.serving.api import feed as marshal
from sharerank.serving.api.page_token import MAX_PAGE_TOKEN_CHARS, PageTokenCodec
from sharerank.serving.errors import ServiceError
from sharerank.serving.feed.caps.sharer import SharerCap
from sharerank.serving.feed.filters.already_bought import AlreadyBoughtFilter
from sharerank.serving.feed.filters.category import CategoryFilter
from sharerank.serving.feed.filters.duplicate import DuplicateFilter
from sharerank.serving.feed.filters.excluded import ExcludedFilter
from sharerank.serving.feed.filters.out_of_stock import OutOfStockFilter
from sharerank.serving.feed.filters.served import ServedFilter
from sharerank.serving.feed.hydrators.live_state import LiveStateHydrator
from sharerank.serving.feed.hydrators.user_vector import UserVectorHydrator
from sharerank.serving.feed.pipeline import FeedPage, FeedPipeline
from sharerank.serving.feed.query import Candidate, Candidates, FeedQuery, Reason
from sharerank.serving.feed.rerankers.diversity import (
    CATEGORY_DECAY,
    DIVERSITY_FLOOR,
    SELLER_DECAY,
    DiversityReranker,
)
from sharerank.serving.feed.scorers.long_tail import LONG_TAIL_BOOST, LongTailScorer
from sharerank.serving.feed.scorers.model import ModelScorer
from sharerank.serving.feed.scorers.social_proof import (
    FATIGUE_HALF_SHARES,
    FRIENDS_BOUGHT_WEIGHT,
    HALF_LIFE_S,
    MAX_SOCIAL_BOOST,
    RECENCY_FLOOR,
    SHARED_TO_YOU_WEIGHT,
    SocialProofScorer,
)
from sharerank.serving.feed.sources.embedding import EmbeddingSource
from sharerank.serving.feed.sources.friends_bought import FriendsBoughtSource
from sharerank.serving.feed.sources.popular import PopularSource
from sharerank.serving.feed.sources.shared_to_you import SharedToYouSource
from sharerank.serving.online_store import InMemoryOnlineStore, OnlineStoreError, Purchase
from sharerank.serving.online_store.base import FriendsBought, ReceivedShare, Share, ShareFatigue
from sharerank.v1 import feed_service_pb2, internal_pb2, reason_pb2

NOW = 1.7e9


@pytest.fixture
def bundle() -> ModelBundle:
    # Six products on a line of decreasing affinity for user u0; p3 is out of stock; u0 bought p0.
    # u1 is known but bought nothing; u0 and u1 are friends. p1 is the popularity head (the top 20%).
    products = np.array([f"p{i}" for i in range(6)], dtype=object)
    product_embedding = np.array([[6, 0], [5, 0], [4, 0], [3, 0], [2, 0], [1, 0]], dtype=np.float32)
    user_embedding = np.array([[1, 0], [0, 1]], dtype=np.float32)
    history = sp.csr_matrix(([1.0], ([0], [0])), shape=(2, 6))
    return ModelBundle(
        users=np.array(["u0", "u1"], dtype=object), products=products,
        category=np.array(["A", "A", "B", "B", "A", "B"], dtype=object),
        in_stock=np.array([True, True, True, False, True, True]),
        user_embedding=user_embedding, product_embedding=product_embedding, history=history,
        friends=sp.csr_matrix(([1.0, 1.0], ([0, 1], [1, 0])), shape=(2, 2)),
        popularity=np.array([1, 9, 3, 8, 7, 2]), index=ProductIndex.build(product_embedding),
        info={"model_type": "hand-built"},
        seller=np.array(["s0", "s0", "s1", "s1", "s0", ""], dtype=object))


def query(bundle: ModelBundle, **changes) -> FeedQuery:
    base = FeedQuery(user_id="u0", page_size=3, categories=frozenset(), exclude_products=frozenset(),
                     explain=False, model=bundle, user_row=0, now=NOW, user_vector=bundle.user_embedding[0])
    return base.with_(**changes)


def candidates(*rows: int, scores: list[float] | None = None) -> list[Candidate]:
    scores = scores if scores is not None else [float(-r) for r in rows]
    return [Candidate(r, s, "test") for r, s in zip(rows, scores, strict=True)]


def products_of(items: list[Candidate]) -> list[int]:
    return [c.product for c in items]


# Candidates: the columns the stages pass on


def test_candidates_read_like_a_list_of_candidate() -> None:
    reason = (Reason("PERSONALIZED", "for you"),)
    ranked = Candidates.from_source(np.array([4, 2, 7]), np.array([3.0, 2.0, 1.0], dtype=np.float32), "Embedding",
                                    reason)
    social = Candidates.from_source(np.array([2]), np.array([0.5]), "FriendsBought")
    both = Candidates.concat([ranked, social])
    assert list(both) == [Candidate(4, 3.0, "Embedding", reason), Candidate(2, 2.0, "Embedding", reason),
                          Candidate(7, 1.0, "Embedding", reason), Candidate(2, 0.5, "FriendsBought")]
    assert len(both) == 4 and both[3] == Candidate(2, 0.5, "FriendsBought") and both[-1] == both[3]
    assert type(both[0].product) is int and type(both[0].score) is float  # Python scalars, as before
    assert list(both[1:3]) == list(both)[1:3]
    assert list(both.take(np.array([3, 0]))) == [both[3], both[0]] and list(both.take([1])) == [both[1]]
    kept, removed = both.split(np.array([True, False, True, False]))
    assert list(kept) == [both[0], both[2]] and list(removed) == [both[1], both[3]]
    assert Candidates.of(both) is both and list(Candidates.of(list(both))) == list(both)
    assert len(Candidates.concat([])) == 0 and Candidates.concat([social]) is social
    assert both.rows.dtype == np.int64 and both.scores.dtype == np.float64 and both.row_list == [4, 2, 7, 2]


def test_query_with_changes_a_copy_and_checks_field_names(bundle) -> None:
    base = query(bundle)
    changed = base.with_(page_size=7, bought=frozenset({1}))
    assert (changed.page_size, changed.bought, changed.user_id) == (7, frozenset({1}), "u0")
    assert (base.page_size, base.bought) == (3, frozenset())
    with pytest.raises(TypeError, match="no_such_field"):
        base.with_(no_such_field=1)


# Filters


def test_already_bought_filter_says_what_it_removed(bundle) -> None:
    result = AlreadyBoughtFilter().apply(query(bundle, bought=frozenset({0, 2})), candidates(0, 1, 2, 3))
    assert products_of(result.kept) == [1, 3] and products_of(result.removed) == [0, 2]


def test_excluded_filter(bundle) -> None:
    result = ExcludedFilter().apply(query(bundle, exclude_products=frozenset({1})), candidates(0, 1))
    assert products_of(result.removed) == [1]


def test_out_of_stock_filter(bundle) -> None:
    result = OutOfStockFilter().apply(query(bundle), candidates(2, 3, 4))
    assert products_of(result.kept) == [2, 4] and products_of(result.removed) == [3]


def test_category_filter_is_a_no_op_without_categories(bundle) -> None:
    assert len(CategoryFilter().apply(query(bundle), candidates(0, 2)).kept) == 2
    result = CategoryFilter().apply(query(bundle, categories=frozenset({"B"})), candidates(0, 2, 5))
    assert products_of(result.kept) == [2, 5] and products_of(result.removed) == [0]


def test_served_filter_removes_what_earlier_pages_served(bundle) -> None:
    result = ServedFilter().apply(query(bundle, served=frozenset({1, 4})), candidates(1, 2, 4, 5))
    assert products_of(result.kept) == [2, 5] and products_of(result.removed) == [1, 4]


def test_duplicate_filter_keeps_the_first_copy(bundle) -> None:
    found = [Candidate(1, 5.0, "Embedding"), Candidate(2, 4.0, "Embedding"), Candidate(1, 5.0, "FriendsBought")]
    result = DuplicateFilter().apply(query(bundle), found)
    assert [(c.product, c.source) for c in result.kept] == [(1, "Embedding"), (2, "Embedding")]
    assert [(c.product, c.source) for c in result.removed] == [(1, "FriendsBought")]
    many = Candidates.concat([Candidates.from_source(np.array([5, 3, 1]), np.zeros(3), "Embedding"),
                              Candidates.from_source(np.array([1, 4, 5, 1]), np.ones(4), "SharedToYou")])
    result = DuplicateFilter().apply(query(bundle), many)
    assert [(c.product, c.source) for c in result.kept] == [(5, "Embedding"), (3, "Embedding"), (1, "Embedding"),
                                                           (4, "SharedToYou")]
    assert products_of(result.removed) == [1, 5, 1]
    assert len(DuplicateFilter().apply(query(bundle), candidates(2, 1)).removed) == 0


# Hydrators


def test_live_state_hydrator_reads_purchases_and_social_proof(bundle) -> None:
    store = InMemoryOnlineStore()
    store.record_purchases([Purchase("u0", "p4", 1.0), Purchase("u0", "not-in-catalogue", 2.0)])
    store.record_friend_purchases([("u0", Purchase("u1", "p5", 10.0)), ("u0", Purchase("f2", "p5", 11.0)),
                                   ("u0", Purchase("u1", "gone", 12.0))])
    store.record_shares([Share("u1", "u0", "p2", 20.0), Share("f2", "u0", "p2", 21.0),
                         Share("f3", "u0", "gone", 22.0)])
    hydrated = LiveStateHydrator(store).hydrate(query(bundle, now=0.0))
    assert hydrated.bought == frozenset({0, 4}) and hydrated.degraded == ()
    assert hydrated.friends_bought == {5: FriendsBought("p5", 2, "f2", 11.0)}
    assert hydrated.shared == {2: ReceivedShare("p2", "f2", 21.0)}  # the newest share of each product
    assert set(hydrated.sharers) == {"f2", "f3"}  # sharers of unknown products still count (cold start)
    assert hydrated.now > 0


def test_live_state_hydrator_reads_the_users_share_fatigue(bundle) -> None:
    store = InMemoryOnlineStore(fatigue_window_s=3600.0, clock=lambda: NOW)
    store.record_shares([Share("f2", "u0", "p2", NOW - 60, "e1"), Share("f2", "u0", "gone", NOW - 30, "e2"),
                         Share("f3", "u0", "p4", NOW - 7200, "e3")])  # e3: before the window
    hydrated = LiveStateHydrator(store).hydrate(query(bundle))
    # Shares of products the model does not know still tire the user.
    assert hydrated.fatigue == ShareFatigue(2, {"f2": 2})
    assert LiveStateHydrator(BrokenStore()).hydrate(query(bundle)).fatigue == ShareFatigue()


def test_live_state_hydrator_reads_every_purchase_when_the_live_read_is_cut(bundle) -> None:
    store = InMemoryOnlineStore()
    store.record_purchases([Purchase("u0", f"p{i}", float(i)) for i in (2, 4, 5)])
    hydrated = LiveStateHydrator(store, limit=2).hydrate(query(bundle))
    assert hydrated.bought == frozenset({0, 2, 4, 5})


class BrokenStore(InMemoryOnlineStore):
    """Fault injection: every read fails as if Redis were down."""

    def get_live_state(self, user_id, limit=100):
        raise OnlineStoreError("connection refused")

    def get_purchases_many(self, user_ids):
        raise OnlineStoreError("connection refused")


def test_live_state_hydrator_fails_open_and_marks_the_query_degraded(bundle) -> None:
    hydrated = LiveStateHydrator(BrokenStore()).hydrate(query(bundle))
    assert hydrated.bought == frozenset({0}) and hydrated.degraded == ("LiveState",)
    assert not hydrated.friends_bought and not hydrated.shared and not hydrated.sharers


def test_user_vector_is_the_users_own_embedding_when_they_bought(bundle) -> None:
    hydrated = UserVectorHydrator().hydrate(query(bundle, user_vector=None))
    assert hydrated.user_vector.tolist() == [1.0, 0.0] and hydrated.neighbours == 0


def test_cold_user_ranks_by_their_friends_embeddings(bundle) -> None:
    # u1 bought nothing; their friend u0 did, so u1's feed comes from u0's embedding, not u1's own.
    known = UserVectorHydrator().hydrate(query(bundle, user_id="u1", user_row=1, user_vector=None))
    assert known.user_vector.tolist() == [1.0, 0.0] and known.neighbours == 1
    # An unknown user is placed by who shared to them; sharers the model does not know, or who never
    # bought anything (u1), carry no taste.
    unknown = query(bundle, user_id="new", user_row=None, user_vector=None, sharers=("stranger", "u1", "u0"))
    hydrated = UserVectorHydrator().hydrate(unknown)
    assert hydrated.user_vector.tolist() == [1.0, 0.0] and hydrated.neighbours == 1
    nothing = UserVectorHydrator().hydrate(unknown.with_(sharers=("stranger", "u1")))
    assert nothing.user_vector is None and nothing.neighbours == 0


# Sources


def test_embedding_source_ranks_by_inner_product_and_skips_unavailable(bundle) -> None:
    found = EmbeddingSource().fetch(query(bundle, bought=frozenset({0})))
    assert products_of(found) == [1, 2, 4, 5]  # p0 bought, p3 out of stock
    assert [c.score for c in found] == [5.0, 4.0, 2.0, 1.0]


def test_embedding_source_skips_what_earlier_pages_served(bundle) -> None:
    found = EmbeddingSource().fetch(query(bundle, bought=frozenset({0}), served=frozenset({1, 4})))
    assert products_of(found) == [2, 5]


def test_embedding_source_widens_until_the_category_fills_the_page(bundle) -> None:
    found = EmbeddingSource().fetch(query(bundle, categories=frozenset({"B"}), page_size=2))
    assert products_of(found) == [2, 5]


def test_popular_source_serves_users_with_nothing_known(bundle) -> None:
    unknown = query(bundle, user_id="new", user_row=None, user_vector=None, explain=True)
    assert not EmbeddingSource().applies(unknown) and PopularSource().applies(unknown)
    found = PopularSource().fetch(unknown)
    assert products_of(found) == [1, 4, 2, 5, 0]  # by popularity, p3 out of stock
    assert found[0].score == 1.0 and found[1].score == pytest.approx(7 / 9)
    assert found[0].reasons[0].text == "popular in A"
    assert products_of(PopularSource().fetch(unknown.with_(served=frozenset({1, 2})))) == [4, 5, 0]


def test_social_sources_add_products_outside_the_top_k(bundle) -> None:
    social = query(bundle, page_size=1, bought=frozenset({0}),
                   friends_bought={5: FriendsBought("p5", 2, "u1", NOW)}, shared={4: ReceivedShare("p4", "u1", NOW)})
    assert products_of(EmbeddingSource().fetch(social)) == [1, 2, 4, 5][:social.depth]
    assert [(c.product, c.score) for c in FriendsBoughtSource().fetch(social)] == [(5, 1.0)]
    assert [(c.product, c.score) for c in SharedToYouSource().fetch(social)] == [(4, 2.0)]
    assert not FriendsBoughtSource().applies(query(bundle)) and not SharedToYouSource().applies(query(bundle))
    cold = social.with_(user_vector=None)  # no vector: scored like the popular source
    assert [c.score for c in FriendsBoughtSource().fetch(cold)] == [pytest.approx(2 / 9)]


# Scorers


def test_model_scorer_rescales_the_ranked_pool_to_unit_range(bundle) -> None:
    scores = ModelScorer().score(query(bundle), candidates(1, 2, 4, 5), np.array([5.0, 4.0, 2.0, 1.0]))
    assert scores.tolist() == pytest.approx([1.0, 0.75, 0.25, 0.0])
    # page_size 1 → depth 4: the 4th best raw score (3) is 0, products below it (social) clip at 0.
    scores = ModelScorer().score(query(bundle, page_size=1), candidates(0, 1, 2, 3, 4, 5),
                                 np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]))
    assert scores.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0])
    assert ModelScorer().score(query(bundle), candidates(1, 2), np.array([3.0, 3.0])).tolist() == [1.0, 1.0]


def test_social_proof_scorer_adds_a_bounded_decaying_boost_in_input_order(bundle) -> None:
    week = HALF_LIFE_S
    social = query(bundle, friends_bought={1: FriendsBought("p1", 3, "f", NOW),
                                           2: FriendsBought("p2", 1, "f", NOW - week),
                                           4: FriendsBought("p4", 1, "f", NOW - 50 * week),
                                           5: FriendsBought("p5", 3, "f", NOW)},
                   shared={0: ReceivedShare("p0", "s", NOW), 5: ReceivedShare("p5", "s", NOW)})
    found = candidates(3, 1, 2, 4, 0, 5)
    scores = SocialProofScorer().score(social, found, np.full(6, 0.5))
    assert scores.tolist() == pytest.approx([
        0.5,  # no social proof
        0.5 + FRIENDS_BOUGHT_WEIGHT * math.log2(4),  # 3 friends, now: 0.6
        0.5 + FRIENDS_BOUGHT_WEIGHT * 0.5,  # 1 friend a half-life ago
        0.5 + FRIENDS_BOUGHT_WEIGHT * RECENCY_FLOOR,  # long ago: the floor
        0.5 + SHARED_TO_YOU_WEIGHT,
        0.5 + MAX_SOCIAL_BOOST,  # 0.6 + 0.4 capped
    ])
    assert SocialProofScorer().score(query(bundle), found, np.full(6, 0.5)).tolist() == [0.5] * 6
    # Every copy of a product gets its boost (the scorer does not assume de-duplicated input).
    twice = SocialProofScorer().score(social, candidates(5, 3, 5), np.zeros(3))
    assert twice.tolist() == pytest.approx([MAX_SOCIAL_BOOST, 0.0, MAX_SOCIAL_BOOST])
    assert SocialProofScorer.explains(social) and not SocialProofScorer.explains(query(bundle))
    texts = {p: [r.text for r in SocialProofScorer.explain(social, p)] for p in (1, 2, 3, 5)}
    assert texts == {1: ["3 friends bought this"], 2: ["1 friend bought this"], 3: [],
                     5: ["3 friends bought this", "shared to you by s"]}
    assert [r.kind for r in SocialProofScorer.explain(social, 5)] == ["FRIENDS_BOUGHT", "SHARED_TO_YOU"]


def test_social_proof_of_a_share_falls_with_the_users_fatigue(bundle) -> None:
    social = query(bundle, shared={5: ReceivedShare("p5", "spammer", NOW), 4: ReceivedShare("p4", "friend", NOW)},
                   friends_bought={4: FriendsBought("p4", 1, "f", NOW)})
    found = candidates(5, 4)
    fresh = SocialProofScorer().score(social, found, np.zeros(2))
    assert fresh.tolist() == pytest.approx([SHARED_TO_YOU_WEIGHT, SHARED_TO_YOU_WEIGHT + FRIENDS_BOUGHT_WEIGHT])
    # 20 shares received lately, all from the spammer: their shares count twice, friends' purchases not at all.
    half = FATIGUE_HALF_SHARES
    tired = social.with_(fatigue=ShareFatigue(20, {"spammer": 20}))
    assert SocialProofScorer().score(tired, found, np.zeros(2)).tolist() == pytest.approx([
        SHARED_TO_YOU_WEIGHT * half / (half + 40), SHARED_TO_YOU_WEIGHT * half / (half + 20) + FRIENDS_BOUGHT_WEIGHT])
    assert SocialProofScorer(fatigue_half_shares=20.0).score(
        social.with_(fatigue=ShareFatigue(20, {"friend": 20})), candidates(4), np.zeros(1)).tolist() == \
        pytest.approx([SHARED_TO_YOU_WEIGHT / 3 + FRIENDS_BOUGHT_WEIGHT])
    with pytest.raises(ValueError):
        SocialProofScorer(fatigue_half_shares=0)


def test_long_tail_scorer_lifts_products_outside_the_popularity_head(bundle) -> None:
    assert bundle.long_tail.tolist() == [True, False, True, True, True, True]  # p1 is the top 20%
    scores = LongTailScorer().score(query(bundle), candidates(1, 4), np.array([0.95, 0.9]))
    assert scores.tolist() == pytest.approx([0.95, 0.9 + LONG_TAIL_BOOST])  # the tail product now ranks first


# Re-ranker


def test_diversity_reranker_discounts_repeated_categories_and_sellers(bundle) -> None:
    # Categories A A B A B, sellers s0 s0 s1 s0 "": without re-ranking the page would start A A A.
    found = candidates(0, 1, 2, 4, 5)
    order, scores = DiversityReranker().rerank(query(bundle, page_size=4), found, np.array([1.0, 0.9, 0.7, 0.85, 0.6]))
    # p0; then p2 (0.7) beats p1 (0.9 · 0.7 · 0.8 = 0.504); then p1 beats p5 (0.6 · 0.7 = 0.42); then p5 beats p4
    # (0.85 · 0.7² · 0.8² = 0.267).
    assert (CATEGORY_DECAY, SELLER_DECAY, DIVERSITY_FLOOR) == (0.7, 0.8, 0.1)
    assert [found[i].product for i in order] == [0, 2, 1, 5, 4]
    assert scores[:4].tolist() == pytest.approx([1.0, 0.7, 0.504, 0.42])
    assert scores[4] == 0.85  # past the page: undiscounted, only counts towards has_more
    # Past the page: score order, ties by position.
    order, scores = DiversityReranker().rerank(query(bundle, page_size=1), found, np.array([0.5, 0.9, 0.5, 0.7, 0.5]))
    assert order.tolist() == [1, 3, 0, 2, 4] and scores.tolist() == [0.9, 0.7, 0.5, 0.5, 0.5]
    assert DiversityReranker().rerank(query(bundle), [], np.empty(0))[0].tolist() == []


def test_diversity_discount_has_a_floor_and_keeps_the_order_within_one_category(bundle) -> None:
    # All of category A and seller s0 (as under a category filter): everyone is discounted alike, order kept.
    found = candidates(0, 1, 4)
    order, scores = DiversityReranker().rerank(query(bundle), found, np.array([1.0, 0.9, 0.8]))
    assert order.tolist() == [0, 1, 2]
    assert scores.tolist() == pytest.approx([1.0, 0.9 * CATEGORY_DECAY * SELLER_DECAY,
                                             max(DIVERSITY_FLOOR, (CATEGORY_DECAY * SELLER_DECAY) ** 2) * 0.8])
    many = [Candidate(0, 1.0, "test")] * 12  # the twelfth copy is far below the floor without it
    _, scores = DiversityReranker().rerank(query(bundle, page_size=12), many, np.ones(12))
    assert scores[-1] == DIVERSITY_FLOOR


def naive_diversity(scores: np.ndarray, categories: np.ndarray, sellers: np.ndarray, k: int) -> list[int]:
    """The definition, slot by slot: the best discounted score among the rest (ties: the earlier one)."""
    page: list[int] = []
    for _ in range(min(k, len(scores))):
        best, best_i = -1.0, -1
        for i in range(len(scores)):
            if i in page:
                continue
            n_c = sum(categories[j] == categories[i] for j in page) if categories[i] >= 0 else 0
            n_s = sum(sellers[j] == sellers[i] for j in page) if sellers[i] >= 0 else 0
            value = scores[i] * max(DIVERSITY_FLOOR, CATEGORY_DECAY ** n_c * SELLER_DECAY ** n_s)
            if value > best:
                best, best_i = value, i
        page.append(best_i)
    return page


@pytest.mark.parametrize("seed", range(5))
def test_diversity_reranker_matches_the_naive_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    world = random_bundle(rng, n)
    scores = rng.random(n)
    found = candidates(*range(n))
    order, reranked = DiversityReranker().rerank(
        FeedQuery(user_id="u", page_size=15, categories=frozenset(), exclude_products=frozenset(), explain=False,
                  model=world), found, scores)
    assert order[:15].tolist() == naive_diversity(scores, world.category_codes, world.seller_codes, 15)
    assert sorted(order.tolist()) == list(range(n))
    values = reranked[:15].tolist()
    assert values == sorted(values, reverse=True)  # discounts only grow, so the page reads best first


def random_bundle(rng: np.random.Generator, n: int) -> ModelBundle:
    embedding = rng.normal(size=(n, 4)).astype(np.float32)
    return ModelBundle(
        users=np.array(["u"], dtype=object), products=np.array([f"p{i}" for i in range(n)], dtype=object),
        category=rng.choice(np.array(["A", "B", "C", ""], dtype=object), n), in_stock=np.ones(n, dtype=bool),
        user_embedding=rng.normal(size=(1, 4)).astype(np.float32), product_embedding=embedding,
        history=sp.csr_matrix((1, n)), friends=sp.csr_matrix((1, 1)), popularity=rng.integers(0, 9, n),
        index=ProductIndex.build(embedding), seller=rng.choice(np.array(["s0", "s1", "s2", ""], dtype=object), n))


# The pipeline


# Caps


SPAM = {1: ReceivedShare("p1", "u42", NOW), 2: ReceivedShare("p2", "u42", NOW - 1),
        4: ReceivedShare("p4", "u42", NOW - 2), 5: ReceivedShare("p5", "u7", NOW - 3)}


def test_sharer_cap_keeps_each_sharers_best_and_says_more_come_later(bundle) -> None:
    found = Candidates.of(candidates(0, 1, 2, 4, 5))
    scores = np.array([0.1, 0.5, 0.9, 0.7, 0.2])
    result = SharerCap(2).apply(query(bundle, shared=SPAM), found, scores)
    assert products_of(result.kept) == [0, 2, 4, 5] and products_of(result.removed) == [1]
    assert result.scores.tolist() == [0.1, 0.9, 0.7, 0.2]
    later = Reason("SHARER_CAPPED", "more from u42 later")
    assert [c.reasons for c in result.kept] == [(), (later,), (later,), ()]
    # Earlier pages of the session spent part of u42's allowance (the page token says how much).
    spent = SharerCap(2).apply(query(bundle, shared=SPAM, served_by_sharer={"u42": 1}), found, scores)
    assert products_of(spent.kept) == [0, 2, 5] and products_of(spent.removed) == [1, 4]
    done = SharerCap(2).apply(query(bundle, shared=SPAM, served_by_sharer={"u42": 2, "u7": 2}), found, scores)
    assert products_of(done.kept) == [0] and products_of(done.removed) == [1, 2, 4, 5]
    assert [c.reasons for c in done.kept] == [()]
    untouched = SharerCap(2).apply(query(bundle), found, scores)
    assert untouched.kept is found and len(untouched.removed) == 0
    with pytest.raises(ValueError):
        SharerCap(0)


def test_shared_to_you_source_takes_no_more_than_a_sharer_may_still_show(bundle) -> None:
    social = query(bundle, shared=SPAM, bought=frozenset({0}))
    assert products_of(SharedToYouSource(2).fetch(social)) == [1, 2, 5]
    assert products_of(SharedToYouSource(2).fetch(social.with_(served=frozenset({1})))) == [2, 4, 5]
    assert products_of(SharedToYouSource(2).fetch(social.with_(served_by_sharer={"u42": 2}))) == [5]


def test_pipeline_caps_each_sharer_across_the_pages_of_a_feed(bundle) -> None:
    store = InMemoryOnlineStore()
    store.record_shares([Share(s.sharer_id, "u0", s.product_id, s.ts, f"e{row}") for row, s in SPAM.items()])
    pipeline = FeedPipeline(store, shares_per_sharer=2)
    served: list[int] = []
    by_sharer: dict[str, int] = {}
    reasons: dict[int, list[str]] = {}
    while True:
        page = pipeline.run(model=bundle, user_id="u0", page_size=1, served=frozenset(served),
                            served_by_sharer=by_sharer, explain=True)
        served += products_of(page.items)
        reasons.update((c.product, [r.text for r in c.reasons]) for c in page.items)
        by_sharer = dict(page.served_by_sharer)
        if not page.has_more:
            break
    # p1, p2, p4 are u42's (two shown: the best two), p5 is u7's; p0 was bought, p3 is out of stock.
    assert served == [1, 2, 5] and by_sharer == {"u42": 2, "u7": 1}
    assert reasons[1] == ["shared to you by u42", "more from u42 later", "picked for you from your purchases and "
                          "your network"]
    assert "more from u7 later" not in reasons[5]


def test_pipeline_pages_never_repeat(bundle) -> None:
    pipeline = FeedPipeline(InMemoryOnlineStore())
    first = pipeline.run(model=bundle, user_id="u0", page_size=2)
    second = pipeline.run(model=bundle, user_id="u0", page_size=2, served=frozenset(products_of(first.items)))
    assert products_of(first.items) == [1, 2] and first.has_more
    assert products_of(second.items) == [4, 5] and not second.has_more


def test_pipeline_cites_live_social_proof(bundle) -> None:
    store = InMemoryOnlineStore()
    store.record_friend_purchases([("u0", Purchase("u1", "p5", NOW)), ("u0", Purchase("f", "p5", NOW))])
    store.record_shares([Share("u1", "u0", "p4", NOW)])
    page = FeedPipeline(store).run(model=bundle, user_id="u0", page_size=4, explain=True)
    reasons = {c.product: [r.text for r in c.reasons] for c in page.items}
    assert reasons[5][0] == "2 friends bought this" and reasons[4][0] == "shared to you by u1"
    assert reasons[1] == ["picked for you from your purchases and your network"]


def test_pipeline_serves_a_cold_user_from_the_people_who_shared_to_them(bundle) -> None:
    store = InMemoryOnlineStore()
    store.record_shares([Share("u0", "newcomer", "p5", NOW)])
    page = FeedPipeline(store).run(model=bundle, user_id="newcomer", page_size=3, explain=True)
    assert products_of(page.items)[0] == 0  # u0's taste; popularity would start with p1
    assert page.items[0].reasons[0].text == "picked for you from what your friends buy"
    nobody = FeedPipeline(InMemoryOnlineStore()).run(model=bundle, user_id="nobody", page_size=3)
    assert products_of(nobody.items)[0] == 1  # nothing known: most popular


class CountingStore(InMemoryOnlineStore):
    """Counts reads: each is one Redis round trip on the production store."""

    reads = 0

    def get_live_state(self, user_id, limit=100):
        self.reads += 1
        return super().get_live_state(user_id, limit)

    def get_purchases_many(self, user_ids):
        self.reads += 1
        return super().get_purchases_many(user_ids)


def test_pipeline_reads_the_online_store_once_per_feed(bundle) -> None:
    store = CountingStore()
    store.record_purchases([Purchase("u0", "p3", NOW)])
    store.record_friend_purchases([("u0", Purchase("u1", "p5", NOW))])
    store.record_shares([Share("u1", "u0", "p4", NOW)])
    pipeline = FeedPipeline(store)
    for user_id in ("u0", "newcomer"):
        pipeline.run(model=bundle, user_id=user_id, page_size=4, explain=True)
    assert store.reads == 2


def test_pipeline_fails_open_without_the_online_store(bundle) -> None:
    page = FeedPipeline(BrokenStore()).run(model=bundle, user_id="u0", page_size=2)
    assert products_of(page.items) == [1, 2] and page.degraded == ("LiveState",)


# Cold-start products: the catalogue's category prior


def test_catalogue_products_get_their_category_prior(bundle, tmp_path) -> None:
    (tmp_path / "products.csv").write_text("product_id,category,seller_id,in_stock\n"
                                           "p0,A,s0,1\nnew-b,B,s9,1\nnew-c,C,,1\nnew-gone,B,s9,0\n")
    extended = apply_catalogue(bundle, *read_catalogue(tmp_path / "products.csv"))
    assert len(bundle.products) == 6 and bundle.index.size == 6  # the loaded bundle is untouched
    assert extended.products.tolist()[6:] == ["new-b", "new-c", "new-gone"] and extended.index.size == 9
    b_mean, overall = (4 + 3 + 1) / 3, (6 + 5 + 4 + 3 + 2 + 1) / 6
    assert extended.product_embedding[6:, 0].tolist() == pytest.approx([b_mean, overall, b_mean])
    assert extended.category_prior.tolist() == [False] * 6 + [True] * 3
    assert extended.seller.tolist()[6:] == ["s9", "", "s9"] and extended.in_stock.tolist()[6:] == [True, True, False]
    assert extended.popularity.tolist()[6:] == [0, 0, 0] and extended.history.shape == (2, 9)
    page = FeedPipeline(InMemoryOnlineStore()).run(model=extended, user_id="u0", page_size=8, explain=True)
    reasons = {extended.products[c.product]: c.reasons[0] for c in page.items}
    assert "new-gone" not in reasons  # out of stock
    assert reasons["new-b"].kind == "CATEGORY_PRIOR" and reasons["new-b"].text == "new in B"
    assert reasons["new-c"].kind == "CATEGORY_PRIOR"
    assert apply_catalogue(bundle, *read_catalogue(tmp_path)) is not bundle  # a folder holding one works too


# Page tokens


TOKENS = PageTokenCodec("test-key")


def feed_request(token: str = "", page_size: int = 5) -> feed_service_pb2.GetFeedRequest:
    return feed_service_pb2.GetFeedRequest(user_id="u0", page_size=page_size, page_token=token)


def test_page_tokens_are_signed_and_bounded() -> None:
    """A token is honoured only under the key that signed it; a forged, altered or oversized one is refused
    before it is parsed (an unsigned 2.4 MB token used to be accepted and echoed back)."""
    token = internal_pb2.FeedPageToken(offset=2, request_hash=5, served_product_ids=["p1", "p2"])
    signed = TOKENS.encode(token)
    assert TOKENS.decode(signed) == token
    unsigned = base64.urlsafe_b64encode(token.SerializeToString()).decode()
    signature = signed.rpartition(".")[2]
    tampered = base64.urlsafe_b64encode(internal_pb2.FeedPageToken(offset=2, request_hash=5, served_product_ids=[
        "p9", "p2"]).SerializeToString()).decode() + "." + signature
    huge = TOKENS.encode(internal_pb2.FeedPageToken(served_product_ids=["x" * 100] * 900))
    assert huge == ""  # too long to issue: the feed ends instead
    for forged in (unsigned, tampered, PageTokenCodec("other-key").encode(token), signed + "x",
                   "A" * (MAX_PAGE_TOKEN_CHARS + 1)):
        with pytest.raises(ServiceError) as err:
            TOKENS.decode(forged)
        assert err.value.reason == "INVALID_PAGE_TOKEN" and len(err.value.message) < 200


def test_page_token_carries_what_was_served(bundle) -> None:
    first = marshal.parse_feed_request(feed_request(), TOKENS)
    page = FeedPage(items=candidates(1, 2), has_more=True, degraded=())
    token = marshal.feed_response(page, first, bundle.category, bundle.products, "7", TOKENS).next_page_token
    second = marshal.parse_feed_request(feed_request(token), TOKENS)
    assert second.served_product_ids == ("p1", "p2")
    page = FeedPage(items=candidates(4), has_more=True, degraded=())
    token = marshal.feed_response(page, second, bundle.category, bundle.products, "8", TOKENS).next_page_token
    assert marshal.parse_feed_request(feed_request(token), TOKENS).served_product_ids == ("p1", "p2", "p4")


def test_page_token_carries_what_each_sharer_served(bundle) -> None:
    first = marshal.parse_feed_request(feed_request(), TOKENS)
    assert first.served_by_sharer == {}
    page = FeedPage(items=candidates(1, 2), has_more=True, degraded=(), served_by_sharer={"u42": 2})
    token = marshal.feed_response(page, first, bundle.category, bundle.products, "7", TOKENS).next_page_token
    assert marshal.parse_feed_request(feed_request(token), TOKENS).served_by_sharer == {"u42": 2}
    # More served by sharers than served at all: not a token this service issued.
    bad = internal_pb2.FeedPageToken(offset=1, request_hash=first.request_hash, served_product_ids=["p1"],
                                     served_by_sharer={"u42": 2})
    with pytest.raises(ServiceError) as err:
        marshal.parse_feed_request(feed_request(TOKENS.encode(bad)), TOKENS)
    assert err.value.reason == "INVALID_PAGE_TOKEN"


def test_a_feed_ends_at_the_served_cap(bundle) -> None:
    served = [f"x{i}" for i in range(marshal.MAX_SERVED - 2)]
    request = marshal.parse_feed_request(feed_request(), TOKENS)
    token = internal_pb2.FeedPageToken(offset=len(served), request_hash=request.request_hash,
                                       served_product_ids=served)
    near_cap = marshal.parse_feed_request(feed_request(TOKENS.encode(token)), TOKENS)
    assert near_cap.page_size == 2  # cut to what the feed may still serve
    page = FeedPage(items=candidates(1, 2), has_more=True, degraded=())
    assert marshal.feed_response(page, near_cap, bundle.category, bundle.products, "7", TOKENS).next_page_token == ""
    token.served_product_ids.extend(["y1", "y2"])
    with pytest.raises(ServiceError) as err:
        marshal.parse_feed_request(feed_request(TOKENS.encode(token)), TOKENS)
    assert err.value.reason == "INVALID_PAGE_TOKEN"


def test_feed_response_items_and_reasons(bundle) -> None:
    reasons = (Reason("FRIENDS_BOUGHT", "2 friends bought this"), Reason("PERSONALIZED", "for you"))
    page = FeedPage(items=[Candidate(4, 0.75, "Embedding", reasons), Candidate(2, 0.5, "Embedding")],
                    has_more=False, degraded=())
    explained = marshal.feed_response(page, marshal.parse_feed_request(
        feed_service_pb2.GetFeedRequest(user_id="u0", page_size=2, explain=True), TOKENS), bundle.category,
        bundle.products, "7", TOKENS)
    assert [(i.product_id, i.score, i.category) for i in explained.items] == [("p4", 0.75, "A"), ("p2", 0.5, "B")]
    assert [(reason_pb2.ReasonKind.Name(r.kind), r.text) for r in explained.items[0].reasons] == [
        ("REASON_KIND_FRIENDS_BOUGHT", "2 friends bought this"), ("REASON_KIND_PERSONALIZED", "for you")]
    assert explained.next_page_token == "" and explained.model_version == "7" and not explained.items[1].reasons
    plain = marshal.feed_response(page, marshal.parse_feed_request(feed_request(page_size=2), TOKENS),
                                  bundle.category, bundle.products, "7", TOKENS)
    assert not plain.items[0].reasons and [i.product_id for i in plain.items] == ["p4", "p2"]
    empty = marshal.feed_response(FeedPage(items=[], has_more=False, degraded=()),
                                  marshal.parse_feed_request(feed_request(), TOKENS), bundle.category, bundle.products,
                                  "7", TOKENS)
    assert len(empty.items) == 0


def test_request_hash_is_stable() -> None:
    """Page tokens issued before an upgrade stay valid: the hash is blake2b-64 of each part and a separator."""
    import hashlib

    def reference(user_id: str, categories, excluded) -> int:
        digest = hashlib.blake2b(digest_size=8)
        for part in (user_id, *sorted(categories), "\x00", *sorted(excluded)):
            digest.update(part.encode())
            digest.update(b"\x1f")
        return int.from_bytes(digest.digest(), "little")

    for user, categories, excluded in (("u0", (), ()), ("ü", ("B", "A"), ("p9", "p1")), ("x", ("A",), ())):
        request = feed_service_pb2.GetFeedRequest(user_id=user, page_size=3, categories=categories,
                                                  exclude_product_ids=excluded)
        assert marshal.parse_feed_request(request, TOKENS).request_hash == reference(user, categories, excluded)
