"""The event recorder: append a validated batch to the event log, then update the live online state.

The order is the guarantee. The batch arrives validated (:mod:`sharerank.serving.api.events`); the new
events (ids not logged yet) are appended to the log and fsync'd: from then on they are safe, and the call
acknowledges. Last, the online store gets them (purchases to the buyer, fan-out to the buyer's friends,
shares to the recipient); a store failure there is logged and counted, never returned, because the events
are already in the log and a retry would only be answered as duplicates: the healer
(:mod:`sharerank.serving.events.healer`) re-applies them from the log once the store answers. Duplicates are
not re-sent to the
store: the log holds the first version of an event id, and a replay carrying different content must not make
the live state disagree with it. Views go to the log only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving import observability
from sharerank.serving.errors import ServiceError
from sharerank.serving.events.journal import EventJournal
from sharerank.serving.events.log import EventLogError, LogRecord, PurchaseRecord, ShareRecord
from sharerank.serving.online_store import OnlineStore, OnlineStoreError, Purchase, Share

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one RecordEvents call did: events newly logged, and events already logged (answered as success)."""

    accepted: int
    duplicates: int


class EventRecorder:
    """Records validated batches: append to the log durably, then update the online store.

    Thread-safe (the log serialises appends; the store is thread-safe).

    Args:
        event_log: the journal accepted events go to first (file log or shared stream); the source of truth.
        store: the online store that gets live state after the log has the events.
    """

    def __init__(self, event_log: EventJournal, store: OnlineStore,
                 on_missed: Callable[[dict[str, int]], None] = lambda offsets: None):
        self.event_log, self.store, self.on_missed = event_log, store, on_missed
        self._store_failing = False  # logs the outage's start and end, not every failed write
        self._state_lock = threading.Lock()

    def is_share(self, event_id: str) -> bool:
        """Whether the journal holds a share with this id.

        Raises:
            ServiceError: UNAVAILABLE when the journal (a shared stream) does not answer.
        """
        try:
            return self.event_log.is_share(event_id)
        except EventLogError as exc:
            log.error("RecordEvents: event journal lookup failed: %s", exc)
            raise _unavailable() from exc

    def record(self, records: Sequence[LogRecord], bundle: ModelBundle | None) -> RecordResult:
        """Log and apply one validated batch; ``bundle`` (the serving model, if any) gives buyers' friends.

        Raises:
            ServiceError: UNAVAILABLE when the log could not take the batch (nothing new was acknowledged).
        """
        start = self.event_log.offsets()  # at or before where this batch lands: where a replay must begin
        try:
            fresh = self.event_log.append(records)
        except EventLogError as exc:
            log.error("RecordEvents: event log append failed: %s", exc)
            raise _unavailable() from exc
        self._apply_online(fresh, bundle, start)
        return RecordResult(accepted=len(fresh), duplicates=len(records) - len(fresh))

    def _apply_online(self, records: Sequence[LogRecord], bundle: ModelBundle | None, start: dict[str, int]) -> None:
        """Send logged events to the online store; failures are logged, counted and reported to ``on_missed``
        (the healer re-applies the log from ``start``), never raised."""
        writes = live_writes(self.store, records, bundle)
        failed: list[str] = []
        last_error: OnlineStoreError | None = None
        for operation, write, items in writes:
            try:
                write(items)
            except OnlineStoreError as exc:
                failed.append(operation)
                last_error = exc
                observability.record_online_store_error(operation)
        if not writes:
            return
        if failed:
            self.on_missed(start)
        with self._state_lock:
            was_failing, self._store_failing = self._store_failing, bool(failed)
        if failed and not was_failing:
            log.warning("online store failing (%s: %s); events are logged, their live features are missing until "
                        "it recovers and the log's tail is re-applied", ", ".join(failed), last_error)
        elif failed:
            log.debug("online store still failing (%s: %s)", ", ".join(failed), last_error)
        elif was_failing:
            log.info("online store recovered: recording live features again")


def _unavailable() -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, "cannot record events now: the event journal could not take "
                        "them; retry (replays are deduplicated by event_id)", "EVENT_LOG_UNAVAILABLE")


def live_writes(store: OnlineStore, records: Sequence[LogRecord], bundle: ModelBundle | None
                ) -> list[tuple[str, Callable[[Sequence], None], Sequence]]:
    """The online-store writes that apply ``records``, as ``(operation, write, items)``, empty ones left out:
    purchases to the buyer and fanned out to their friends (as ``bundle`` knows them), shares to the recipient
    (with their event ids, which the recipient's fatigue counts). Every write is idempotent, so applying the same
    records again (a replay) changes nothing."""
    purchases = [Purchase(r.user_id, r.product_id, r.ts) for r in records if isinstance(r, PurchaseRecord)]
    shares = [Share(r.sharer_id, r.recipient_id, r.product_id, r.ts, r.event_id)
              for r in records if isinstance(r, ShareRecord)]
    writes = [("record_purchases", store.record_purchases, purchases),
              ("record_friend_purchases", store.record_friend_purchases, _fan_out(purchases, bundle)),
              ("record_shares", store.record_shares, shares)]
    return [(operation, write, items) for operation, write, items in writes if items]


def _fan_out(purchases: Sequence[Purchase], bundle: ModelBundle | None) -> list[tuple[str, Purchase]]:
    """``(friend_id, purchase)`` for each friend of each buyer, as the serving model knows friendships.

    A buyer the model has not seen has no friends yet (they appear in the next model trained on the log). A buyer
    the model flags as a collusive-ring member is no social proof: their purchases reach only their own state.
    """
    if bundle is None or not purchases:
        return []
    rows, users, ring = bundle.user_rows, bundle.users, bundle.ring_members
    items: list[tuple[str, Purchase]] = []
    for p in purchases:
        row = rows.get(p.user_id)
        if row is None or row in ring:
            continue
        items.extend((str(users[friend]), p) for friend in bundle.friends_of(row) if users[friend] != p.user_id)
    return items


