"""The online store contract: live per-user state the feed reads at request time.

Training sees the event log; the online store sees what happened since, so the feed can stop showing a product
minutes after it was bought and can cite friends' fresh purchases and shares received as social proof. Every
backend implements :class:`OnlineStore` and is held to one contract suite (``tests/serving/test_online_store.py``).

Per user the store keeps three collections, each a map ``product_id -> newest event`` capped at the newest
``max_items_per_key`` products (older ones are dropped, so a hot user's state stays bounded), and per product
its recent buyers (``user_id -> newest purchase``, capped at :data:`MAX_BUYERS_PER_PRODUCT`), so seeding can
leave out who bought a launch since the model was trained:

- **purchases**: what the user bought (``ts`` of the newest purchase per product);
- **shares received**: products shared to the user, with the newest share's time and sharer;
- **friends bought**: products the user's friends bought (written by fan-out on write), with the newest time,
  and the up to :data:`FRIEND_BUYERS_KEPT` friends who bought it most recently.

and, for share fatigue, the shares each user received in the last ``fatigue_window_s`` seconds: one entry per
distinct share event (its ``event_id``) with its time and sharer, at most :data:`SHARE_EVENTS_KEPT`, read as
:class:`ShareFatigue` (shares received in the window, in total and per sharer). Counting distinct event ids
makes a replayed share count once; entries leave as the window passes them, and a user whose newest share left
the window has no fatigue state at all.

Every write keeps the newest event per ``(user, product)`` (ties broken by the larger id), so replays, retries
and out-of-order batches converge on the same state whatever their order. Fatigue counts are sets of event ids
in the window, so they converge too: a replay adds nothing, and a share older than the window never counts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import NamedTuple, Self

DEFAULT_MAX_ITEMS_PER_KEY = 500
"""Default cap on the products kept per user and collection; the newest ``(ts, product_id)`` win."""

MAX_BUYERS_PER_PRODUCT = 100_000
"""Buyers kept per product (the newest ``(ts, user_id)``): seeding excludes them; far more than a launch's seeds."""

FRIEND_BUYERS_KEPT = 10
"""Friends remembered per ``(user, product)`` in "friends bought": the ones with the newest purchases. The
count in :class:`FriendsBought` saturates here ("10 friends bought this" reads the same as 40)."""


DEFAULT_FATIGUE_WINDOW_S = 7 * 24 * 3600.0
"""Default share-fatigue window: shares received in the last 7 days count."""

SHARE_EVENTS_KEPT = 1000
"""Share events kept per recipient in the fatigue window (the newest ``(ts, event id)``): a fatigue count
saturates here, far past the point where the feed's down-weighting has done its work."""


class OnlineStoreError(Exception):
    """The backend could not serve a read or write (unreachable, timed out, or refused the command).

    Callers on the request path catch this and fail open: the feed loses its live features, not its answer.
    """


@dataclass(frozen=True, slots=True)
class Purchase:
    """One purchase event as the online store keeps it.

    Args:
        user_id: the buyer's external id (non-empty).
        product_id: the product's external id (non-empty).
        ts: event time in unix seconds (finite); it orders replays, not arrival time.
    """

    user_id: str
    product_id: str
    ts: float

    def __post_init__(self) -> None:
        # Validated here so every backend rejects the same input: Redis refuses a NaN score, a dict would not.
        if not self.user_id or not self.product_id:
            raise ValueError(f"Purchase needs a non-empty user_id and product_id, got {self!r}")
        if not math.isfinite(self.ts):
            raise ValueError(f"Purchase.ts must be finite unix seconds, got {self.ts!r}")


