"""Social candidates: products the user's friends bought recently (live), wherever the model ranks them."""

from __future__ import annotations

from itertools import islice

import numpy as np

from sharerank.serving.feed.query import Candidates, FeedQuery
from sharerank.serving.feed.sources.base import model_scores

SOCIAL_SOURCE_LIMIT = 50
"""Newest entries a social source turns into candidates; the social-proof scorer still boosts any candidate
with live social proof, whichever source found it."""


class FriendsBoughtSource:
    """Products in ``query.friends_bought`` (newest first), scored by the model: they may lie outside the
    embedding source's top-k, and the social-proof scorer decides how far friends' purchases lift them."""

    name = "FriendsBought"

    def applies(self, query: FeedQuery) -> bool:
        return bool(query.friends_bought)

    def fetch(self, query: FeedQuery) -> Candidates:
        rows = np.fromiter(islice(query.friends_bought, SOCIAL_SOURCE_LIMIT), dtype=np.int64)
        return Candidates.from_source(rows, model_scores(query, rows), self.name)
