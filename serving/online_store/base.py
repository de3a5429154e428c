"""The online store contract: live per-user state the feed reads at request time.

Training sees the event log; the online store sees what happened since, so the feed can stop showing a product
minutes after it was bought and can cite friends' fresh purchases as social proof. Every backend implements
:class:`OnlineStore` and is held to one contract suite (``tests/serving/test_online_store.py``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self


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


class OnlineStore(ABC):
    """Live per-user purchase state, keyed by ``user_id``, newest event time per ``(user, product)``.

    Implementations are thread-safe: one instance is shared by all request threads of a server.
    """

    @abstractmethod
    def record_purchases(self, purchases: Sequence[Purchase]) -> None:
        """Store a batch of purchases in one round trip.

        Keeps the latest ``ts`` per ``(user_id, product_id)``: replaying an older event (a retried ingest, a
        backfill) never overwrites newer state, so writes are idempotent and order-independent. An empty
        batch is a no-op.

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

    def get_purchases(self, user_id: str) -> dict[str, float]:
        """Read one user's purchases as ``{product_id: ts}``; ``{}`` for an unknown user.

        Raises:
            OnlineStoreError: the backend could not answer.
        """
        return self.get_purchases_many([user_id])[0]

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
