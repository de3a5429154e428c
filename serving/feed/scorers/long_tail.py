"""Long-tail exposure: products outside the popularity head get a small, fixed lift."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sharerank.serving.feed.filters.base import rows_of
from sharerank.serving.feed.query import Candidate, FeedQuery

LONG_TAIL_BOOST = 0.1
"""Added to long-tail products' scores, in relevance units (the pool spans [0, 1]): a tail product overtakes
a head product the model prefers by less than a tenth of the pool's score range. Small on purpose: it
breaks near-ties towards discovery without overriding the model."""


class LongTailScorer:
    """Adds :data:`LONG_TAIL_BOOST` to candidates outside the popularity head (``ModelBundle.long_tail``:
    all but the most-bought 20% of products, new products included), so the feed does not only repeat
    bestsellers."""

    name = "LongTail"

    def score(self, query: FeedQuery, candidates: Sequence[Candidate], scores: np.ndarray) -> np.ndarray:
        return scores + LONG_TAIL_BOOST * query.model.long_tail[rows_of(candidates)]
