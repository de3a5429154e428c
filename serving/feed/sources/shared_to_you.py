"""Social candidates: products shared to the user (live), wherever the model ranks them."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.caps.sharer import SHARES_PER_SHARER, remaining_by_sharer
from sharerank.serving.feed.query import Candidates, FeedQuery
from sharerank.serving.feed.sources.base import model_scores
from sharerank.serving.feed.sources.friends_bought import SOCIAL_SOURCE_LIMIT


class SharedToYouSource:
    """Products in ``query.shared`` (newest first, at most :data:`SOCIAL_SOURCE_LIMIT`), scored by the model.

    Takes from one sharer no more than the feed session may still show of theirs (the per-sharer cap, see
    :class:`~sharerank.serving.feed.caps.sharer.SharerCap`), skipping products the user may not get anyway
    (bought, excluded, served): a heavy sharer cannot fill the source's slots and crowd out everyone else.

    Args:
        per_sharer: the per-sharer cap of a feed session. (default: :data:`SHARES_PER_SHARER`)
    """

    name = "SharedToYou"

    def __init__(self, per_sharer: int = SHARES_PER_SHARER):
        self.per_sharer = per_sharer

    def applies(self, query: FeedQuery) -> bool:
        return bool(query.shared)

    def fetch(self, query: FeedQuery) -> Candidates:
        left = dict(remaining_by_sharer(query, self.per_sharer))
        blocked = query.blocked
        picked: list[int] = []
        for row, share in query.shared.items():
            if row in blocked or left[share.sharer_id] == 0:
                continue
            left[share.sharer_id] -= 1
            picked.append(row)
            if len(picked) == SOCIAL_SOURCE_LIMIT:
                break
        rows = np.asarray(picked, dtype=np.int64)
        return Candidates.from_source(rows, model_scores(query, rows), self.name)
