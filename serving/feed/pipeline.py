"""The feed, read top to bottom: hydrate → retrieve → filter → page.

Later stages (live social-proof scoring, diversity re-ranking) slot in between filter and page. Each
stage is a small class in its own module; this file is the one place that lists them in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sharerank.models.bundle import ModelBundle
from sharerank.serving.feed.filters.already_bought import AlreadyBoughtFilter
from sharerank.serving.feed.filters.category import CategoryFilter
from sharerank.serving.feed.filters.excluded import ExcludedFilter
from sharerank.serving.feed.filters.out_of_stock import OutOfStockFilter
from sharerank.serving.feed.hydrators.purchases import PurchasesHydrator
from sharerank.serving.feed.query import Candidate, FeedQuery
from sharerank.serving.feed.sources.embedding import EmbeddingSource
from sharerank.serving.feed.sources.popular import PopularSource
from sharerank.serving.online_store import OnlineStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedPage:
    """One page of a feed and whether more follow."""

    items: list[Candidate]
    has_more: bool
    degraded: tuple[str, ...]


class FeedPipeline:
    """Runs one feed request through the stages in order."""

    def __init__(self, store: OnlineStore):
        self.hydrators = [PurchasesHydrator(store)]
        self.sources = [EmbeddingSource(), PopularSource()]
        # Cheapest first: set lookups before array lookups.
        self.filters = [ExcludedFilter(), AlreadyBoughtFilter(), OutOfStockFilter(), CategoryFilter()]

    def run(self, *, model: ModelBundle, user_id: str, page_size: int, offset: int = 0,
            categories: frozenset[str] = frozenset(), exclude_products: frozenset[int] = frozenset(),
            explain: bool = False) -> FeedPage:
        query = FeedQuery(user_id=user_id, page_size=page_size, offset=offset, categories=categories,
                          exclude_products=exclude_products, explain=explain, model=model,
                          user_row=model.user_rows.get(user_id))
        for hydrator in self.hydrators:
            query = hydrator.hydrate(query)
        candidates = [c for source in self.sources if source.applies(query) for c in source.fetch(query)]
        for stage in self.filters:
            result = stage.apply(query, candidates)
            if result.removed:
                log.debug("%s removed %d candidates", stage.name, len(result.removed))
            candidates = result.kept
        candidates.sort(key=lambda c: -c.score)
        end = query.offset + query.page_size
        return FeedPage(items=candidates[query.offset:end], has_more=len(candidates) > end,
                        degraded=query.degraded)
