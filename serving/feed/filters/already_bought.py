"""Never show what the user bought (training history and live purchases)."""

from __future__ import annotations

from collections.abc import Iterable

from sharerank.serving.feed.filters.base import FilterResult, drop_products
from sharerank.serving.feed.query import Candidate, FeedQuery


class AlreadyBoughtFilter:
    """Removes products in ``query.bought``. Sources exclude them in-search already; this filter is the
    guarantee for every source, present and future."""

    name = "AlreadyBought"

    def apply(self, query: FeedQuery, candidates: Iterable[Candidate]) -> FilterResult:
        return drop_products(candidates, query.bought)