@dataclass(frozen=True, slots=True)
class Share:
    """One share event as the online store keeps it: ``sharer_id`` sent ``product_id`` to ``recipient_id``.

    Args:
        sharer_id: who shared (non-empty).
        recipient_id: who received it (non-empty, not the sharer).
        product_id: the product shared (non-empty).
        ts: event time in unix seconds (finite).
        event_id: the share's event id, what fatigue counts (distinct ids, so a replay counts once). Empty: the
            share is identified by ``(sharer_id, product_id, ts)`` (:attr:`event_key`). (default: ``""``)
    """

    sharer_id: str
    recipient_id: str
    product_id: str
    ts: float
    event_id: str = ""

    @property
    def event_key(self) -> str:
        """What the fatigue state counts this share as: ``event_id``, or its content when it has none."""
        return self.event_id or f"\x1f{self.sharer_id}\x1f{self.product_id}\x1f{self.ts!r}"

    def __post_init__(self) -> None:
        if not self.sharer_id or not self.recipient_id or not self.product_id:
            raise ValueError(f"Share needs non-empty sharer_id, recipient_id and product_id, got {self!r}")
        if self.sharer_id == self.recipient_id:
            raise ValueError(f"Share to oneself: {self!r}")
        if not math.isfinite(self.ts):
            raise ValueError(f"Share.ts must be finite unix seconds, got {self.ts!r}")


class ReceivedShare(NamedTuple):
    """A product shared to the user: the newest share of it, by ``sharer_id`` at ``ts`` (unix seconds)."""

    product_id: str
    sharer_id: str
    ts: float


class FriendsBought(NamedTuple):
    """A product the user's friends bought.

    ``count`` is how many distinct friends bought it, saturating at :data:`FRIEND_BUYERS_KEPT`; ``last_buyer``
    is the friend with the newest purchase, at ``ts`` (unix seconds).
    """

    product_id: str
    count: int
    last_buyer: str
    ts: float


