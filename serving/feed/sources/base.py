"""What every source shares: the model score of any product row for the query's user."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import FeedQuery


def model_scores(query: FeedQuery, rows: np.ndarray) -> np.ndarray:
    """The model's raw score of each product in ``rows``: inner product with ``query.user_vector`` plus the
    item-item part over what the user bought (``query.item_scores``), or, when the model scores nothing for
    this user, the popularity share of the most bought product (what the popular source ranks by).

    Every source scores on this one scale, so candidates from different sources compare.
    """
    model = query.model
    if not query.has_model_scale:
        return model.popularity[rows] / model.max_popularity
    if query.user_vector is None:
        scores = np.zeros(len(rows))
    else:
        scores = (model.product_embedding[rows] @ query.user_vector).astype(np.float64)
    return add_item_scores(query, rows, scores)


def add_item_scores(query: FeedQuery, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``scores`` of ``rows`` plus their item-item part (zero for rows outside it)."""
    if query.item_scores is None or len(rows) == 0:
        return scores
    columns, weights = query.item_scores
    at = np.minimum(np.searchsorted(columns, rows), len(columns) - 1)
    hit = columns[at] == rows
    return scores + np.where(hit, weights[at], 0.0)


def as_array(rows: frozenset[int]) -> np.ndarray:
    return np.fromiter(rows, dtype=np.int64, count=len(rows))
