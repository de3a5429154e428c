"""Never show products the caller excluded explicitly."""

from __future__ import annotations

from collections.abc import Iterable

from sharerank.serving.feed.filters.base import FilterResult, drop_products
from sharerank.serving.feed.query import Candidate, FeedQuery


class ExcludedFilter:
    """Removes the request's ``exclude_product_ids``."""

    name = "Excluded"

    def apply(self, query: FeedQuery, candidates: Iterable[Candidate]) -> FilterResult:
        return drop_products(candidates, query.exclude_products)
