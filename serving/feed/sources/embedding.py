"""Personalised candidates: nearest products to the user's vector in the FAISS index."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving.feed.query import Candidates, FeedQuery, Reason
from sharerank.serving.feed.sources.base import add_item_scores, as_array

_PERSONALIZED = (Reason("PERSONALIZED", "picked for you from your purchases and your network"),)
_NEIGHBOURHOOD = (Reason("PERSONALIZED", "picked for you from what your friends buy"),)


def search_available(model: ModelBundle, vector: np.ndarray, depth: int, exclude: np.ndarray,
                     categories: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best in-stock products (of ``categories``, when given) by inner product with ``vector``.

    ``exclude`` (small sets: bought, excluded, served) never comes back (see
    :meth:`~sharerank.models.artifact.index.ProductIndex.search_excluding`). Stock and category are checked on the
    results, so the search widens (doubling k) until ``depth`` products qualify or the catalogue is exhausted.
    Returns ``(rows, scores)``, best first.
    """
    wanted = list(categories)
    index = model.index
    k = depth * (4 if wanted else 1) + 8
    while True:
        scores, rows = index.search_excluding(vector, k, exclude)
        eligible = model.in_stock[rows]
        if wanted:
            eligible &= np.isin(model.category[rows], wanted)
        if not eligible.all():
            rows, scores = rows[eligible], scores[eligible]
        if len(rows) >= depth or k >= index.size:
            return rows[:depth], scores[:depth]
        k = min(2 * k, index.size)


@lru_cache(maxsize=4096)
def _category_prior_reasons(category: str) -> tuple[Reason, ...]:
    return (Reason("CATEGORY_PRIOR", f"new in {category}" if category else "new in the catalogue"),)


def category_prior_reason(model: ModelBundle, row: int) -> Reason:
    return _category_prior_reasons(model.category[row])[0]


class EmbeddingSource:
    """Top products by inner product with ``query.user_vector`` (see :func:`search_available`), scored with
    the model's item-item part too where it has one.

    Products the model never trained on rank by their category's prior embedding; their reason says so.
    """

    name = "Embedding"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_vector is not None

    def fetch(self, query: FeedQuery) -> Candidates:
        model = query.model
        rows, scores = search_available(model, query.user_vector, query.depth, as_array(query.blocked),
                                        query.categories)
        scores = add_item_scores(query, rows, scores.astype(np.float64))
        if not query.explain:
            return Candidates.from_source(rows, scores, self.name)
        reasons = [_NEIGHBOURHOOD if query.neighbours else _PERSONALIZED] * len(rows)
        prior = model.category_prior[rows]
        if prior.any():
            category = model.category
            for i in np.flatnonzero(prior).tolist():
                reasons[i] = _category_prior_reasons(category[rows[i]])
        return Candidates.from_source(rows, scores, self.name, reasons)
