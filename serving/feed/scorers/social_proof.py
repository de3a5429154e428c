"""Live social proof: friends' recent purchases and shares to the user lift a product, within a bound; shares
lift less the more shares the user received lately (share fatigue)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sharerank.serving.feed.filters.base import rows_of
from sharerank.serving.feed.query import Candidate, Candidates, FeedQuery, Reason

FRIENDS_BOUGHT_WEIGHT = 0.3
"""Boost per doubling of the friends who bought a product: 1 friend 0.3, 3 friends 0.6 (before decay)."""
SHARED_TO_YOU_WEIGHT = 0.4
"""Boost of a product shared to the user (before decay): a direct recommendation from a person."""
HALF_LIFE_S = 7 * 24 * 3600.0
"""Social proof halves in weight every 7 days of age."""
RECENCY_FLOOR = 0.25
"""...but never below a quarter: the online store's TTL (90 days) ends old proof, not the decay."""
FATIGUE_HALF_SHARES = 20.0
"""Default shares received in the fatigue window at which a share's boost halves (``Settings.fatigue_half_shares``)."""
MAX_SOCIAL_BOOST = 0.8
"""Bound on the total boost, in relevance units (the model's best candidate is 1.0): social proof lifts a
product far, but a product the model ranks at the bottom of the pool (0) still ends below its top picks."""


def recency(now: float, ts: np.ndarray) -> np.ndarray:
    """``0.5 ** (age / HALF_LIFE_S)`` floored at :data:`RECENCY_FLOOR`; events from the future count as new."""
    return np.maximum(RECENCY_FLOOR, 0.5 ** (np.maximum(now - ts, 0.0) / HALF_LIFE_S))


def fatigue_weight(received: np.ndarray, from_sharer: np.ndarray, half: float = FATIGUE_HALF_SHARES) -> np.ndarray:
    """``half / (half + received + from_sharer)``: 1 for a user who received nothing lately, 1/2 at ``half``
    shares received in the window; the sharer's own shares count twice, so a flood from one person costs that
    person's shares most."""
    return half / (half + received + from_sharer)


class SocialProofScorer:
    """Adds a bounded social-proof boost to each candidate's score.

    .. math::
        b = \\min\\left(B, \\; w_f \\log_2(1 + n_f)\\, d(t_f)
            + w_s\\, d(t_s)\\, \\frac{H}{H + n_r + n_{s,r}}\\right)

    with :math:`n_f` friends who bought the product (newest at :math:`t_f`), :math:`w_s` applied when it was
    shared to the user (newest share at :math:`t_s`, by sharer :math:`s`), :math:`d` the recency decay
    (:func:`recency`), :math:`n_r` the shares the user received in the fatigue window and :math:`n_{s,r}` those
    from :math:`s` (:func:`fatigue_weight`), and :math:`w_f, w_s, B` = :data:`FRIENDS_BOUGHT_WEIGHT`,
    :data:`SHARED_TO_YOU_WEIGHT`, :data:`MAX_SOCIAL_BOOST`. Reads only the query's live state; with none (or the
    store down) scores pass through unchanged.

    Args:
        fatigue_half_shares: :math:`H`, the shares received at which a share's boost halves.
            (default: :data:`FATIGUE_HALF_SHARES`)
    """

    name = "SocialProof"

    def __init__(self, fatigue_half_shares: float = FATIGUE_HALF_SHARES):
        if not fatigue_half_shares > 0:
            raise ValueError(f"fatigue_half_shares must be > 0, got {fatigue_half_shares}")
        self.fatigue_half_shares = fatigue_half_shares

    def score(self, query: FeedQuery, candidates: Sequence[Candidate], scores: np.ndarray) -> np.ndarray:
        friends, shared = query.friends_bought, query.shared
        if not friends and not shared:
            return scores
        # Each product's boost once per entry of the live state (vectorised), then one dict look-up per candidate.
        boosts: dict[int, float] = {}
        if friends:
            n = len(friends)
            counts = np.fromiter((e.count for e in friends.values()), dtype=np.float64, count=n)
            ts = np.fromiter((e.ts for e in friends.values()), dtype=np.float64, count=n)
            boosts.update(zip(friends.keys(), (FRIENDS_BOUGHT_WEIGHT * np.log2(1 + counts)
                                               * recency(query.now, ts)).tolist(), strict=True))
        if shared:
            n = len(shared)
            ts = np.fromiter((e.ts for e in shared.values()), dtype=np.float64, count=n)
            weight = SHARED_TO_YOU_WEIGHT * recency(query.now, ts)
            fatigue = query.fatigue
            if fatigue.received:
                per_sharer = fatigue.by_sharer
                from_sharer = np.fromiter((per_sharer.get(e.sharer_id, 0) for e in shared.values()),
                                          dtype=np.float64, count=n)
                weight *= fatigue_weight(float(fatigue.received), from_sharer, self.fatigue_half_shares)
            for row, value in zip(shared.keys(), weight.tolist(), strict=True):
                boosts[row] = boosts.get(row, 0.0) + value
        rows = candidates.row_list if isinstance(candidates, Candidates) else rows_of(candidates).tolist()
        get = boosts.get
        boost = np.fromiter((get(row, 0.0) for row in rows), dtype=np.float64, count=len(rows))
        return scores + np.minimum(boost, MAX_SOCIAL_BOOST)

    @staticmethod
    def explains(query: FeedQuery) -> bool:
        """Whether :meth:`explain` can give any product a reason for this query (live social proof exists)."""
        return bool(query.friends_bought or query.shared)

    @staticmethod
    def explain(query: FeedQuery, product: int) -> tuple[Reason, ...]:
        reasons = []
        bought = query.friends_bought.get(product)
        if bought is not None:
            friends = "1 friend" if bought.count == 1 else f"{bought.count} friends"
            reasons.append(Reason("FRIENDS_BOUGHT", f"{friends} bought this"))
        share = query.shared.get(product)
        if share is not None:
            reasons.append(Reason("SHARED_TO_YOU", f"shared to you by {share.sharer_id}"))
        return tuple(reasons)

