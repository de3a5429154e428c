"""Adds the item-item part of the model's scores over what the user bought (training history and live)."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import FeedQuery


class ItemItemHydrator:
    """Sets ``item_scores`` from the model's item-item part (EASE, item-kNN, the graph filter) over ``bought``:
    a purchase recorded a second ago already moves the next feed, and a user the model never saw is served by
    what they bought live. Pure: run after :class:`LiveStateHydrator` (it needs ``bought``)."""

    name = "ItemItem"

    def hydrate(self, query: FeedQuery) -> FeedQuery:
        if query.model.item_item is None or not query.bought:
            return query
        bought = np.fromiter(query.bought, dtype=np.int64, count=len(query.bought))
        columns, weights = query.model.item_item_scores(bought)
        return query.with_(item_scores=(columns, weights)) if len(columns) else query
