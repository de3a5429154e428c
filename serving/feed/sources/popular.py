"""Cold-start candidates: the most bought products, within the requested categories."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import Candidate, FeedQuery, Reason


class PopularSource:
    """Most-bought products in stock, for users the model has not seen (never an error for them)."""

    name = "Popular"

    def applies(self, query: FeedQuery) -> bool:
        return query.user_row is None

    def fetch(self, query: FeedQuery) -> list[Candidate]:
        model = query.model
        order = model.popular_order
        eligible = model.in_stock[order]
        if query.categories:
            eligible &= np.isin(model.category[order], list(query.categories))
        order = order[eligible]
        blocked = query.bought | query.exclude_products
        rows = [int(r) for r in order[: query.depth + len(blocked)] if int(r) not in blocked][: query.depth]
        top = max(float(model.popularity[order[0]]), 1.0) if len(order) else 1.0
        return [Candidate(r, float(model.popularity[r]) / top, self.name, self._reasons(query, model.category[r]))
                for r in rows]

    @staticmethod
    def _reasons(query: FeedQuery, category: str) -> tuple[Reason, ...]:
        if not query.explain:
            return ()
        return (Reason("POPULAR", f"popular in {category}" if category else "popular now"),)
