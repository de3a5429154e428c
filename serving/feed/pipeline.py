"""The feed, read top to bottom: hydrate → retrieve → filter → score → re-rank → page.

Each stage is a small class in its own module; this file is the one place that lists them in order.
Hydrators read live state once (the only I/O) and fail open; every later stage reads only the query.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sharerank.models.bundle import ModelBundle
from sharerank.serving.feed.filters.already_bought import AlreadyBoughtFilter
from sharerank.serving.feed.filters.category import CategoryFilter
from sharerank.serving.feed.filters.duplicate import DuplicateFilter
from sharerank.serving.feed.filters.excluded import ExcludedFilter
from sharerank.serving.feed.filters.out_of_stock import OutOfStockFilter
from sharerank.serving.feed.filters.served import ServedFilter
from sharerank.serving.feed.hydrators.live_state import LiveStateHydrator
from sharerank.serving.feed.hydrators.user_vector import UserVectorHydrator
from sharerank.serving.feed.query import Candidate, FeedQuery
from sharerank.serving.feed.rerankers.diversity import DiversityReranker
from sharerank.serving.feed.scorers.long_tail import LongTailScorer
from sharerank.serving.feed.scorers.model import ModelScorer
from sharerank.serving.feed.scorers.social_proof import SocialProofScorer
from sharerank.serving.feed.sources.embedding import EmbeddingSource
from sharerank.serving.feed.sources.friends_bought import FriendsBoughtSource
from sharerank.serving.feed.sources.popular import PopularSource
from sharerank.serving.feed.sources.shared_to_you import SharedToYouSource
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
        # Live state first (one store read), then the vector that depends on it (cold start uses sharers).
        self.hydrators = [LiveStateHydrator(store), UserVectorHydrator()]
        # Ranked sources first, so de-duplication keeps their copy; exactly one of Embedding/Popular applies.
        self.sources = [EmbeddingSource(), PopularSource(), FriendsBoughtSource(), SharedToYouSource()]
        # Cheapest first: set look-ups before array look-ups.
        self.filters = [DuplicateFilter(), ServedFilter(), ExcludedFilter(), AlreadyBoughtFilter(),
                        OutOfStockFilter(), CategoryFilter()]
        # Each scorer maps (candidates, scores so far) to new scores in input order. Model relevance in [0, 1]
        # first: the boosts after it are in its units.
        self.scorers = [ModelScorer(), SocialProofScorer(), LongTailScorer()]
        self.rerankers = [DiversityReranker()]
        self._explainers = [scorer for scorer in self.scorers if hasattr(scorer, "explain")]

    def run(self, *, model: ModelBundle, user_id: str, page_size: int, categories: frozenset[str] = frozenset(),
            exclude_products: frozenset[int] = frozenset(), served: frozenset[int] = frozenset(),
            explain: bool = False) -> FeedPage:
        query = FeedQuery(user_id=user_id, page_size=page_size, categories=categories,
                          exclude_products=exclude_products, explain=explain, model=model,
                          user_row=model.user_rows.get(user_id), served=served)
        for hydrator in self.hydrators:
            query = hydrator.hydrate(query)
        candidates = [c for source in self.sources if source.applies(query) for c in source.fetch(query)]
        for stage in self.filters:
            result = stage.apply(query, candidates)
            if result.removed:
                log.debug("%s removed %d candidates", stage.name, len(result.removed))
            candidates = result.kept
        # Scores travel beside the candidates, so no stage rebuilds them; only the page is built again.
        scores = np.fromiter((c.score for c in candidates), dtype=np.float64, count=len(candidates))
        for scorer in self.scorers:
            scores = scorer.score(query, candidates, scores)
        for reranker in self.rerankers:
            order, scores = reranker.rerank(query, candidates, scores)
            candidates = [candidates[i] for i in order.tolist()]
        page = [self._finish(query, c, s) for c, s in zip(candidates[:page_size], scores[:page_size].tolist(),
                                                          strict=True)]
        return FeedPage(items=page, has_more=len(candidates) > page_size, degraded=query.degraded)

    def _finish(self, query: FeedQuery, candidate: Candidate, score: float) -> Candidate:
        """The candidate with its final score; with ``explain``, scorers' reasons (social proof) go before the
        source's: they are what a shopper notices first."""
        reasons = candidate.reasons
        if query.explain:
            product = candidate.product
            reasons = tuple(r for scorer in self._explainers for r in scorer.explain(query, product)) + reasons
        return Candidate(candidate.product, score, candidate.source, reasons)
