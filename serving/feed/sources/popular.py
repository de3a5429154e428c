"""Cold-start candidates: the most bought products, within the requested categories."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from sharerank.serving.feed.query import Candidates, FeedQuery, Reason
from sharerank.serving.feed.sources.base import model_scores


@lru_cache(maxsize=4096)
def _popular_reasons(category: str) -> tuple[Reason, ...]:
    return (Reason("POPULAR", f"popular in {category}" if category else "popular now"),)


class PopularSource:
    """Most-bought products in stock, for users with nothing known (never an error for them), and to fill the
    page under an item-item model's candidates (which may be fewer than a page: its vectors find nothing).

    Scores are :func:`~sharerank.serving.feed.sources.base.model_scores`: the popularity share of the most
    bought product when the model scores nothing for the user. Walks the popularity order in widening
    chunks, so a request touches only the head of a large catalogue.
    """

    name = "Popular"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_vector is None

    def fetch(self, query: FeedQuery) -> Candidates:
        model = query.model
        order, blocked, wanted = model.popular_order, query.blocked, list(query.categories)
        found: list[int] = []
        start, size = 0, query.depth + len(blocked) + 8
        while len(found) < query.depth and start < len(order):
            chunk = order[start:start + size]
            eligible = model.in_stock[chunk]
            if wanted:
                eligible &= np.isin(model.category[chunk], wanted)
            found += [r for r in chunk[eligible].tolist() if r not in blocked]
            start, size = start + size, 2 * size
        rows = np.asarray(found[: query.depth], dtype=np.int64)
        scores = model_scores(query, rows)
        if not query.explain:
            return Candidates.from_source(rows, scores, self.name)
        return Candidates.from_source(rows, scores, self.name,
                                      [_popular_reasons(c) for c in model.category[rows].tolist()])
