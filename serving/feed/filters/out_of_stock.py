"""Never show products that cannot be sold now."""

from __future__ import annotations

from sharerank.serving.feed.filters.base import FilterResult, partition
from sharerank.serving.feed.query import Candidate, FeedQuery


class OutOfStockFilter:
    """Removes products whose catalogue ``in_stock`` flag is false."""

    name = "OutOfStock"

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> FilterResult:
        in_stock = query.model.in_stock
        return partition(candidates, lambda c: bool(in_stock[c.product]))
