"""Online store: live per-user state (fresh purchases, shares received, friends' purchases, share fatigue) that
the feed reads at request time and RecordEvents writes.

Pick a backend by URL with :func:`open_online_store`; code against :class:`OnlineStore` only.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from sharerank.serving.online_store.base import (
    DEFAULT_FATIGUE_WINDOW_S,
    DEFAULT_MAX_ITEMS_PER_KEY,
    FRIEND_BUYERS_KEPT,
    MAX_BUYERS_PER_PRODUCT,
    FriendsBought,
    LiveState,
    OnlineStore,
    OnlineStoreError,
    Purchase,
    ReceivedShare,
    Share,
    ShareFatigue,
)
from sharerank.serving.online_store.memory import InMemoryOnlineStore
from sharerank.serving.online_store.redis_store import RedisOnlineStore, RedisSettings, redact_url

__all__ = [
    "DEFAULT_FATIGUE_WINDOW_S",
    "DEFAULT_MAX_ITEMS_PER_KEY",
    "FRIEND_BUYERS_KEPT",
    "MAX_BUYERS_PER_PRODUCT",
    "FriendsBought",
    "InMemoryOnlineStore",
    "LiveState",
    "OnlineStore",
    "OnlineStoreError",
    "Purchase",
    "ReceivedShare",
    "RedisOnlineStore",
    "RedisSettings",
    "Share",
    "ShareFatigue",
    "open_online_store",
]

logger = logging.getLogger(__name__)

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})


def open_online_store(
    url: str | None,
    *,
    fallback_to_memory: bool = False,
    settings: RedisSettings | None = None,
    processes: int = 1,
) -> OnlineStore:
    """Open the online store named by ``url``.

    ``memory://``, ``None`` or ``""`` give an :class:`InMemoryOnlineStore` (with the per-key cap and fatigue
    window of ``settings``, when given); ``redis://``, ``rediss://`` and ``unix://`` give a
    :class:`RedisOnlineStore` with ``settings``, and ``redis+cluster://`` / ``rediss+cluster://`` one on
    Redis Cluster (the URL names one node). A Redis store is returned even while
    Redis is down (it connects lazily and callers fail open on :class:`OnlineStoreError`), unless
    ``fallback_to_memory`` is set: then a Redis that does not answer one ping (bounded by the connect
    timeout, ~0.2-0.4 s with the defaults) is logged as a warning and replaced by an in-memory store, which
    suits the demo and a laptop without Redis, not a multi-process deployment: with ``processes`` > 1 (the
    servers that will share this store) the in-process store is refused, and there is no fallback.

    Raises:
        ValueError: the URL's scheme names no backend, or the in-process store for several processes.
    """
    scheme = urlsplit(url).scheme.lower() if url else "memory"
    if scheme == "memory" and processes > 1:
        raise ValueError(f"the in-process online store (memory://) is per process: {processes} processes would "
                         "each keep their own live state; set SHARERANK_REDIS_URL to a Redis (or redis+cluster://) "
                         "they share")
    if scheme == "memory":
        return _memory(settings)
    if scheme not in _REDIS_SCHEMES:
        raise ValueError(
            f"unsupported online store URL {redact_url(url)!r}: expected memory://, redis://, rediss://, "
            "unix://, redis+cluster:// or rediss+cluster://"
        )
    store = RedisOnlineStore(url, settings)
    if fallback_to_memory and processes == 1 and not store.ping():
        store.close()
        logger.warning("online store %s does not answer; using an in-memory store instead", redact_url(url))
        return _memory(settings)
    return store


def _memory(settings: RedisSettings | None) -> InMemoryOnlineStore:
    if settings is None:
        return InMemoryOnlineStore()
    return InMemoryOnlineStore(settings.max_items_per_key, settings.fatigue_window_s)
