"""What flows through the feed pipeline: one frozen query per request and the candidates it collects.

Stages never see protos: marshalling lives in :mod:`sharerank.serving.marshal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from sharerank.models.bundle import ModelBundle
from sharerank.serving.online_store.base import FriendsBought, ReceivedShare

RERANK_POOL_EXTRA = 100
"""Candidates fetched beyond the page, at most: twice the page size up to this many, so the re-rankers have
products of other categories and sellers to promote without making big pages slow."""


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a candidate is on the feed: ``kind`` is a ``ReasonKind`` name suffix, ``text`` is for people."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A product row of the serving model with its score and the reasons for it."""

    product: int
    score: float
    source: str
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, eq=False)
class FeedQuery:
    """One feed request, hydrated with the live state the stages read.

    Args:
        user_id: The external user id.
        page_size: Items on the page (1..500, validated before the pipeline).
        categories: Only these categories (empty: all).
        exclude_products: Product rows never to return.
        explain: Whether reasons are wanted.
        model: The model serving this request (read once, so a hot swap never mixes two).
        user_row: The user's row in the model, None for a user the model has not seen.
        served: Product rows served on earlier pages of this feed (from the page token).
        now: Request time in unix seconds (recency of live social proof).
        bought: Product rows the user bought: training history plus live purchases.
        friends_bought: Live: product row → friends' recent purchases of it (the online store's entry).
        shared: Live: product row → the newest share of it to the user (the online store's entry).
        sharers: Live: ids of everyone who shared something to the user, newest first (cold start).
        user_vector: The vector the feed ranks by: the user's embedding, or the mean of their friends'
            (cold start); None when nothing is known (then popularity ranks).
        neighbours: How many friends' embeddings make up ``user_vector`` (0: the user's own or none).
        degraded: Names of hydrators that failed open (their features are missing).
    """

    user_id: str
    page_size: int
    categories: frozenset[str]
    exclude_products: frozenset[int]
    explain: bool
    model: ModelBundle
    user_row: int | None = None
    served: frozenset[int] = field(default_factory=frozenset)
    now: float = 0.0
    bought: frozenset[int] = field(default_factory=frozenset)
    friends_bought: Mapping[int, FriendsBought] = field(default_factory=dict)
    shared: Mapping[int, ReceivedShare] = field(default_factory=dict)
    sharers: tuple[str, ...] = ()
    user_vector: np.ndarray | None = None
    neighbours: int = 0
    degraded: tuple[str, ...] = ()

    @property
    def depth(self) -> int:
        """Candidates a ranked source fetches: the page, the re-rank pool beyond it, and one to know whether
        another page follows."""
        return self.page_size + min(2 * self.page_size, RERANK_POOL_EXTRA) + 1

    @property
    def blocked(self) -> frozenset[int]:
        """Product rows no source may return: bought, excluded, or served on an earlier page."""
        return self.bought | self.exclude_products | self.served

    def with_(self, **changes) -> FeedQuery:
        return replace(self, **changes)
