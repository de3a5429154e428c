"""No one sharer fills a feed: at most a few products shared by one person per feed session (朋友圈骚扰)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from sharerank.serving.feed.query import EMPTY, Candidates, FeedQuery, Reason

SHARES_PER_SHARER = 3
"""Default cap: products attributed to one sharer that one feed session shows (``Settings.feed_shares_per_sharer``)."""


@dataclass(frozen=True, slots=True)
class CapResult:
    """What a cap kept (in input order, with their scores and any reason it added) and what it held back."""

    kept: Candidates
    scores: np.ndarray
    removed: Candidates


def allowance(query: FeedQuery, sharer_id: str, per_sharer: int) -> int:
    """Products attributed to ``sharer_id`` that this feed session may still show (earlier pages spent some)."""
    return max(0, per_sharer - query.served_by_sharer.get(sharer_id, 0))


def tally_served(query: FeedQuery, rows: Iterable[int]) -> dict[str, int]:
    """``query.served_by_sharer`` plus the products of ``rows`` (a page) attributed to a sharer: what the next
    page's token carries."""
    served = dict(query.served_by_sharer)
    shared = query.shared
    for row in rows:
        share = shared.get(row)
        if share is not None:
            served[share.sharer_id] = served.get(share.sharer_id, 0) + 1
    return served


class SharerCap:
    """Keeps, per sharer, the best-scored candidates attributed to them (``query.shared``: the product's newest
    share to the user) up to what the session may still show (:func:`allowance`) and holds back the rest.

    Whichever source found a candidate, it counts as the sharer's; other candidates pass untouched. The kept
    candidates of a sharer whose products were held back get the reason ``SHARER_CAPPED`` ("more from u42
    later"). The count of earlier pages comes from the signed page token (``query.served_by_sharer``), so the cap
    holds across the pages of one feed; a new feed (a first page without a token) starts counting again, so what
    was held back may come then.

    Args:
        per_sharer: products one sharer may have in a feed session. (default: :data:`SHARES_PER_SHARER`)
    """

    name = "Sharer"

    def __init__(self, per_sharer: int = SHARES_PER_SHARER):
        if per_sharer < 1:
            raise ValueError(f"per_sharer must be >= 1, got {per_sharer}")
        self.per_sharer = per_sharer

    def apply(self, query: FeedQuery, candidates: Candidates, scores: np.ndarray) -> CapResult:
        shared = query.shared
        if not shared or len(candidates) == 0:
            return CapResult(candidates, scores, EMPTY)
        rows = candidates.row_list
        attributed = [i for i, row in enumerate(rows) if row in shared]
        if not attributed:
            return CapResult(candidates, scores, EMPTY)
        # Best score first (ties: the earlier candidate), so each sharer keeps their best products.
        attributed.sort(key=lambda i: -scores[i])
        left: dict[str, int] = {}
        keep = np.ones(len(rows), dtype=bool)
        kept_of: dict[str, list[int]] = {}
        held: set[str] = set()
        for i in attributed:
            sharer = shared[rows[i]].sharer_id
            remaining = left.get(sharer)
            if remaining is None:
                remaining = allowance(query, sharer, self.per_sharer)
            if remaining > 0:
                left[sharer] = remaining - 1
                kept_of.setdefault(sharer, []).append(i)
            else:
                left[sharer] = 0
                keep[i] = False
                held.add(sharer)
        if not held:
            return CapResult(candidates, scores, EMPTY)
        reasons = list(candidates.reasons)
        for sharer in held:
            note = Reason("SHARER_CAPPED", f"more from {sharer} later")
            for i in kept_of.get(sharer, ()):
                reasons[i] = (note, *reasons[i])  # before the source's own: it explains the social proof
        marked = Candidates(candidates.rows, candidates.scores, candidates.sources, reasons)
        kept, removed = marked.split(keep)
        return CapResult(kept, scores[keep], removed)


def remaining_by_sharer(query: FeedQuery, per_sharer: int) -> Mapping[str, int]:
    """:func:`allowance` of every sharer in ``query.shared`` (the social source takes no more than this)."""
    return {share.sharer_id: allowance(query, share.sharer_id, per_sharer) for share in query.shared.values()}
