"""Redis online store: the production backend, shared by every serving and ingest process."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import parse_url
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from sharerank.serving.online_store.base import (
    DEFAULT_FATIGUE_WINDOW_S,
    DEFAULT_MAX_ITEMS_PER_KEY,
    FRIEND_BUYERS_KEPT,
    MAX_BUYERS_PER_PRODUCT,
    SHARE_EVENTS_KEPT,
    FriendsBought,
    LiveState,
    OnlineStore,
    OnlineStoreError,
    Purchase,
    ReceivedShare,
    Share,
    ShareFatigue,
)
from sharerank.serving.tracing import span

_SPAN = {"db.system": "redis"}
"""Attributes of a round trip's span (OpenTelemetry's database conventions)."""
_NINETY_DAYS_S = 90 * 24 * 3600
# SCAN/UNLINK page size for clear(): large enough to be quick, small enough not to stall Redis.
_CLEAR_BATCH = 1000
# URL schemes that select Redis Cluster: the same URL without "+cluster" names one node to discover it from.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_Ttl = Annotated[int, Field(gt=0)] | None


class RedisSettings(BaseSettings):
    """Settings of :class:`RedisOnlineStore`; the defaults suit a server calling Redis on the request path.

    Arguments win; else each is read from ``SHARERANK_REDIS_<NAME>`` (``SHARERANK_REDIS_KEY_PREFIX``,
    ``SHARERANK_REDIS_SOCKET_TIMEOUT_S``, ``SHARERANK_REDIS_PURCHASE_TTL_S=none``, ...), the fatigue window from
    ``SHARERANK_FATIGUE_WINDOW_SECONDS`` as everywhere else, so every process of a deployment agrees. Checked by
    pydantic-settings: a bad value raises ``ValueError`` naming the field.

    Query options in the URL (``?socket_timeout=1``) override the matching timeouts, as redis-py defines.

    Args:
        key_prefix: namespace in front of every key, so environments and tests can share one Redis.
            Non-empty, without ``{`` or ``}`` (they would change the hash tag). (default: ``"sr:"``)
        socket_timeout_s: limit on each read or write on the socket; the feed fails open past it.
            (default: ``0.2``)
        connect_timeout_s: limit on opening a connection. (default: ``0.2``)
        purchase_ttl_s: a user's purchase key expires this long after their last recorded purchase;
            ``None`` keeps it forever. (default: 90 days)
        social_ttl_s: the same for a user's "shares received" and "friends bought" keys, counted from the
            last write to each. (default: 90 days)
        max_items_per_key: products kept per user in each collection (purchases, shares received, friends
            bought): the newest ``(ts, product_id)``; older ones are removed on write. (default: ``500``)
        fatigue_window_s: seconds a share received counts towards the recipient's fatigue; the share-event keys
            expire when their newest event leaves it. (default: 7 days)
        max_connections: connections in the pool; a caller waits up to ``socket_timeout_s`` for a free one,
            so size it to the server's worker threads. :meth:`RedisOnlineStore.get_live_state` on one node
            reads over one more connection per calling thread, outside the pool. (default: ``64``)
        retries: immediate retries of a command whose connection broke or timed out mid-call (a restart,
            a failover); every write is idempotent, so resending a pipeline is safe. Connections found dead
            when taken from the pool are replaced without counting as a retry; a reading thread's own
            connection found dead counts as one. (default: ``1``)
    """

    model_config = SettingsConfigDict(env_prefix="SHARERANK_REDIS_", env_parse_none_str="none", frozen=True,
                                      populate_by_name=True, extra="forbid")

    key_prefix: Annotated[str, Field(min_length=1, pattern=r"^[^{}]*$")] = "sr:"
    socket_timeout_s: _Seconds = 0.2
    connect_timeout_s: _Seconds = 0.2
    purchase_ttl_s: _Ttl = _NINETY_DAYS_S
    social_ttl_s: _Ttl = _NINETY_DAYS_S
    max_items_per_key: Annotated[int, Field(ge=1)] = DEFAULT_MAX_ITEMS_PER_KEY
    fatigue_window_s: _Seconds = Field(DEFAULT_FATIGUE_WINDOW_S, validation_alias="SHARERANK_FATIGUE_WINDOW_SECONDS")
    max_connections: Annotated[int, Field(ge=1)] = 64
    retries: Annotated[int, Field(ge=0)] = 1


@contextmanager
def _backend_errors(action: str) -> Iterator[None]:
    """Turn any redis-py failure into :class:`OnlineStoreError`, the one error callers fail open on.

    Not only ConnectionError/TimeoutError: READONLY after a failover or OOM under maxmemory are outages too.
    """
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:  # the latter: no cluster node answers at all
        raise OnlineStoreError(f"redis {action} failed: {type(exc).__name__}: {exc}") from exc


# Lua shared by the write scripts. `after` compares ids byte by byte: Lua's `>` on strings follows the
# server's locale (Redis sets LC_COLLATE), and the tie-break must match Python's and ZSET member order.
# `trim` keeps the newest `cap` members of a ZSET, the same order as ZREVRANGE, and drops their HASH fields.
_LUA_HELPERS = """
local function after(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local function trim(zkey, hkey, cap)
  local excess = redis.call('ZCARD', zkey) - cap
  if excess > 0 then
    local old = redis.call('ZRANGE', zkey, 0, excess - 1)
    redis.call('ZREMRANGEBYRANK', zkey, 0, excess - 1)
    for i = 1, #old, 1000 do
      redis.call('HDEL', hkey, unpack(old, i, math.min(i + 999, #old)))
    end
  end
end
local function touch(ttl, zkey, hkey)
  if ttl > 0 then
    redis.call('EXPIRE', zkey, ttl)
    redis.call('EXPIRE', hkey, ttl)
  end
end
"""

# KEYS: shared_to, shared_to_by, share_events, share_events_by. ARGV: ttl (0: none), cap, since (the fatigue
# window's start, exclusive), kept, then (product_id, ts, sharer_id, event_key) quadruples.
# A share replaces the stored one only when (ts, sharer_id) is larger, so replays never go backwards. A share in
# the window joins the share events under its event key (a replay writes the same member, score and field);
# then events at or before `since` go, the newest `kept` stay, and both keys expire when the newest one leaves
# the window (or go at once when none is left).
_RECORD_SHARES_LUA = _LUA_HELPERS + """
local zkey, hkey, ekey, ehkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl, cap, since, kept = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local start = tonumber(since)
for i = 5, #ARGV, 4 do
  local product, ts, sharer, event = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local t = tonumber(ts)
  local current = redis.call('ZSCORE', zkey, product)
  local newer = not current
  if current then
    local c = tonumber(current)
    if t > c then
      newer = true
    elseif t == c then
      local who = redis.call('HGET', hkey, product)
      newer = (not who) or after(sharer, who)
    end
  end
  if newer then
    redis.call('ZADD', zkey, ts, product)
    redis.call('HSET', hkey, product, sharer)
  end
  if t > start then
    redis.call('ZADD', ekey, ts, event)
    redis.call('HSET', ehkey, event, sharer)
  end
end
trim(zkey, hkey, cap)
touch(ttl, zkey, hkey)
local gone = redis.call('ZRANGEBYSCORE', ekey, '-inf', since)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', ekey, '-inf', since)
  for i = 1, #gone, 1000 do
    redis.call('HDEL', ehkey, unpack(gone, i, math.min(i + 999, #gone)))
  end
end
trim(ekey, ehkey, kept)
local newest = redis.call('ZREVRANGE', ekey, 0, 0, 'WITHSCORES')
if #newest == 0 then
  redis.call('DEL', ekey, ehkey)
else
  local left = math.max(1, math.ceil(tonumber(newest[2]) - start))
  redis.call('EXPIRE', ekey, left)
  redis.call('EXPIRE', ehkey, left)
end
return 0
"""

# KEYS: friends_bought, friends_bought_by. ARGV: ttl (0: none), cap, kept, then (product_id, ts, buyer_id)
# triples. Per product a JSON array [[buyer_id, ts], ...], newest (ts, buyer_id) first, each buyer once at
# their newest ts, at most `kept` buyers; the ZSET score is the first entry's ts. A buyer dropped earlier was
# older than every buyer kept, so keeping the top `kept` converges whatever the order of events.
_RECORD_FRIEND_PURCHASES_LUA = _LUA_HELPERS + """
local zkey, hkey = KEYS[1], KEYS[2]
local ttl, cap, kept = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function newer(ta, a, tb, b)
  if ta ~= tb then return ta > tb end
  return after(a, b)
end
local function by_newest(x, y) return newer(tonumber(x[2]), x[1], tonumber(y[2]), y[1]) end
for i = 4, #ARGV, 3 do
  local product, ts, buyer = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local t = tonumber(ts)
  local raw = redis.call('HGET', hkey, product)
  local buyers = {}
  if raw then buyers = cjson.decode(raw) end
  local changed, found = false, false
  for _, b in ipairs(buyers) do
    if b[1] == buyer then
      found = true
      if t > tonumber(b[2]) then
        b[2] = ts
        changed = true
      end
      break
    end
  end
  if not found then
    local n = #buyers
    if n < kept then
      buyers[n + 1] = {buyer, ts}
      changed = true
    elseif newer(t, buyer, tonumber(buyers[n][2]), buyers[n][1]) then
      buyers[n] = {buyer, ts}
      changed = true
    end
  end
  if changed then
    table.sort(buyers, by_newest)
    while #buyers > kept do table.remove(buyers) end
    redis.call('HSET', hkey, product, cjson.encode(buyers))
    redis.call('ZADD', zkey, buyers[1][2], product)
  end
end
trim(zkey, hkey, cap)
touch(ttl, zkey, hkey)
return 0
"""

# KEYS: purchases, shared_to, shared_to_by, friends_bought, friends_bought_by, share_events, share_events_by.
# ARGV: limit (>= 1), since (the fatigue window's start, exclusive).
# Returns {purchases rows, shares rows, sharers, friends rows, {count, last buyer} per friends row, [sharer, count,
# ...] of the window's share events}; rows are ZREVRANGE WITHSCORES, and a member without its hash field reads
# false. Buyer lists are decoded and share events counted here: the reply stays small, and the feed's Python
# builds no object it would drop.
_READ_LIVE_STATE_LUA = """
local limit = tonumber(ARGV[1])
local function newest(k)
  local rows = redis.call('ZREVRANGE', KEYS[k], 0, limit - 1, 'WITHSCORES')
  local members = {}
  for i = 1, #rows, 2 do members[#members + 1] = rows[i] end
  if #members == 0 then return rows, {} end
  return rows, redis.call('HMGET', KEYS[k + 1], unpack(members))
end
local shares, sharers = newest(2)
local friends, raw = newest(4)
local buyers = {}
for i, list in ipairs(raw) do
  if list then
    local kept = cjson.decode(list)
    buyers[i] = {#kept, kept[1][1]}
  else
    buyers[i] = false
  end
end
local events = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. ARGV[2], '+inf')
local counts, order = {}, {}
if #events > 0 then
  for _, sharer in ipairs(redis.call('HMGET', KEYS[7], unpack(events))) do
    if sharer then
      if not counts[sharer] then order[#order + 1] = sharer; counts[sharer] = 0 end
      counts[sharer] = counts[sharer] + 1
    end
  end
end
local fatigue = {}
for _, sharer in ipairs(order) do
  fatigue[#fatigue + 1] = sharer
  fatigue[#fatigue + 1] = counts[sharer]
end
return {redis.call('ZREVRANGE', KEYS[1], 0, limit - 1, 'WITHSCORES'), shares, sharers, friends, buyers, fatigue}
"""


@dataclass(frozen=True, slots=True)
class _Scripts:
    """The store's Lua scripts, registered on its client: redis-py's ``Script`` sends ``EVALSHA`` and loads the
    script when Redis lost it (``NOSCRIPT`` after a restart or failover; on a cluster, on every primary)."""

    record_shares: Script
    record_friend_purchases: Script
    read_live_state: Script

    @classmethod
    def on(cls, client: redis.Redis | RedisCluster) -> _Scripts:
        return cls(client.register_script(_RECORD_SHARES_LUA), client.register_script(_RECORD_FRIEND_PURCHASES_LUA),
                   client.register_script(_READ_LIVE_STATE_LUA))


def _score(ts: float) -> str:
    """``ts`` as text that Redis and Lua parse back to the same double (repr is the shortest exact form)."""
    return repr(float(ts))


def _escape_glob(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a prefix matches only itself."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


class RedisOnlineStore(OnlineStore):
    """:class:`OnlineStore` on Redis (>= 6.2, for ``ZADD GT``): per user one sorted set per collection, plus
    a hash with the sharer or buyers of each product; Lua scripts keep each user's keys consistent.

    The key layout is a written contract, ``serving/online_store/KEYS.md``: other tools may read and write
    these keys directly. The client is created on first use, so constructing the store never touches the
    network and a server can start while Redis is down. redis-py parses replies with hiredis when installed.

    Redis Cluster: a ``redis+cluster://`` (or ``rediss+cluster://``) URL names one node; redis-py's
    ``RedisCluster`` discovers the rest and routes each command by its key's slot. Every key is hash-tagged by
    the user (or product) id, so each script's keys share one slot, and pipelines are split per node by
    redis-py. A primary's failure fails only the commands for its slots (callers fail open) until its replica
    is promoted and the client refreshes the slot map.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL, as redis-py accepts it, or
            ``redis+cluster://`` / ``rediss+cluster://`` for Redis Cluster.
        settings: see :class:`RedisSettings`. (default: ``RedisSettings()``)
        clock: the time the fatigue window ends at, unix seconds; the scripts get it as an argument.
            (default: ``time.time``)

    Raises:
        ValueError: ``url`` is malformed (checked without connecting).
    """

    def __init__(self, url: str, settings: RedisSettings | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        scheme, sep, rest = url.partition("://")
        self.cluster = scheme.lower() in CLUSTER_SCHEMES
        self._node_url = f"{CLUSTER_SCHEMES[scheme.lower()]}{sep}{rest}" if self.cluster else url
        parse_url(self._node_url)  # a malformed URL fails here, at start-up, not as an outage on every request
        self.url = url
        self.settings = settings or RedisSettings()
        self.clock = clock
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: weakref.WeakSet[redis.Redis] = weakref.WeakSet()
        self._redis: redis.Redis | RedisCluster | None = None
        self._scripts: _Scripts

    def purchases_key(self, user_id: str) -> str:
        """The key of ``user_id``'s purchase set: ``{prefix}purchases:{<user_id>}`` (braces literal)."""
        return f"{self.settings.key_prefix}purchases:{{{user_id}}}"

    def buyers_key(self, product_id: str) -> str:
        """``{prefix}buyers:{<product_id>}``: who bought the product, scored by each buyer's newest purchase."""
        return f"{self.settings.key_prefix}buyers:{{{product_id}}}"

    def shared_to_key(self, user_id: str) -> str:
        """``{prefix}shared_to:{<user_id>}``: products shared to the user, scored by the newest share's ts."""
        return f"{self.settings.key_prefix}shared_to:{{{user_id}}}"

    def shared_to_by_key(self, user_id: str) -> str:
        """``{prefix}shared_to_by:{<user_id>}``: product -> the sharer of the newest share of it to the user."""
        return f"{self.settings.key_prefix}shared_to_by:{{{user_id}}}"

    def friends_bought_key(self, user_id: str) -> str:
        """``{prefix}friends_bought:{<user_id>}``: products the user's friends bought, scored by the newest ts."""
        return f"{self.settings.key_prefix}friends_bought:{{{user_id}}}"

    def friends_bought_by_key(self, user_id: str) -> str:
        """``{prefix}friends_bought_by:{<user_id>}``: product -> JSON ``[[buyer_id, ts], ...]``, newest first."""
        return f"{self.settings.key_prefix}friends_bought_by:{{{user_id}}}"

    def share_events_key(self, user_id: str) -> str:
        """``{prefix}share_events:{<user_id>}``: the share events of the fatigue window, scored by their ts."""
        return f"{self.settings.key_prefix}share_events:{{{user_id}}}"

    def share_events_by_key(self, user_id: str) -> str:
        """``{prefix}share_events_by:{<user_id>}``: event key -> the sharer of that share event."""
        return f"{self.settings.key_prefix}share_events_by:{{{user_id}}}"

    def marker_key(self, name: str) -> str:
        """``{prefix}marker:{<name>}``: a string without TTL (see :meth:`OnlineStore.get_marker`)."""
        return f"{self.settings.key_prefix}marker:{{{name}}}"

    def record_purchases(self, purchases: Sequence[Purchase]) -> None:
        if not purchases:
            return
        # Collapse the batch to the newest ts per (user, product): one ZADD per user instead of one per event.
        newest: dict[str, dict[str, float]] = {}
        by_product: dict[str, dict[str, float]] = {}
        for p in purchases:
            bought = newest.setdefault(p.user_id, {})
            if p.ts > bought.get(p.product_id, float("-inf")):
                bought[p.product_id] = p.ts
                by_product.setdefault(p.product_id, {})[p.user_id] = p.ts
        ttl = self.settings.purchase_ttl_s
        with _backend_errors("record_purchases"), span("online_store.record_purchases", **_SPAN):
            with self._client().pipeline(transaction=False) as pipe:
                for user_id, scores in newest.items():
                    key = self.purchases_key(user_id)
                    # GT updates a member only to a larger score (and still adds new members), so the newest
                    # event wins inside Redis even when two writers race with out-of-order events.
                    pipe.zadd(key, scores, gt=True)
                    # Keep the newest max_items_per_key (ranks count from the lowest score).
                    pipe.zremrangebyrank(key, 0, -self.settings.max_items_per_key - 1)
                    if ttl is not None:
                        pipe.expire(key, ttl)
                for product_id, buyers in by_product.items():
                    key = self.buyers_key(product_id)
                    pipe.zadd(key, buyers, gt=True)
                    pipe.zremrangebyrank(key, 0, -MAX_BUYERS_PER_PRODUCT - 1)
                    if ttl is not None:
                        pipe.expire(key, ttl)
                pipe.execute()

    def get_buyers(self, product_id: str) -> dict[str, float]:
        with _backend_errors("get_buyers"):
            return dict(self._client().zrange(self.buyers_key(product_id), 0, -1, withscores=True))

    def get_purchases_many(self, user_ids: Sequence[str]) -> list[dict[str, float]]:
        if not user_ids:
            return []
        with _backend_errors("get_purchases_many"):
            with self._client().pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.zrange(self.purchases_key(user_id), 0, -1, withscores=True)
                rows = pipe.execute()
        return [dict(row) for row in rows]

    def record_shares(self, shares: Sequence[Share]) -> None:
        by_recipient: dict[str, list[str]] = {}
        for share in shares:
            by_recipient.setdefault(share.recipient_id, []).extend(
                (share.product_id, _score(share.ts), share.sharer_id, share.event_key))
        if not by_recipient:
            return
        head = (self.settings.social_ttl_s or 0, self.settings.max_items_per_key, self._fatigue_since(),
                SHARE_EVENTS_KEPT)

        self._run_each("record_shares", lambda scripts: scripts.record_shares, [
            ((self.shared_to_key(user_id), self.shared_to_by_key(user_id), self.share_events_key(user_id),
              self.share_events_by_key(user_id)), (*head, *args)) for user_id, args in by_recipient.items()])

    def record_friend_purchases(self, items: Sequence[tuple[str, Purchase]]) -> None:
        by_follower: dict[str, list[str]] = {}
        for follower_id, p in items:
            if not follower_id:
                raise ValueError("record_friend_purchases needs non-empty follower user ids")
            by_follower.setdefault(follower_id, []).extend((p.product_id, _score(p.ts), p.user_id))
        if not by_follower:
            return
        head = (self.settings.social_ttl_s or 0, self.settings.max_items_per_key, FRIEND_BUYERS_KEPT)

        self._run_each("record_friend_purchases", lambda scripts: scripts.record_friend_purchases, [
            ((self.friends_bought_key(user_id), self.friends_bought_by_key(user_id)), (*head, *args))
            for user_id, args in by_follower.items()])

    def get_live_state(self, user_id: str, limit: int = 100) -> LiveState:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        limit = min(limit, self.settings.max_items_per_key)
        if limit == 0:
            return LiveState({}, [], [])
        keys = (self.purchases_key(user_id), self.shared_to_key(user_id), self.shared_to_by_key(user_id),
                self.friends_bought_key(user_id), self.friends_bought_by_key(user_id),
                self.share_events_key(user_id), self.share_events_by_key(user_id))
        reply = self._read("get_live_state", keys, (limit, self._fatigue_since()))
        return _live_state(*reply)

    def _fatigue_since(self) -> str:
        """The fatigue window's start (exclusive) on the store's clock, as a score argument."""
        return _score(self.clock() - self.settings.fatigue_window_s)

    def _read(self, action: str, keys: Sequence[str], args: Sequence[object]) -> list:
        """One run of the read script on ``keys`` (one slot).

        The feed's read runs on every request, so on one node it goes over the calling thread's own
        single-connection client (:meth:`_reader`): no shared pool queue and no pipeline object. A connection that
        broke or timed out is dropped and the command resent up to ``retries`` times (it only reads). On a cluster
        redis-py routes it by the keys' slot.
        """
        with _backend_errors(action), span(f"online_store.{action}", **_SPAN):
            client = self._client()
            return self._scripts.read_live_state(keys, args, client=client if self.cluster else self._reader(client))

    def _reader(self, client: redis.Redis) -> redis.Redis:
        """This thread's own client of ``client``'s server, one connection made on its first read: one per reading
        thread, beside the pool's ``max_connections``, closed by :meth:`close` or when its thread ends (so threads
        that come and go leave no sockets behind)."""
        local = self._local
        if getattr(local, "parent", None) is not client or local.pid != os.getpid():
            pool = client.connection_pool
            own = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=1,
                                       **pool.connection_kwargs)
            local.reader = redis.Redis(connection_pool=own, single_connection_client=True)
            local.parent, local.pid = client, os.getpid()
            with self._lock:
                self._readers.add(local.reader)
        return local.reader

    def _run_each(self, action: str, script: Callable[[_Scripts], Script],
                  calls: Sequence[tuple[Sequence[str], Sequence[object]]]) -> None:
        """Run ``script`` once per ``(keys, args)``, as one pipeline of ``EVALSHA`` (split per node on a cluster).

        When Redis lost the script (``NOSCRIPT``, after a restart or a failover) the calls run again one by one
        through the script object, which loads it (every write here is idempotent). Not a pipeline given the script
        itself: that checks ``SCRIPT EXISTS`` on every run, a round trip that cost writes 26-50% here, and a
        cluster pipeline refuses scripts.
        """
        with _backend_errors(action), span(f"online_store.{action}", **_SPAN):
            client = self._client()
            run = script(self._scripts)
            with client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    # A command rather than pipe.evalsha, which a cluster pipeline blocks; it routes the command by
                    # its keys' slot (one slot per call, by the hash tag).
                    pipe.execute_command("EVALSHA", run.sha, len(keys), *keys, *args)
                try:
                    pipe.execute()
                    return
                except NoScriptError:
                    pass
            for keys, args in calls:
                run(keys, args, client=client)

    def get_marker(self, name: str) -> str | None:
        with _backend_errors("get_marker"):
            return self._client().get(self.marker_key(name))

    def set_marker(self, name: str, value: str) -> None:
        with _backend_errors("set_marker"):
            self._client().set(self.marker_key(name), value)

    def ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except (redis.RedisError, RedisClusterException):
            return False

    def clear(self) -> None:
        pattern = _escape_glob(self.settings.key_prefix) + "*"
        with _backend_errors("clear"):
            client = self._client()  # on a cluster, SCAN visits every primary and UNLINK splits by slot
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
            readers = list(self._readers)
        for reader in readers:
            reader.close()
            reader.connection_pool.disconnect()
        if client is not None:
            client.close()
            if not self.cluster:  # a client given its pool leaves the pool's connections open on close
                client.connection_pool.disconnect()

    def _client(self) -> redis.Redis | RedisCluster:
        client = self._redis
        if client is None:
            with self._lock:
                if self._redis is None and self.cluster:
                    s = self.settings
                    # Connects to discover the slot map, so it may raise: callers run it under _backend_errors.
                    cluster = RedisCluster.from_url(
                        self._node_url,
                        decode_responses=True,
                        socket_timeout=s.socket_timeout_s,
                        socket_connect_timeout=s.connect_timeout_s,
                        max_connections=s.max_connections,
                        retry=Retry(NoBackoff(), s.retries),
                    )
                    self._scripts, self._redis = _Scripts.on(cluster), cluster
                elif self._redis is None:
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
                    single = redis.Redis(connection_pool=pool)
                    self._scripts, self._redis = _Scripts.on(single), single
                client = self._redis
        return client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={redact_url(self.url)!r}, key_prefix={self.settings.key_prefix!r})"


def _live_state(purchases: list[str], shares: list[str], sharers: list[str | None], friends: list[str],
                buyers: list[list | None], fatigue: list) -> LiveState:
    """The read script's reply as a :class:`LiveState`; rows are flat ``[member, score, ...]`` lists, and a member
    whose hash field is missing (not written by this store's scripts) is skipped."""
    rows = iter(purchases)
    found = iter(shares)
    shares_received = [ReceivedShare(product_id, sharer, float(ts))
                       for product_id, ts, sharer in zip(found, found, sharers, strict=True) if sharer is not None]
    found = iter(friends)
    friends_bought = [FriendsBought(product_id, entry[0], entry[1], float(ts))
                      for product_id, ts, entry in zip(found, found, buyers, strict=True) if entry is not None]
    counts = iter(fatigue)
    by_sharer = {sharer: int(count) for sharer, count in zip(counts, counts, strict=True)}
    return LiveState(purchases={product_id: float(ts) for product_id, ts in zip(rows, rows, strict=True)},
                     shares_received=shares_received, friends_bought=friends_bought,
                     fatigue=ShareFatigue(sum(by_sharer.values()), by_sharer))


def redact_url(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` query option) replaced by ``***``."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = parse_qsl(parts.query, keep_blank_values=True)
    safe_query = urlencode([(k, "***" if k == "password" else v) for k, v in query], safe="*/")
    # Rebuilt by hand: urlunsplit would turn "unix:///path" into "unix:/path".
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{safe_query}" if safe_query else "")
