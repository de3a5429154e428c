"""Never show products that cannot be sold now."""

from __future__ import annotations

from sharerank.serving.feed.filters.base import FilterResult, partition_mask, rows_of
from sharerank.serving.feed.query import Candidate, FeedQuery


class OutOfStockFilter:
    """Removes products whose catalogue ``in_stock`` flag is false (one array look-up for all candidates)."""

    name = "OutOfStock"

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> FilterResult:
        return partition_mask(candidates, query.model.in_stock[rows_of(candidates)])
