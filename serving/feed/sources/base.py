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
    return scores + sparse_lookup(*query.item_scores, rows)


def sparse_lookup(columns: np.ndarray, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The weight of each of ``rows`` in a sparse vector given as ascending ``columns`` and ``weights``
    (0 where absent)."""
    if len(columns) == 0:
        return np.zeros(len(rows))
    at = np.minimum(np.searchsorted(columns, rows), len(columns) - 1)
    return np.where(columns[at] == rows, weights[at], 0.0)


def as_array(rows: frozenset[int]) -> np.ndarray:
    return np.fromiter(rows, dtype=np.int64, count=len(rows))
