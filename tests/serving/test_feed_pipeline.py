"""Feed stages, each alone on a hand-built query, and the pipeline over a tiny hand-built model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sharerank.models.bundle import ModelBundle
from sharerank.models.index import ProductIndex
from sharerank.serving.feed.filters.already_bought import AlreadyBoughtFilter
from sharerank.serving.feed.filters.category import CategoryFilter
from sharerank.serving.feed.filters.excluded import ExcludedFilter
from sharerank.serving.feed.filters.out_of_stock import OutOfStockFilter
from sharerank.serving.feed.hydrators.purchases import PurchasesHydrator
from sharerank.serving.feed.pipeline import FeedPipeline
from sharerank.serving.feed.query import Candidate, FeedQuery
from sharerank.serving.feed.sources.embedding import EmbeddingSource
from sharerank.serving.feed.sources.popular import PopularSource
from sharerank.serving.online_store import InMemoryOnlineStore, OnlineStoreError, Purchase


@pytest.fixture
def bundle() -> ModelBundle:
    # Six products on a line of decreasing affinity for user u0; p3 is out of stock; u0 bought p0.
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
        info={"model_type": "hand-built"})


def query(bundle: ModelBundle, **changes) -> FeedQuery:
    base = FeedQuery(user_id="u0", page_size=3, offset=0, categories=frozenset(), exclude_products=frozenset(),
                     explain=False, model=bundle, user_row=0)
    return base.with_(**changes)


def candidates(*rows: int) -> list[Candidate]:
    return [Candidate(r, float(-r), "test") for r in rows]


def test_already_bought_filter_says_what_it_removed(bundle) -> None:
    result = AlreadyBoughtFilter().apply(query(bundle, bought=frozenset({0, 2})), candidates(0, 1, 2, 3))
    assert [c.product for c in result.kept] == [1, 3] and [c.product for c in result.removed] == [0, 2]


def test_excluded_filter(bundle) -> None:
    result = ExcludedFilter().apply(query(bundle, exclude_products=frozenset({1})), candidates(0, 1))
    assert [c.product for c in result.removed] == [1]


def test_out_of_stock_filter(bundle) -> None:
    result = OutOfStockFilter().apply(query(bundle), candidates(2, 3, 4))
    assert [c.product for c in result.removed] == [3]


def test_category_filter_is_a_no_op_without_categories(bundle) -> None:
    assert len(CategoryFilter().apply(query(bundle), candidates(0, 2)).kept) == 2
    result = CategoryFilter().apply(query(bundle, categories=frozenset({"B"})), candidates(0, 2, 5))
    assert [c.product for c in result.kept] == [2, 5]


def test_hydrator_merges_history_and_live_purchases(bundle) -> None:
    store = InMemoryOnlineStore()
    store.record_purchases([Purchase("u0", "p4", 1.0), Purchase("u0", "not-in-catalogue", 2.0)])
    hydrated = PurchasesHydrator(store).hydrate(query(bundle))
    assert hydrated.bought == frozenset({0, 4}) and hydrated.degraded == ()


class BrokenStore(InMemoryOnlineStore):
    """Fault injection: every read fails as if Redis were down."""

    def get_purchases_many(self, user_ids):
        raise OnlineStoreError("connection refused")


def test_hydrator_fails_open_and_marks_the_query_degraded(bundle) -> None:
    hydrated = PurchasesHydrator(BrokenStore()).hydrate(query(bundle))
    assert hydrated.bought == frozenset({0}) and hydrated.degraded == ("Purchases",)


def test_embedding_source_ranks_by_inner_product_and_skips_unavailable(bundle) -> None:
    found = EmbeddingSource().fetch(query(bundle, bought=frozenset({0})))
    assert [c.product for c in found] == [1, 2, 4, 5]  # p0 bought, p3 out of stock
    assert [c.score for c in found] == [5.0, 4.0, 2.0, 1.0]


def test_embedding_source_widens_until_the_category_fills_the_page(bundle) -> None:
    found = EmbeddingSource().fetch(query(bundle, categories=frozenset({"B"}), page_size=2))
    assert [c.product for c in found] == [2, 5]


def test_popular_source_serves_unknown_users(bundle) -> None:
    unknown = query(bundle, user_id="new", user_row=None, explain=True)
    assert not EmbeddingSource().applies(unknown) and PopularSource().applies(unknown)
    found = PopularSource().fetch(unknown)
    assert [c.product for c in found] == [1, 4, 2, 5]  # by popularity, p3 out of stock
    assert found[0].reasons[0].text == "popular in A"


def test_pipeline_pages_without_repeats(bundle) -> None:
    pipeline = FeedPipeline(InMemoryOnlineStore())
    first = pipeline.run(model=bundle, user_id="u0", page_size=2)
    second = pipeline.run(model=bundle, user_id="u0", page_size=2, offset=2)
    assert [c.product for c in first.items] == [1, 2] and first.has_more
    assert [c.product for c in second.items] == [4, 5] and not second.has_more
