"""Personalised candidates: nearest products to the user's embedding in the FAISS index."""

from __future__ import annotations

import numpy as np

from sharerank.models.bundle import ModelBundle
from sharerank.serving.feed.hydrators.purchases import as_array
from sharerank.serving.feed.query import Candidate, FeedQuery, Reason

_PERSONALIZED = (Reason("PERSONALIZED", "picked for you from your purchases and your network"),)


def search_available(model: ModelBundle, vector: np.ndarray, depth: int, exclude: np.ndarray,
                     categories: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best in-stock products (of ``categories``, when given) by inner product with ``vector``.

    ``exclude`` (small sets: bought, excluded) is removed inside the search by id selector. Stock and
    category are checked on the results, so the search widens (doubling k) until ``depth`` products
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


class EmbeddingSource:
    """Top products by inner product with the user's embedding (see :func:`search_available`)."""

    name = "Embedding"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_row is not None

    def fetch(self, query: FeedQuery) -> list[Candidate]:
        model = query.model
        rows, scores = search_available(model, model.user_embedding[query.user_row], query.depth,
                                        as_array(query.bought | query.exclude_products), query.categories)
        reasons = _PERSONALIZED if query.explain else ()
        return [Candidate(int(r), float(s), self.name, reasons) for r, s in zip(rows, scores, strict=True)]
