"""Social candidates: products shared to the user (live), wherever the model ranks them."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import Candidate, FeedQuery
from sharerank.serving.feed.sources.base import model_scores
from sharerank.serving.feed.sources.friends_bought import SOCIAL_SOURCE_LIMIT


class SharedToYouSource:
    """Products in ``query.shared`` (newest first, at most :data:`SOCIAL_SOURCE_LIMIT`), scored by the model."""

    name = "SharedToYou"

    def applies(self, query: FeedQuery) -> bool:
        return bool(query.shared)

    def fetch(self, query: FeedQuery) -> list[Candidate]:
        rows = list(query.shared)[:SOCIAL_SOURCE_LIMIT]
        scores = model_scores(query, np.asarray(rows, dtype=np.int64)).tolist()
        return [Candidate(r, s, self.name) for r, s in zip(rows, scores, strict=True)]
