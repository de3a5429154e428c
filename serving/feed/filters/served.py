"""Pages never repeat: never show what earlier pages of this feed served."""

from __future__ import annotations

from collections.abc import Iterable

from sharerank.serving.feed.filters.base import FilterResult, drop_products
from sharerank.serving.feed.query import Candidate, FeedQuery


class ServedFilter:
    """Removes products in ``query.served`` (the page token's served ids). Ranked sources exclude them
    in-search already; this filter is the guarantee for every source, so a live purchase or a model swap
    between pages can reorder the feed but never repeat an item."""

    name = "Served"

    def apply(self, query: FeedQuery, candidates: Iterable[Candidate]) -> FilterResult:
        return drop_products(candidates, query.served)
