"""What flows through the feed pipeline: one frozen query per request and the candidates it collects.

Stages never see protos: marshalling lives in :mod:`sharerank.serving.marshal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sharerank.models.bundle import ModelBundle


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


@dataclass(frozen=True)
class FeedQuery:
    """One feed request, hydrated with the live state the stages read.

    Args:
        user_id: The external user id.
        page_size: Items on the page (1..500, validated before the pipeline).
        offset: Items already served on earlier pages of this feed.
        categories: Only these categories (empty: all).
        exclude_products: Product rows never to return.
        explain: Whether reasons are wanted.
        model: The model serving this request (read once, so a hot swap never mixes two).
        user_row: The user's row in the model, None for a user the model has not seen.
        bought: Product rows the user bought: training history plus live purchases.
        degraded: Names of hydrators that failed open (their features are missing).
    """

    user_id: str
    page_size: int
    offset: int
    categories: frozenset[str]
    exclude_products: frozenset[int]
    explain: bool
    model: ModelBundle
    user_row: int | None = None
    bought: frozenset[int] = field(default_factory=frozenset)
    degraded: tuple[str, ...] = ()

    @property
    def depth(self) -> int:
        """Candidates needed to fill this page and know whether another follows."""
        return self.offset + self.page_size + 1

    def with_(self, **changes) -> FeedQuery:
        return replace(self, **changes)
