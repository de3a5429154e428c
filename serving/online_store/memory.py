"""In-process online store: the embedded backend for the demo and for tests that need no Redis."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from sharerank.serving.online_store.base import (
    DEFAULT_FATIGUE_WINDOW_S,
    DEFAULT_MAX_ITEMS_PER_KEY,
    FRIEND_BUYERS_KEPT,
    MAX_BUYERS_PER_PRODUCT,
    SHARE_EVENTS_KEPT,
    FriendsBought,
    LiveState,
    OnlineStore,
    Purchase,
    ReceivedShare,
    Share,
    ShareFatigue,
)

# (ts, id) pairs: tuples compare ts first, then the id, the tie-break every backend uses.
_Buyers = list[tuple[float, str]]


class InMemoryOnlineStore(OnlineStore):
    """:class:`OnlineStore` over dicts guarded by one lock.

    Same semantics as the Redis backend (newest ``ts`` wins per ``(user, product)``, the same caps and
    tie-breaks, share events dropped once they leave the fatigue window) but no TTL and no persistence: state
    lives and dies with the process. Each instance is its own namespace.

    Args:
        max_items_per_key: products kept per user and collection, the newest ``(ts, product_id)`` first.
            (default: :data:`~sharerank.serving.online_store.base.DEFAULT_MAX_ITEMS_PER_KEY`)
        fatigue_window_s: seconds a share received counts towards the recipient's fatigue.
            (default: :data:`~sharerank.serving.online_store.base.DEFAULT_FATIGUE_WINDOW_S`, 7 days)
        clock: the time the fatigue window ends at, unix seconds. (default: ``time.time``)
    """

    def __init__(self, max_items_per_key: int = DEFAULT_MAX_ITEMS_PER_KEY,
                 fatigue_window_s: float = DEFAULT_FATIGUE_WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        if max_items_per_key < 1:
            raise ValueError(f"max_items_per_key must be >= 1, got {max_items_per_key}")
        if not (math.isfinite(fatigue_window_s) and fatigue_window_s > 0):
            raise ValueError(f"fatigue_window_s must be > 0 seconds, got {fatigue_window_s}")
        self.max_items_per_key = max_items_per_key
        self.fatigue_window_s, self.clock = fatigue_window_s, clock
        self._lock = threading.Lock()
        self._purchases: dict[str, dict[str, float]] = {}
        self._shares: dict[str, dict[str, tuple[float, str]]] = {}  # recipient -> product -> (ts, sharer)
        self._friends: dict[str, dict[str, _Buyers]] = {}  # follower -> product -> buyers, newest first
        self._buyers: dict[str, dict[str, float]] = {}  # product -> buyer -> newest ts
        self._share_events: dict[str, dict[str, tuple[float, str]]] = {}  # recipient -> event key -> (ts, sharer)
        self._markers: dict[str, str] = {}

    def record_purchases(self, purchases: Sequence[Purchase]) -> None:
        with self._lock:
            touched: set[str] = set()
            for p in purchases:
                bought = self._purchases.setdefault(p.user_id, {})
                if p.ts > bought.get(p.product_id, float("-inf")):
                    bought[p.product_id] = p.ts
                    touched.add(p.user_id)
            for user_id in touched:
                self._trim(self._purchases[user_id], lambda ts: ts)
            for p in purchases:
                buyers = self._buyers.setdefault(p.product_id, {})
                if p.ts > buyers.get(p.user_id, float("-inf")):
                    buyers[p.user_id] = p.ts
                    if len(buyers) > MAX_BUYERS_PER_PRODUCT:
                        _trim_to(buyers, MAX_BUYERS_PER_PRODUCT)

    def get_buyers(self, product_id: str) -> dict[str, float]:
        with self._lock:
            return dict(self._buyers.get(product_id, {}))

    def get_purchases_many(self, user_ids: Sequence[str]) -> list[dict[str, float]]:
        with self._lock:
            # Copies, so callers never hold a view that another thread's write changes under them.
            return [dict(self._purchases.get(user_id, {})) for user_id in user_ids]

    def record_shares(self, shares: Sequence[Share]) -> None:
        with self._lock:
            touched: set[str] = set()
            for s in shares:
                inbox = self._shares.setdefault(s.recipient_id, {})
                current = inbox.get(s.product_id)
                if current is None or (s.ts, s.sharer_id) > current:
                    inbox[s.product_id] = (s.ts, s.sharer_id)
                    touched.add(s.recipient_id)
            for user_id in touched:
                self._trim(self._shares[user_id], lambda entry: entry[0])
            since = self.clock() - self.fatigue_window_s
            recipients: set[str] = set()
            for s in shares:
                if s.ts > since:
                    self._share_events.setdefault(s.recipient_id, {})[s.event_key] = (s.ts, s.sharer_id)
                recipients.add(s.recipient_id)
            for user_id in recipients:
                events = self._share_events.get(user_id)
                if events is None:
                    continue
                for key in [key for key, (ts, _) in events.items() if ts <= since]:
                    del events[key]
                _trim_to(events, SHARE_EVENTS_KEPT, lambda entry: entry[0])
                if not events:  # as a Redis key whose newest member left the window: gone
                    del self._share_events[user_id]

    def record_friend_purchases(self, items: Sequence[tuple[str, Purchase]]) -> None:
        if not all(follower_id for follower_id, _ in items):
            raise ValueError("record_friend_purchases needs non-empty follower user ids")
        with self._lock:
            touched: set[str] = set()
            for follower_id, p in items:
                bought = self._friends.setdefault(follower_id, {})
                buyers = bought.get(p.product_id, [])
                merged = _merge_buyer(buyers, p.user_id, p.ts)
                if merged is not None:
                    bought[p.product_id] = merged
                    touched.add(follower_id)
            for user_id in touched:
                self._trim(self._friends[user_id], lambda buyers: buyers[0][0])

    def get_live_state(self, user_id: str, limit: int = 100) -> LiveState:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            purchases = _newest(self._purchases.get(user_id, {}), lambda ts: ts, limit)
            shares = _newest(self._shares.get(user_id, {}), lambda entry: entry[0], limit)
            friends = _newest(self._friends.get(user_id, {}), lambda buyers: buyers[0][0], limit)
            fatigue = ShareFatigue()
            if limit:
                since = self.clock() - self.fatigue_window_s
                by_sharer = Counter(sharer for ts, sharer in self._share_events.get(user_id, {}).values()
                                    if ts > since)
                fatigue = ShareFatigue(sum(by_sharer.values()), dict(by_sharer))
            return LiveState(
                purchases={product_id: ts for product_id, ts in purchases},
                shares_received=[ReceivedShare(product_id, sharer, ts) for product_id, (ts, sharer) in shares],
                friends_bought=[FriendsBought(product_id, len(buyers), buyers[0][1], buyers[0][0])
                                for product_id, buyers in friends],
                fatigue=fatigue,
            )

    def get_marker(self, name: str) -> str | None:
        with self._lock:
            return self._markers.get(name)

    def set_marker(self, name: str, value: str) -> None:
        with self._lock:
            self._markers[name] = value

    def ping(self) -> bool:
        return True

    def clear(self) -> None:
        with self._lock:
            self._purchases.clear()
            self._shares.clear()
            self._friends.clear()
            self._buyers.clear()
            self._share_events.clear()
            self._markers.clear()

    def close(self) -> None:
        """Nothing to release; the data stays readable so a closed demo store is not an error."""

    def _trim(self, entries: dict, ts_of) -> None:
        _trim_to(entries, self.max_items_per_key, ts_of)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(users={len(self._purchases)}, max_items_per_key={self.max_items_per_key})"


def _trim_to(entries: dict, cap: int, ts_of=lambda ts: ts) -> None:
    """Drop the oldest entries (by ``(ts, key)``) beyond ``cap``, in place."""
    excess = len(entries) - cap
    if excess > 0:
        for key, _ in heapq.nsmallest(excess, entries.items(), key=lambda kv: (ts_of(kv[1]), kv[0])):
            del entries[key]


def _newest(entries: dict, ts_of, limit: int) -> list:
    """The ``limit`` newest ``(product_id, value)`` pairs, by ``(ts, product_id)`` descending."""
    return heapq.nlargest(limit, entries.items(), key=lambda kv: (ts_of(kv[1]), kv[0]))


def _merge_buyer(buyers: _Buyers, buyer: str, ts: float) -> _Buyers | None:
    """``buyers`` (newest first) with ``buyer``'s purchase at ``ts`` merged in, or None when nothing changes.

    Keeps each buyer once at their newest ``ts`` and only the :data:`FRIEND_BUYERS_KEPT` newest buyers. A buyer
    dropped earlier was older than everyone kept, so keeping the top ones is order-independent.
    """
    for i, (seen_ts, seen) in enumerate(buyers):
        if seen == buyer:
            if ts <= seen_ts:
                return None
            merged = [*buyers[:i], (ts, buyer), *buyers[i + 1:]]
            break
    else:
        if len(buyers) >= FRIEND_BUYERS_KEPT and (ts, buyer) <= buyers[-1]:
            return None
        merged = [*buyers, (ts, buyer)]
    merged.sort(reverse=True)
    return merged[:FRIEND_BUYERS_KEPT]
