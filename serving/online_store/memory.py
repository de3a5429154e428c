"""In-process online store: the embedded backend for the demo and for tests that need no Redis."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sharerank.serving.online_store.base import OnlineStore, Purchase


class InMemoryOnlineStore(OnlineStore):
    """:class:`OnlineStore` over a dict guarded by one lock.

    Same semantics as the Redis backend (newest ``ts`` wins per ``(user, product)``) but no TTL and no
    persistence: state lives and dies with the process. Each instance is its own namespace.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._purchases: dict[str, dict[str, float]] = {}

    def record_purchases(self, purchases: Sequence[Purchase]) -> None:
        with self._lock:
            for p in purchases:
                bought = self._purchases.setdefault(p.user_id, {})
                if p.ts > bought.get(p.product_id, float("-inf")):
                    bought[p.product_id] = p.ts

    def get_purchases_many(self, user_ids: Sequence[str]) -> list[dict[str, float]]:
        with self._lock:
            # Copies, so callers never hold a view that another thread's write changes under them.
            return [dict(self._purchases.get(user_id, {})) for user_id in user_ids]

    def ping(self) -> bool:
        return True

    def clear(self) -> None:
        with self._lock:
            self._purchases.clear()

    def close(self) -> None:
        """Nothing to release; the data stays readable so a closed demo store is not an error."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(users={len(self._purchases)})"
