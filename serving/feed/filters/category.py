"""Only the requested categories."""

from __future__ import annotations

from sharerank.serving.feed.filters.base import FilterResult, partition
from sharerank.serving.feed.query import Candidate, FeedQuery


class CategoryFilter:
    """Removes products outside ``query.categories`` (no-op when none were requested)."""

    name = "Category"

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> FilterResult:
        if not query.categories:
            return partition(candidates, lambda c: True)
        category = query.model.category
        return partition(candidates, lambda c: category[c.product] in query.categories)
