"""Only the requested categories."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sharerank.serving.feed.filters.base import FilterResult, partition_mask
from sharerank.serving.feed.query import EMPTY, Candidate, Candidates, FeedQuery


class CategoryFilter:
    """Removes products outside ``query.categories`` (no-op when none were requested)."""

    name = "Category"

    def apply(self, query: FeedQuery, candidates: Iterable[Candidate]) -> FilterResult:
        batch = Candidates.of(candidates)
        if not query.categories:
            return FilterResult(batch, EMPTY)
        category = query.model.category[batch.rows]
        return partition_mask(batch, np.isin(category, list(query.categories)))
