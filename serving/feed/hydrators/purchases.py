"""Adds what the user bought to the query: the model's training history plus live purchases."""

from __future__ import annotations

import logging

import numpy as np

from sharerank.serving.feed.query import FeedQuery
from sharerank.serving.online_store import OnlineStore, OnlineStoreError

log = logging.getLogger(__name__)


class PurchasesHydrator:
    """Reads the user's live purchases from the online store once per request.

    Fails open: with the store down the query keeps the training history only and is marked degraded,
    because a feed without fresh purchases beats no feed.
    """

    name = "Purchases"

    def __init__(self, store: OnlineStore):
        self.store = store

    def hydrate(self, query: FeedQuery) -> FeedQuery:
        model = query.model
        bought = set(model.bought(query.user_row).tolist()) if query.user_row is not None else set()
        degraded = query.degraded
        try:
            live = self.store.get_purchases(query.user_id)
        except OnlineStoreError as exc:
            log.warning("online store unavailable, serving without live purchases: %s", exc)
            live, degraded = {}, (*degraded, self.name)
        rows = model.product_rows
        bought.update(rows[p] for p in live if p in rows)
        return query.with_(bought=frozenset(bought), degraded=degraded)


def as_array(rows: frozenset[int]) -> np.ndarray:
    return np.fromiter(rows, dtype=np.int64, count=len(rows))
