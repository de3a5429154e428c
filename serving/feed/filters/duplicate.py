"""One candidate per product, however many sources found it."""

from __future__ import annotations

from sharerank.serving.feed.filters.base import FilterResult
from sharerank.serving.feed.query import Candidate, FeedQuery


class DuplicateFilter:
    """Keeps the first candidate of each product (sources run in pipeline order, the ranked ones first) and
    removes the rest. Social proof does not depend on which copy survives: its scorer reads the query."""

    name = "Duplicate"

    def apply(self, query: FeedQuery, candidates: list[Candidate]) -> FilterResult:
        seen: set[int] = set()
        kept, removed = [], []
        for candidate in candidates:
            if candidate.product in seen:
                removed.append(candidate)
            else:
                seen.add(candidate.product)
                kept.append(candidate)
        return FilterResult(kept, removed)
