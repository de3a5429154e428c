"""Only the requested categories."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.filters.base import FilterResult, partition_mask, rows_of
from sharerank.serving.feed.query import Candidate, FeedQuery


class CategoryFilter:
    """Removes products outside ``query.categories`` (no-op when none were requested)."""

    name = "Category"

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> FilterResult:
        if not query.categories:
            return FilterResult(candidates, [])
        category = query.model.category[rows_of(candidates)]
        return partition_mask(candidates, np.isin(category, list(query.categories)))