@dataclass(frozen=True, slots=True)
class ShareFatigue:
    """How many shares a user received in the fatigue window (distinct share events, saturating at
    :data:`SHARE_EVENTS_KEPT`), in all and per sharer.

    Args:
        received: shares received in the window. (default: ``0``)
        by_sharer: ``{sharer_id: shares from them in the window}``, only sharers with at least one.
            (default: empty)
    """

    received: int = 0
    by_sharer: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the store knows about one user, newest first, each collection cut at the read's ``limit``.

    Args:
        purchases: ``{product_id: ts}`` of the user's purchases, newest first (dict order).
        shares_received: products shared to the user, newest first.
        friends_bought: products the user's friends bought, newest first.
        fatigue: shares received in the fatigue window (not cut by ``limit``). (default: none)
    """

    purchases: dict[str, float]
    shares_received: list[ReceivedShare]
    friends_bought: list[FriendsBought]
    fatigue: ShareFatigue = field(default_factory=ShareFatigue)


class OnlineStore(ABC):
    """Live per-user state, keyed by ``user_id``: purchases, shares received and friends' purchases, and the
    share events of the fatigue window.

    Newest event time per ``(user, product)`` wins everywhere, and each collection keeps the newest
    ``max_items_per_key`` products per user (see the module docstring). The fatigue window is measured on the
    store's ``clock`` (``time.time`` unless given), at writes (what left the window is dropped) and reads (what
    counts). Implementations are thread-safe: one instance is shared by all request threads of a server.
    """

    @abstractmethod
    def record_purchases(self, purchases: Sequence[Purchase]) -> None:
        """Store a batch of purchases in one round trip.

        Keeps the latest ``ts`` per ``(user_id, product_id)``: replaying an older event (a retried ingest, a
        backfill) never overwrites newer state, so writes are idempotent and order-independent. Each user
        keeps their newest ``max_items_per_key`` products, and each product its buyers (:meth:`get_buyers`).
        An empty batch is a no-op.

        Raises:
            OnlineStoreError: the backend could not take the write; nothing is acknowledged.
        """

    @abstractmethod
    def get_purchases_many(self, user_ids: Sequence[str]) -> list[dict[str, float]]:
        """Read several users' purchases in one round trip.

        Returns one ``{product_id: ts}`` per entry of ``user_ids``, in the same order (duplicates included),
        ``{}`` for a user with nothing stored. Each dict is the caller's to keep or mutate.

        Raises:
            OnlineStoreError: the backend could not answer.
        """

    @abstractmethod
    def get_buyers(self, product_id: str) -> dict[str, float]:
        """Who bought ``product_id`` (recorded by :meth:`record_purchases`), as ``{user_id: ts}`` of each buyer's
        newest purchase of it; the newest :data:`MAX_BUYERS_PER_PRODUCT` buyers; ``{}`` for an unknown product.

        Raises:
            OnlineStoreError: the backend could not answer.
        """

    def get_purchases(self, user_id: str) -> dict[str, float]:
        """Read one user's purchases as ``{product_id: ts}``; ``{}`` for an unknown user.

        Raises:
            OnlineStoreError: the backend could not answer.
        """
        return self.get_purchases_many([user_id])[0]

    @abstractmethod
    def record_shares(self, shares: Sequence[Share]) -> None:
        """Add a batch of shares to each recipient's "shares received" and fatigue state, in one round trip.

        Keeps, per ``(recipient_id, product_id)``, the share with the newest ``ts`` and its sharer (at equal
        ``ts`` the larger ``sharer_id``), so replays and reordering never overwrite newer state. Each share whose
        ``ts`` is inside the fatigue window (after ``clock() - fatigue_window_s``) joins the recipient's share
        events under its :attr:`Share.event_key`: a share recorded twice (a replay) is counted once. Events that
        left the window are dropped, and at most :data:`SHARE_EVENTS_KEPT` (the newest) are kept. An empty batch
        is a no-op.

        Raises:
            OnlineStoreError: the backend could not take the write; part of the batch may be applied (every
                write is idempotent, so the caller may simply resend it).
        """

    @abstractmethod
    def record_friend_purchases(self, items: Sequence[tuple[str, Purchase]]) -> None:
        """Fan-out on write: add each ``(follower_user_id, purchase)`` to the follower's "friends bought".

        Per ``(follower, product)`` keeps the newest ``ts`` over all friends' purchases, and the up to
        :data:`FRIEND_BUYERS_KEPT` buyers with the newest purchases (each buyer once, at their newest ``ts``;
        ties by the larger buyer id). Replays and reordering converge on the same state. An empty batch is a
        no-op.

        Raises:
            OnlineStoreError: as :meth:`record_shares`.
        """

    @abstractmethod
    def get_live_state(self, user_id: str, limit: int = 100) -> LiveState:
        """Read a user's purchases, shares received, friends' purchases and share fatigue in one round trip.

        Each collection comes newest first (``ts`` descending, ties by ``product_id`` descending) and holds
        at most ``limit`` products (and never more than the store's cap); an unknown user reads empty. Use
        :meth:`get_purchases` when every stored purchase matters (filtering what was bought). ``fatigue``
        counts the share events with ``ts`` after ``clock() - fatigue_window_s`` (whatever ``limit`` says,
        except that ``limit == 0`` reads nothing at all).

        Raises:
            ValueError: ``limit`` is negative.
            OnlineStoreError: the backend could not answer.
        """

    @abstractmethod
    def get_marker(self, name: str) -> str | None:
        """The value :meth:`set_marker` last stored under ``name``, or None (never set, or the state was lost).

        A marker lives exactly as long as the store's state: no TTL, gone with :meth:`clear` or a Redis that
        restarted empty. The healer keeps one per event log, so a store without it is known to have lost
        what was applied.

        Raises:
            OnlineStoreError: the backend could not answer.
        """

    @abstractmethod
    def set_marker(self, name: str, value: str) -> None:
        """Store ``value`` under ``name`` (see :meth:`get_marker`).

        Raises:
            OnlineStoreError: the backend could not take the write.
        """

    @abstractmethod
    def ping(self) -> bool:
        """Return True when the backend answers now; never raises (health checks and start-up probes)."""

    @abstractmethod
    def clear(self) -> None:
        """Drop everything under this store's namespace and nothing else (tests, demo resets).

        Raises:
            OnlineStoreError: the backend could not answer.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections and other resources; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
