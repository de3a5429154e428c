"""Personalised candidates: nearest products to the user's vector in the FAISS index."""

from __future__ import annotations

import numpy as np

from sharerank.models.bundle import ModelBundle
from sharerank.serving.feed.query import Candidate, FeedQuery, Reason
from sharerank.serving.feed.sources.base import as_array

_PERSONALIZED = (Reason("PERSONALIZED", "picked for you from your purchases and your network"),)
_NEIGHBOURHOOD = (Reason("PERSONALIZED", "picked for you from what your friends buy"),)


def search_available(model: ModelBundle, vector: np.ndarray, depth: int, exclude: np.ndarray,
                     categories: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best in-stock products (of ``categories``, when given) by inner product with ``vector``.

    ``exclude`` (small sets: bought, excluded, served) is removed inside the search by id selector. Stock
    and category are checked on the results, so the search widens (doubling k) until ``depth`` products
    qualify or the catalogue is exhausted. Returns ``(rows, scores)``, best first.
    """
    wanted = list(categories)
    k = depth * (4 if wanted else 1) + 8
    while True:
        scores, rows = model.index.search(vector, k, exclude=exclude)
        keep = rows[0] >= 0
        rows, scores = rows[0][keep], scores[0][keep]
        eligible = model.in_stock[rows]
        if wanted:
            eligible &= np.isin(model.category[rows], wanted)
        rows, scores = rows[eligible], scores[eligible]
        if len(rows) >= depth or k >= model.index.size:
            return rows[:depth], scores[:depth]
        k = min(2 * k, model.index.size)


def category_prior_reason(model: ModelBundle, row: int) -> Reason:
    category = model.category[row]
    return Reason("CATEGORY_PRIOR", f"new in {category}" if category else "new in the catalogue")


class EmbeddingSource:
    """Top products by inner product with ``query.user_vector`` (see :func:`search_available`).

    Products the model never trained on rank by their category's prior embedding; their reason says so.
    """

    name = "Embedding"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_vector is not None

    def fetch(self, query: FeedQuery) -> list[Candidate]:
        model = query.model
        rows, scores = search_available(model, query.user_vector, query.depth, as_array(query.blocked),
                                        query.categories)
        if not query.explain:
            return [Candidate(r, s, self.name) for r, s in zip(rows.tolist(), scores.tolist(), strict=True)]
        reasons = _NEIGHBOURHOOD if query.neighbours else _PERSONALIZED
        prior = model.category_prior[rows].tolist()
        return [Candidate(r, s, self.name, (category_prior_reason(model, r),) if p else reasons)
                for r, s, p in zip(rows.tolist(), scores.tolist(), prior, strict=True)]
