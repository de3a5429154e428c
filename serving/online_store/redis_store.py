"""Redis online store: the production backend, shared by every serving and ingest process."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from sharerank.serving.online_store.base import OnlineStore, OnlineStoreError, Purchase

_NINETY_DAYS_S = 90 * 24 * 3600
# SCAN/UNLINK page size for clear(): large enough to be quick, small enough not to stall Redis.
_CLEAR_BATCH = 1000


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Settings of :class:`RedisOnlineStore`; the defaults suit a server calling Redis on the request path.

    Query options in the URL (``?socket_timeout=1``) override the matching timeouts, as redis-py defines.

    Args:
        key_prefix: namespace in front of every key, so environments and tests can share one Redis.
            Non-empty, without ``{`` or ``}`` (they would change the hash tag). (default: ``"sr:"``)
        socket_timeout_s: limit on each read or write on the socket; the feed fails open past it.
            (default: ``0.2``)
        connect_timeout_s: limit on opening a connection. (default: ``0.2``)
        purchase_ttl_s: a user's purchase key expires this long after their last recorded purchase;
            ``None`` keeps it forever. (default: 90 days)
        max_connections: connections in the pool; a caller waits up to ``socket_timeout_s`` for a free one,
            so size it to the server's worker threads. (default: ``64``)
        retries: immediate retries of a command whose connection broke or timed out mid-call (a restart,
            a failover); every write is idempotent, so resending a pipeline is safe. Connections found dead
            when taken from the pool are replaced without counting as a retry. (default: ``1``)
    """

    key_prefix: str = "sr:"
    socket_timeout_s: float = 0.2
    connect_timeout_s: float = 0.2
    purchase_ttl_s: int | None = _NINETY_DAYS_S
    max_connections: int = 64
    retries: int = 1

    def __post_init__(self) -> None:
        if not self.key_prefix or "{" in self.key_prefix or "}" in self.key_prefix:
            raise ValueError(f"key_prefix must be non-empty and free of braces, got {self.key_prefix!r}")
        if self.socket_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("socket_timeout_s and connect_timeout_s must be > 0")
        if self.purchase_ttl_s is not None and self.purchase_ttl_s <= 0:
            raise ValueError(f"purchase_ttl_s must be > 0 or None, got {self.purchase_ttl_s}")
        if self.max_connections < 1 or self.retries < 0:
            raise ValueError("max_connections must be >= 1 and retries >= 0")


@contextmanager
def _backend_errors(action: str) -> Iterator[None]:
    """Turn any redis-py failure into :class:`OnlineStoreError`, the one error callers fail open on.

    Not only ConnectionError/TimeoutError: READONLY after a failover or OOM under maxmemory are outages too.
    """
    try:
        yield
    except redis.RedisError as exc:
        raise OnlineStoreError(f"redis {action} failed: {type(exc).__name__}: {exc}") from exc


def _escape_glob(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a prefix matches only itself."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


class RedisOnlineStore(OnlineStore):
    """:class:`OnlineStore` on Redis (>= 6.2, for ``ZADD GT``), one sorted set per user.

    The key layout is a written contract, ``serving/online_store/KEYS.md``: other tools may read and write
    these keys directly. The client is created on first use, so constructing the store never touches the
    network and a server can start while Redis is down. redis-py parses replies with hiredis when installed.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL, as redis-py accepts it.
        settings: see :class:`RedisSettings`. (default: ``RedisSettings()``)

    Raises:
        ValueError: ``url`` is malformed (checked without connecting).
    """

    def __init__(self, url: str, settings: RedisSettings | None = None) -> None:
        parse_url(url)  # a malformed URL fails here, at start-up, not as an outage on every request
        self.url = url
        self.settings = settings or RedisSettings()
        self._lock = threading.Lock()
        self._redis: redis.Redis | None = None

    def purchases_key(self, user_id: str) -> str:
        """The key of ``user_id``'s purchase set: ``{prefix}purchases:{<user_id>}`` (braces literal)."""
        return f"{self.settings.key_prefix}purchases:{{{user_id}}}"

    def record_purchases(self, purchases: Sequence[Purchase]) -> None:
        if not purchases:
            return
        # Collapse the batch to the newest ts per (user, product): one ZADD per user instead of one per event.
        newest: dict[str, dict[str, float]] = {}
        for p in purchases:
            bought = newest.setdefault(p.user_id, {})
            if p.ts > bought.get(p.product_id, float("-inf")):
                bought[p.product_id] = p.ts
        ttl = self.settings.purchase_ttl_s
        with _backend_errors("record_purchases"):
            with self._client().pipeline(transaction=False) as pipe:
                for user_id, scores in newest.items():
                    key = self.purchases_key(user_id)
                    # GT updates a member only to a larger score (and still adds new members), so the newest
                    # event wins inside Redis even when two writers race with out-of-order events.
                    pipe.zadd(key, scores, gt=True)
                    if ttl is not None:
                        pipe.expire(key, ttl)
                pipe.execute()

    def get_purchases_many(self, user_ids: Sequence[str]) -> list[dict[str, float]]:
        if not user_ids:
            return []
        with _backend_errors("get_purchases_many"):
            with self._client().pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.zrange(self.purchases_key(user_id), 0, -1, withscores=True)
                rows = pipe.execute()
        return [dict(row) for row in rows]

    def ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except redis.RedisError:
            return False

    def clear(self) -> None:
        client = self._client()
        pattern = _escape_glob(self.settings.key_prefix) + "*"
        with _backend_errors("clear"):
            batch: list[str] = []
            for key in client.scan_iter(match=pattern, count=_CLEAR_BATCH):
                batch.append(key)
                if len(batch) == _CLEAR_BATCH:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)

    def close(self) -> None:
        with self._lock:
            client, self._redis = self._redis, None
        if client is not None:
            client.close()

    def _client(self) -> redis.Redis:
        client = self._redis
        if client is None:
            with self._lock:
                if self._redis is None:
                    s = self.settings
                    pool = redis.BlockingConnectionPool.from_url(
                        self.url,
                        decode_responses=True,
                        socket_timeout=s.socket_timeout_s,
                        socket_connect_timeout=s.connect_timeout_s,
                        max_connections=s.max_connections,
                        timeout=s.socket_timeout_s,
                        retry=Retry(NoBackoff(), s.retries),
                    )
                    self._redis = redis.Redis(connection_pool=pool)
                client = self._redis
        return client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact_url(self.url)!r}, key_prefix={self.settings.key_prefix!r})"


def redact_url(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` query option) replaced by ``***``."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = parse_qsl(parts.query, keep_blank_values=True)
    safe_query = urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*/")
    # Rebuilt by hand: urlunsplit would turn "unix:///path" into "unix:/path".
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{safe_query}" if safe_query else "")
