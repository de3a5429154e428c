"""The model's score on one scale per request, so the boosts and discounts after it mean the same everywhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sharerank.serving.feed.query import Candidate, FeedQuery


class ModelScorer:
    """Rescales the sources' raw model scores (inner products, or popularity shares) to relevance in [0, 1].

    .. math::
        r = \\operatorname{clip}\\left(\\frac{s - s_{(k)}}{s_{(1)} - s_{(k)}}, 0, 1\\right)

    where :math:`s_{(1)}` is the best raw score among the candidates and :math:`s_{(k)}` the ``query.depth``-th
    best (the bottom of what a ranked source fetched). The best candidate gets 1, the ranked pool spans
    [0, 1], and products from outside it (social sources) get 0: their place then comes from their boosts.
    All equal: all 1. Raw scores are inner products of any scale; this makes the social-proof, long-tail
    and diversity constants model-independent.
    """

    name = "Model"

    def score(self, query: FeedQuery, candidates: Sequence[Candidate], scores: np.ndarray) -> np.ndarray:
        raw = scores
        n = len(raw)
        if n == 0:
            return raw
        k = min(query.depth, n)
        best, floor = raw.max(), raw.min() if k == n else np.partition(raw, n - k)[n - k]
        if not best > floor:
            return np.ones(n)
        relevance = raw - floor
        relevance /= best - floor
        return np.minimum(np.maximum(relevance, 0.0, out=relevance), 1.0, out=relevance)  # np.clip, fewer calls
