"""Never show products that cannot be sold now."""

from __future__ import annotations

from collections.abc import Iterable

from sharerank.serving.feed.filters.base import FilterResult, partition_mask
from sharerank.serving.feed.query import Candidate, Candidates, FeedQuery


class OutOfStockFilter:
    """Removes products whose catalogue ``in_stock`` flag is false (one array look-up for all candidates)."""

    name = "OutOfStock"

    def apply(self, query: FeedQuery, candidates: Iterable[Candidate]) -> FilterResult:
        batch = Candidates.of(candidates)
        return partition_mask(batch, query.model.in_stock[batch.rows])
