"""The feed, read top to bottom: hydrate → retrieve → filter → score → cap → re-rank → page.

Each stage is a small class in its own module; this file is the one place that lists them in order.
Hydrators read live state once (the only I/O) and fail open; every later stage reads only the query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving.feed.caps.sharer import SHARES_PER_SHARER, SharerCap, tally_served
from sharerank.serving.feed.filters.already_bought import AlreadyBoughtFilter
from sharerank.serving.feed.filters.category import CategoryFilter
from sharerank.serving.feed.filters.duplicate import DuplicateFilter
from sharerank.serving.feed.filters.excluded import ExcludedFilter
from sharerank.serving.feed.filters.out_of_stock import OutOfStockFilter
from sharerank.serving.feed.filters.served import ServedFilter
from sharerank.serving.feed.hydrators.item_item import ItemItemHydrator
from sharerank.serving.feed.hydrators.live_state import LiveStateHydrator
from sharerank.serving.feed.hydrators.user_vector import UserVectorHydrator
from sharerank.serving.feed.query import Candidate, Candidates, FeedQuery
from sharerank.serving.feed.rerankers.diversity import DiversityReranker
from sharerank.serving.feed.scorers.long_tail import LongTailScorer
from sharerank.serving.feed.scorers.model import ModelScorer
from sharerank.serving.feed.scorers.social_proof import FATIGUE_HALF_SHARES, SocialProofScorer
from sharerank.serving.feed.sources.embedding import EmbeddingSource
from sharerank.serving.feed.sources.friends_bought import FriendsBoughtSource
from sharerank.serving.feed.sources.item_item import ItemItemSource
from sharerank.serving.feed.sources.popular import PopularSource
from sharerank.serving.feed.sources.shared_to_you import SharedToYouSource
from sharerank.serving.observability import observe_stage
from sharerank.serving.online_store import OnlineStore
from sharerank.serving.tracing import span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedPage:
    """One page of a feed and whether more follow; ``served_by_sharer``: products attributed to each sharer on
    this page and the earlier ones (the next page token carries it)."""

    items: list[Candidate]
    has_more: bool
    degraded: tuple[str, ...]
    served_by_sharer: Mapping[str, int] = field(default_factory=dict)


class FeedPipeline:
    """Runs one feed request through the stages in order.

    Args:
        store: the online store the live state is read from.
        shares_per_sharer: products shared by one sharer that one feed session shows at most.
            (default: :data:`~sharerank.serving.feed.caps.sharer.SHARES_PER_SHARER`)
        fatigue_half_shares: shares received in the fatigue window at which a share's boost halves.
            (default: :data:`~sharerank.serving.feed.scorers.social_proof.FATIGUE_HALF_SHARES`)
    """

    def __init__(self, store: OnlineStore, *, shares_per_sharer: int = SHARES_PER_SHARER,
                 fatigue_half_shares: float = FATIGUE_HALF_SHARES):
        # Live state first (one store read), then what depends on it: the vector (cold start uses sharers) and
        # the item-item part over everything bought.
        self.hydrators = [LiveStateHydrator(store), UserVectorHydrator(), ItemItemHydrator()]
        # Ranked sources first, so de-duplication keeps their copy; exactly one of Embedding/Popular applies,
        # and the item-item source too when the model has that part.
        self.sources = [EmbeddingSource(), ItemItemSource(), PopularSource(), FriendsBoughtSource(),
                        SharedToYouSource(shares_per_sharer)]
        # Cheapest first: set look-ups before array look-ups.
        self.filters = [DuplicateFilter(), ServedFilter(), ExcludedFilter(), AlreadyBoughtFilter(),
                        OutOfStockFilter(), CategoryFilter()]
        # Each scorer maps (candidates, scores so far) to new scores in input order. Model relevance in [0, 1]
        # first: the boosts after it are in its units.
        self.scorers = [ModelScorer(), SocialProofScorer(fatigue_half_shares), LongTailScorer()]
        # Caps see final scores: each keeps a group's best candidates and holds back the rest (with a reason).
        self.caps = [SharerCap(shares_per_sharer)]
        self.rerankers = [DiversityReranker()]
        self._explainers = [scorer for scorer in self.scorers if hasattr(scorer, "explain")]

    def run(self, *, model: ModelBundle, user_id: str, page_size: int, categories: frozenset[str] = frozenset(),
            exclude_products: frozenset[int] = frozenset(), served: frozenset[int] = frozenset(),
            served_by_sharer: Mapping[str, int] | None = None, explain: bool = False) -> FeedPage:
        query = FeedQuery(user_id=user_id, page_size=page_size, categories=categories,
                          exclude_products=exclude_products, explain=explain, model=model,
                          user_row=model.user_rows.get(user_id), served=served,
                          served_by_sharer=served_by_sharer or {})
        with _stage("hydrate"):
            for hydrator in self.hydrators:
                query = hydrator.hydrate(query)
        # Candidates travel as columns (a Candidates batch): no stage builds an object per candidate.
        with _stage("sources"):
            candidates = Candidates.concat([source.fetch(query) for source in self.sources if source.applies(query)])
        with _stage("filters"):
            for stage in self.filters:
                result = stage.apply(query, candidates)
                if result.removed:
                    log.debug("%s removed %d candidates", stage.name, len(result.removed))
                candidates = result.kept
        # Scores travel beside the candidates, so no stage rebuilds them; only the page is built again.
        with _stage("scorers"):
            scores = candidates.scores
            for scorer in self.scorers:
                scores = scorer.score(query, candidates, scores)
        with _stage("caps"):
            for cap in self.caps:
                capped = cap.apply(query, candidates, scores)
                if len(capped.removed):
                    log.debug("%s held back %d candidates", cap.name, len(capped.removed))
                candidates, scores = capped.kept, capped.scores
        with _stage("rerankers"):
            order = None
            for reranker in self.rerankers:
                if order is not None:
                    candidates = candidates.take(order)
                order, scores = reranker.rerank(query, candidates, scores)
        with _stage("page"):
            top = order[:page_size] if order is not None else np.arange(min(page_size, len(candidates)))
            page = candidates.take(top)
            items = self._page(query, page, scores[:page_size])
        return FeedPage(items=items, has_more=len(candidates) > page_size, degraded=query.degraded,
                        served_by_sharer=tally_served(query, page.row_list))

    def _page(self, query: FeedQuery, page: Candidates, scores: np.ndarray) -> list[Candidate]:
        """The page's candidates with their final scores; with ``explain``, scorers' reasons (social proof) go
        before the source's: they are what a shopper notices first."""
        reasons = page.reasons
        # Only the explainers with something to say for this query (``explains``, when they have it) are asked.
        explainers = [e for e in self._explainers if getattr(e, "explains", _always)(query)] if query.explain else []
        if explainers:
            reasons = [tuple(r for e in explainers for r in e.explain(query, product)) + own
                       for product, own in zip(page.row_list, reasons, strict=True)]
        return list(map(Candidate, page.row_list, scores.tolist(), page.sources, reasons))


def _always(query: FeedQuery) -> bool:
    return True


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Times a kind of stage into the per-stage histogram, inside a span of its own when the call is traced."""
    start = perf_counter()
    with span(f"feed.{name}"):
        yield
    observe_stage(name, perf_counter() - start)
