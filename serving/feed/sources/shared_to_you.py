"""Social candidates: products shared to the user (live), wherever the model ranks them."""

from __future__ import annotations

from itertools import islice

import numpy as np

from sharerank.serving.feed.query import Candidates, FeedQuery
from sharerank.serving.feed.sources.base import model_scores
from sharerank.serving.feed.sources.friends_bought import SOCIAL_SOURCE_LIMIT


class SharedToYouSource:
    """Products in ``query.shared`` (newest first, at most :data:`SOCIAL_SOURCE_LIMIT`), scored by the model."""

    name = "SharedToYou"

    def applies(self, query: FeedQuery) -> bool:
        return bool(query.shared)

    def fetch(self, query: FeedQuery) -> Candidates:
        rows = np.fromiter(islice(query.shared, SOCIAL_SOURCE_LIMIT), dtype=np.int64)
        return Candidates.from_source(rows, model_scores(query, rows), self.name)
