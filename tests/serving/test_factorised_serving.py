"""Linear models served in the one serving form: user vectors and product vectors in FAISS plus the item-item
part over what the user bought. Kept whole, what the feed's sources fetch and how they score it is the model's
own top of the ranking and its own scores; a live purchase moves the item-item part at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.models.recommenders.graph import interaction_matrix
from sharerank.models.recommenders.registry import spec
from sharerank.serving.feed.pipeline import FeedPipeline
from sharerank.serving.feed.query import Candidates, FeedQuery
from sharerank.serving.feed.similar import similar_products
from sharerank.serving.online_store import InMemoryOnlineStore, Purchase
from sharerank.training.bundle import build_bundle

DEPTH_PAGE = 20


@pytest.fixture(scope="module", params=["ease", "graphfilter", "itemknn"])
def served(request, tiny_world: Path):
    """``(name, model, bundle)``: the model fitted on every purchase of the world, its bundle built from its
    served form with the item-item part kept whole."""
    dataset = load_dataset(tiny_world)
    matrix = interaction_matrix(dataset.purchases, dataset.num_users, dataset.num_products)
    model = spec(request.param).load()().fit(matrix)
    factors = model.factors() if request.param == "itemknn" else model.factors(neighbours=dataset.num_products)
    return request.param, model, build_bundle(dataset, factors, {"model_type": request.param})


def _fetch(pipeline: FeedPipeline, bundle, user_id: str) -> tuple[FeedQuery, Candidates]:
    query = FeedQuery(user_id=user_id, page_size=DEPTH_PAGE, categories=frozenset(), exclude_products=frozenset(),
                      explain=False, model=bundle, user_row=bundle.user_rows.get(user_id))
    for hydrator in pipeline.hydrators:
        query = hydrator.hydrate(query)
    fetched = Candidates.concat([s.fetch(query) for s in pipeline.sources if s.applies(query)])
    return query, fetched


def test_the_sources_fetch_the_models_own_top_products_with_its_scores(served) -> None:
    name, model, bundle = served
    pipeline = FeedPipeline(InMemoryOnlineStore())
    users = np.flatnonzero(bundle.has_history)[:60]
    exact = model.score(users).numpy().astype(np.float64)
    for row, user in enumerate(users.tolist()):
        query, fetched = _fetch(pipeline, bundle, str(bundle.users[user]))
        first = {}
        for product, score in zip(fetched.row_list, fetched.scores.tolist(), strict=True):
            first.setdefault(product, score)  # the ranked sources come first (the feed keeps that copy)
        expected = exact[row].copy()
        expected[bundle.bought(user)] = -np.inf
        expected[~bundle.in_stock] = -np.inf
        best = np.argsort(-expected, kind="stable")[:query.depth]
        got = sorted(first, key=lambda p: -first[p])[:query.depth]
        tied = expected[best[-1]]  # products tied with the last of the top may stand in for one another
        assert set(got) - set(best) <= set(np.flatnonzero(np.isclose(expected, tied, rtol=1e-4, atol=1e-6)))
        np.testing.assert_allclose([first[p] for p in got], expected[got], rtol=1e-3,
                                   atol=1e-4 * np.abs(exact[row]).max())


def test_a_live_purchase_moves_the_item_item_part_of_the_next_feed(served) -> None:
    name, model, bundle = served
    store = InMemoryOnlineStore()
    pipeline = FeedPipeline(store)
    user = str(bundle.users[np.flatnonzero(bundle.has_history)[0]])
    before, _ = _fetch(pipeline, bundle, user)
    bought_now = int(np.setdiff1d(np.arange(len(bundle.products)), bundle.bought(bundle.user_rows[user]))[0])
    store.record_purchases([Purchase(user, str(bundle.products[bought_now]), 1.0)])
    after, fetched = _fetch(pipeline, bundle, user)
    assert bought_now in after.bought and bought_now not in fetched.row_list
    columns, weights = bundle.item_item_scores(np.fromiter(after.bought, dtype=np.int64))
    assert after.item_scores[0].tolist() == columns.tolist()
    np.testing.assert_allclose(after.item_scores[1], weights)
    row = bundle.item_item[bought_now]
    if row.nnz:  # the new purchase's row was added to the scores
        moved = row.indices[0]
        old = dict(zip(before.item_scores[0].tolist(), before.item_scores[1].tolist(), strict=True)).get(moved, 0.0)
        new = dict(zip(after.item_scores[0].tolist(), after.item_scores[1].tolist(), strict=True))[moved]
        assert new == pytest.approx(old + row.data[0], rel=1e-4, abs=1e-6)


def test_a_user_the_model_never_saw_is_served_by_what_they_bought_live(served) -> None:
    name, model, bundle = served
    store = InMemoryOnlineStore()
    middling = int(bundle.popular_order[len(bundle.products) // 2])  # far from the bestsellers
    store.record_purchases([Purchase("newcomer", str(bundle.products[middling]), 1.0)])
    page = FeedPipeline(store).run(model=bundle, user_id="newcomer", page_size=10)
    related = bundle.item_item[middling]
    strongest = related.indices[np.argsort(-related.data)]
    strongest = set(strongest[(strongest != middling) & bundle.in_stock[strongest]][:3].tolist())
    shown = {c.product for c in page.items}
    assert len(page.items) == 10 and middling not in shown
    assert strongest <= shown, "its strongest neighbours are on the page"


def test_similar_products_follow_the_item_item_part(served) -> None:
    name, model, bundle = served
    product = int(bundle.popular_order[0])
    items = similar_products(bundle, product, 5)
    assert items and product not in {c.product for c in items}
    scores = [c.score for c in items]
    assert scores == sorted(scores, reverse=True)
    vector = bundle.product_embedding[[c.product for c in items]] @ bundle.product_embedding[product]
    weights = np.asarray(bundle.item_item[product, [c.product for c in items]].todense()).ravel()
    np.testing.assert_allclose(scores, vector + weights, rtol=1e-4, atol=1e-6)


def test_the_registered_models_top_products_are_the_models_own(served) -> None:
    name, model, bundle = served
    users = np.flatnonzero(bundle.has_history)[:20]
    exact = model.score(users).numpy()
    for row, user in enumerate(users.tolist()):
        top, scores = bundle.top_products(bundle.user_embedding[user], bundle.bought(user), 10)
        expected = exact[row].copy()
        expected[bundle.bought(user)] = -np.inf
        np.testing.assert_allclose(scores, np.sort(expected)[::-1][:10], rtol=1e-3,
                                   atol=1e-4 * np.abs(exact[row]).max())
