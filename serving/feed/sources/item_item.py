"""Candidates from the model's item-item part: the products its weights tie to what the user bought."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import Candidates, FeedQuery, Reason
from sharerank.serving.feed.sources.base import as_array, model_scores

_BOUGHT_TOGETHER = (Reason("PERSONALIZED", "bought together with what you bought"),)


class ItemItemSource:
    """The ``query.depth`` best in-stock products (of the requested categories) among those the item-item part
    scores for this user, by the whole model score (vectors too, for the graph filter). FAISS cannot find
    them: for an item-item model the vectors are zero, and for the graph filter this part is full rank."""

    name = "ItemItem"

    def applies(self, query: FeedQuery) -> bool:
        return query.item_scores is not None

    def fetch(self, query: FeedQuery) -> Candidates:
        model = query.model
        rows = query.item_scores[0]
        eligible = model.in_stock[rows] & ~np.isin(rows, as_array(query.blocked))
        if query.categories:
            eligible &= np.isin(model.category[rows], list(query.categories))
        rows = rows[eligible]
        scores = model_scores(query, rows)
        if len(rows) > query.depth:
            best = np.argpartition(-scores, query.depth - 1)[:query.depth]
            rows, scores = rows[best], scores[best]
        order = np.argsort(-scores, kind="stable")
        return Candidates.from_source(rows[order], scores[order], self.name,
                                      _BOUGHT_TOGETHER if query.explain else ())
