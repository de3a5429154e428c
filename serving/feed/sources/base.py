"""What every source shares: the model score of any product row for the query's user."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import FeedQuery


def model_scores(query: FeedQuery, rows: np.ndarray) -> np.ndarray:
    """The model's raw score of each product in ``rows``: inner product with ``query.user_vector``, or the
    popularity share of the most bought product when there is no vector (what the popular source ranks by).

    Every source scores on this one scale, so candidates from different sources compare.
    """
    model = query.model
    if query.user_vector is None:
        return model.popularity[rows] / model.max_popularity
    return model.product_embedding[rows] @ query.user_vector


def as_array(rows: frozenset[int]) -> np.ndarray:
    return np.fromiter(rows, dtype=np.int64, count=len(rows))
