"""Adds the user's live state to the query in one read: purchases, shares received, friends' purchases, share
fatigue."""

from __future__ import annotations

import logging
import time

from sharerank.serving.feed.query import FeedQuery
from sharerank.serving.online_store import OnlineStore, OnlineStoreError
from sharerank.serving.online_store.base import FriendsBought, ReceivedShare
from sharerank.serving.ratelog import RateLimitedLog

log = RateLimitedLog(logging.getLogger(__name__))

LIVE_STATE_LIMIT = 100
"""Newest entries read per live collection. A user with more live purchases than this (rare between
trainings) costs a second read of all their purchases, so "never show what was bought" holds for them too."""


class LiveStateHydrator:
    """Reads the user's live state from the online store once per request (one round trip).

    Sets ``bought`` (training history plus live purchases), ``friends_bought``, ``shared``, ``sharers`` and
    ``fatigue`` (shares received in the store's fatigue window);
    live entries for products the serving model does not know are dropped (``sharers`` keeps every sharer:
    they stand in for a cold user whatever they shared). Fails open: with the store down the query keeps the
    training history only, gets no social proof, and is marked degraded, because a feed without fresh
    features beats no feed.
    """

    name = "LiveState"

    def __init__(self, store: OnlineStore, limit: int = LIVE_STATE_LIMIT):
        self.store, self.limit = store, limit

    def hydrate(self, query: FeedQuery) -> FeedQuery:
        model = query.model
        bought = set(model.bought(query.user_row).tolist()) if query.user_row is not None else set()
        now = time.time()
        try:
            state = self.store.get_live_state(query.user_id, limit=self.limit)
            purchases = state.purchases
            if len(purchases) >= self.limit:  # truncated: the filter needs every stored purchase
                purchases = self.store.get_purchases(query.user_id)
        except OnlineStoreError as exc:
            log.warning("store-down", "online store unavailable, serving without live features: %s", exc)
            return query.with_(bought=frozenset(bought), now=now, degraded=(*query.degraded, self.name))
        rows = model.product_rows
        bought.update(rows[p] for p in purchases if p in rows)
        friends: dict[int, FriendsBought] = {}
        for entry in state.friends_bought:
            row = rows.get(entry.product_id)
            if row is not None:
                friends[row] = entry
        shared: dict[int, ReceivedShare] = {}
        for entry in state.shares_received:
            row = rows.get(entry.product_id)
            if row is not None and row not in shared:  # newest first: keep the newest share
                shared[row] = entry
        sharers = tuple(dict.fromkeys(entry.sharer_id for entry in state.shares_received))
        return query.with_(bought=frozenset(bought), now=now, friends_bought=friends, shared=shared, sharers=sharers,
                           fatigue=state.fatigue)
