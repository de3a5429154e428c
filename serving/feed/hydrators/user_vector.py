"""Chooses the vector the feed ranks by: the user's own embedding, or their social neighbourhood's."""

from __future__ import annotations

import numpy as np

from sharerank.serving.feed.query import FeedQuery


class UserVectorHydrator:
    """Sets ``user_vector`` (and ``neighbours``) from the model and the live state already on the query.

    - A user with training purchases ranks by their own embedding.
    - Otherwise (unknown to the model, or known without purchases: cold start) by the mean embedding of their
      friends who have training purchases: the model's social neighbours of their row, plus everyone who
      shared something to them (live). Friends without purchases carry no taste and are skipped.
    - Otherwise a known row keeps its own embedding (it may still carry views and social ties), and a user
      with nothing known gets no vector: the popular source serves them.
    - A model whose vectors score nothing (item-item models) gives no vector: its item-item part ranks.

    Pure: reads only the query; run after :class:`LiveStateHydrator` (it needs ``sharers``).
    """

    name = "UserVector"

    def hydrate(self, query: FeedQuery) -> FeedQuery:
        model, row = query.model, query.user_row
        if not model.has_vectors:
            return query.with_(user_vector=None, neighbours=0)
        if row is not None and model.has_history[row]:
            return query.with_(user_vector=model.user_embedding[row], neighbours=0)
        friends = model.friends_of(row) if row is not None else np.empty(0, dtype=np.int64)
        if query.sharers:
            users = model.user_rows
            sharers = [users[s] for s in query.sharers if s in users]
            friends = np.union1d(friends, np.asarray(sharers, dtype=np.int64))
        friends = friends[model.has_history[friends]]
        if len(friends):
            vector = model.user_embedding[friends].mean(axis=0, dtype=np.float32)
            return query.with_(user_vector=vector, neighbours=len(friends))
        return query.with_(user_vector=model.user_embedding[row] if row is not None else None, neighbours=0)
