"""What flows through the feed pipeline: one frozen query per request and the candidates it collects.

Stages never see protos: marshalling lives in :mod:`sharerank.serving.marshal`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import compress

import numpy as np

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving.online_store.base import FriendsBought, ReceivedShare, ShareFatigue

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


class Candidates(Sequence[Candidate]):
    """The candidates of one request as columns: what flows between the stages.

    A sequence of :class:`Candidate` to whoever reads it item by item (tests, logs), but stages work on the
    columns: ``rows`` (product rows, int64), ``scores`` (the sources' raw model scores, float64), and one
    ``source`` name and ``reasons`` tuple per candidate (lists, shared tuples). Cheap to filter, reorder and
    join, so a request builds :class:`Candidate` objects only for the page it returns. Never mutated: stages
    return new batches.
    """

    __slots__ = ("rows", "scores", "sources", "reasons", "_row_list")

    def __init__(self, rows: np.ndarray, scores: np.ndarray, sources: list[str],
                 reasons: list[tuple[Reason, ...]]):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.sources, self.reasons = sources, reasons
        self._row_list: list[int] | None = None

    @classmethod
    def from_source(cls, rows: np.ndarray, scores: np.ndarray, source: str,
                    reasons: tuple[Reason, ...] | list[tuple[Reason, ...]] = ()) -> Candidates:
        """One source's candidates: ``reasons`` is one tuple for all of them, or a list with one per row."""
        n = len(rows)
        return cls(rows, scores, [source] * n, [reasons] * n if isinstance(reasons, tuple) else reasons)

    @classmethod
    def of(cls, items: Iterable[Candidate]) -> Candidates:
        """``items`` as a batch (itself when it is one already)."""
        if isinstance(items, Candidates):
            return items
        items = list(items)
        return cls(np.fromiter((c.product for c in items), dtype=np.int64, count=len(items)),
                   np.fromiter((c.score for c in items), dtype=np.float64, count=len(items)),
                   [c.source for c in items], [c.reasons for c in items])

    @classmethod
    def concat(cls, batches: Sequence[Candidates]) -> Candidates:
        """The batches one after another (in order: de-duplication keeps the first copy)."""
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return EMPTY
        return cls(np.concatenate([b.rows for b in batches]), np.concatenate([b.scores for b in batches]),
                   [s for b in batches for s in b.sources], [r for b in batches for r in b.reasons])

    @property
    def row_list(self) -> list[int]:
        """``rows`` as Python ints (computed once: set look-ups of several filters read it)."""
        if self._row_list is None:
            self._row_list = self.rows.tolist()
        return self._row_list

    def take(self, index: np.ndarray | Sequence[int]) -> Candidates:
        """The candidates at ``index`` (positions), in that order."""
        index = np.asarray(index, dtype=np.int64)
        positions = index.tolist()
        sources, reasons = self.sources, self.reasons
        return Candidates(self.rows[index], self.scores[index], [sources[i] for i in positions],
                          [reasons[i] for i in positions])

    def split(self, keep: np.ndarray | list[bool]) -> tuple[Candidates, Candidates]:
        """``(kept, removed)`` by a boolean mask aligned with the candidates (order kept in both)."""
        keep = np.asarray(keep, dtype=bool)
        drop = ~keep
        flags, dropped = keep.tolist(), drop.tolist()
        return (Candidates(self.rows[keep], self.scores[keep], list(compress(self.sources, flags)),
                           list(compress(self.reasons, flags))),
                Candidates(self.rows[drop], self.scores[drop], list(compress(self.sources, dropped)),
                           list(compress(self.reasons, dropped))))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Candidate]:
        return map(Candidate, self.row_list, self.scores.tolist(), self.sources, self.reasons)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Candidates(self.rows[i], self.scores[i], self.sources[i], self.reasons[i])
        return Candidate(self.row_list[i], float(self.scores[i]), self.sources[i], self.reasons[i])

    def __repr__(self) -> str:
        return f"Candidates({list(self)!r})"


EMPTY = Candidates(np.empty(0, dtype=np.int64), np.empty(0), [], [])
"""No candidates (what a filter removed, usually)."""


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
        served_by_sharer: Sharer id → products attributed to them (``shared``) served on earlier pages of this
            feed (from the page token): what the per-sharer cap has already spent.
        now: Request time in unix seconds (recency of live social proof).
        bought: Product rows the user bought: training history plus live purchases.
        friends_bought: Live: product row → friends' recent purchases of it (the online store's entry).
        shared: Live: product row → the newest share of it to the user (the online store's entry).
        sharers: Live: ids of everyone who shared something to the user, newest first (cold start).
        fatigue: Live: shares the user received in the fatigue window, in all and per sharer.
        user_vector: The vector the feed ranks by: the user's embedding, or the mean of their friends'
            (cold start); None when nothing is known (then popularity ranks).
        neighbours: How many friends' embeddings make up ``user_vector`` (0: the user's own or none).
        item_scores: The item-item part of the model's score over ``bought``: ``(product rows ascending,
            weights)``; None when the model has no item-item part or the user bought nothing.
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
    served_by_sharer: Mapping[str, int] = field(default_factory=dict)
    now: float = 0.0
    bought: frozenset[int] = field(default_factory=frozenset)
    friends_bought: Mapping[int, FriendsBought] = field(default_factory=dict)
    shared: Mapping[int, ReceivedShare] = field(default_factory=dict)
    sharers: tuple[str, ...] = ()
    fatigue: ShareFatigue = field(default_factory=ShareFatigue)
    user_vector: np.ndarray | None = None
    neighbours: int = 0
    item_scores: tuple[np.ndarray, np.ndarray] | None = None
    degraded: tuple[str, ...] = ()

    @property
    def has_model_scale(self) -> bool:
        """Whether the model scores anything for this user (a vector or an item-item part); otherwise the
        feed ranks by popularity."""
        return self.user_vector is not None or self.item_scores is not None

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
        """A copy with ``changes`` (``dataclasses.replace`` without re-running ``__init__``: the hydrators
        call this on every request, and no field has a validator)."""
        unknown = changes.keys() - _QUERY_FIELDS
        if unknown:
            raise TypeError(f"FeedQuery has no field(s) {sorted(unknown)}")
        copy = object.__new__(type(self))
        state = copy.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return copy


_QUERY_FIELDS = frozenset(f.name for f in fields(FeedQuery))
