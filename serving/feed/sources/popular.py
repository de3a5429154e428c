"""Cold-start candidates: the most bought products, within the requested categories."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import Candidate, FeedQuery, Reason


class PopularSource:
    """Most-bought products in stock, for users with nothing known (never an error for them).

    Scores are the popularity share of the most bought product, the scale of
    :func:`~sharerank.serving.feed.sources.base.model_scores` without a user vector. Walks the popularity
    order in widening chunks, so a request touches only the head of a large catalogue.
    """

    name = "Popular"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_vector is None

    def fetch(self, query: FeedQuery) -> list[Candidate]:
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
        rows = found[: query.depth]
        scores = (model.popularity[rows] / model.max_popularity).tolist()
        return [Candidate(r, s, self.name, self._reasons(query, r)) for r, s in zip(rows, scores, strict=True)]

    @staticmethod
    def _reasons(query: FeedQuery, row: int) -> tuple[Reason, ...]:
        if not query.explain:
            return ()
        category = query.model.category[row]
        return (Reason("POPULAR", f"popular in {category}" if category else "popular now"),)
