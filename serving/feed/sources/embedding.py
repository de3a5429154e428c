"""Personalised candidates: nearest products to the user's embedding in the FAISS index."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.hydrators.purchases import as_array
from sharerank.serving.feed.query import Candidate, FeedQuery, Reason

_PERSONALIZED = (Reason("PERSONALIZED", "picked for you from your purchases and your network"),)


class EmbeddingSource:
    """Top products by inner product with the user's embedding.

    Bought and excluded products (small sets) are removed inside the search by id selector. Stock and
    category are checked on the results, so the search widens (doubling k) until the page can be filled
    or the catalogue is exhausted.
    """

    name = "Embedding"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_row is not None

    def fetch(self, query: FeedQuery) -> list[Candidate]:
        model = query.model
        exclude = as_array(query.bought | query.exclude_products)
        vector = model.user_embedding[query.user_row]
        categories = list(query.categories)
        k = query.depth * (4 if categories else 1) + 8
        while True:
            scores, rows = model.index.search(vector, k, exclude=exclude)
            keep = rows[0] >= 0
            rows, scores = rows[0][keep], scores[0][keep]
            eligible = model.in_stock[rows]
            if categories:
                eligible &= np.isin(model.category[rows], categories)
            rows, scores = rows[eligible], scores[eligible]
            if len(rows) >= query.depth or k >= model.index.size:
                break
            k = min(2 * k, model.index.size)
        reasons = _PERSONALIZED if query.explain else ()
        top = slice(0, query.depth)
        return [Candidate(int(r), float(s), self.name, reasons) for r, s in zip(rows[top], scores[top], strict=True)]
