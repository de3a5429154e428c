"""RecordEvents: validate a batch, append it to the event log, then update the live online state.

The order is the guarantee. The whole batch is validated first, so an invalid event rejects the call with
nothing applied. Then the new events (ids not logged yet) are appended to the log and fsync'd: from then on
they are safe, and the call acknowledges. Last, the online store gets them (purchases to the buyer,
fan-out to the buyer's friends, shares to the recipient); a store failure there is logged and counted,
never returned, because the events are already in the log and a retry would only be answered as
duplicates. Duplicates are not re-sent to the store: the log holds the first version of an event id, and a
replay carrying different content must not make the live state disagree with it. Views go to the log only.

Errors (all INVALID_ARGUMENT unless noted; ``ErrorInfo.reason``, with ``index`` and ``field`` in metadata):

========================  =======================================================================
``NO_EVENTS``             the request holds no events
``TOO_MANY_EVENTS``       more than :data:`MAX_EVENTS` events
``UNKNOWN_FIELDS``        the request, an event or a nested message has fields this server does not know
                          (a newer client: refusing beats silently dropping what it meant)
``EMPTY_EVENT_ID``        ``event_id`` is empty or blank
``INVALID_EVENT_ID``      ``event_id`` is too long or has control characters
``DUPLICATE_EVENT_ID``    two events of the batch share an ``event_id``
``INVALID_EVENT_TIME``    ``event_time`` is missing, not a valid timestamp, before the epoch, or more than
                          :data:`MAX_CLOCK_SKEW_S` in the future
``MISSING_EVENT_KIND``    none of ``share``, ``purchase``, ``view`` is set
``EMPTY_ID``              a user, product or share id is empty or blank
``INVALID_ID``            such an id is too long or has control characters
``SELF_SHARE``            a share's ``sharer_id`` equals its ``recipient_id``
``UNKNOWN_SHARE``         a purchase's ``share_id`` is not a share already recorded or in the same batch
``EVENT_LOG_UNAVAILABLE`` UNAVAILABLE: the log could not take the append; nothing new was acknowledged and
                          resending the batch is safe
========================  =======================================================================
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from sharerank.models.bundle import ModelBundle
from sharerank.serving import observability
from sharerank.serving.errors import ServiceError, invalid_argument
from sharerank.serving.event_log import (
    EventLog,
    EventLogError,
    LogRecord,
    PurchaseRecord,
    ShareRecord,
    ViewRecord,
    id_problem,
)
from sharerank.serving.online_store import OnlineStore, OnlineStoreError, Purchase, Share
from sharerank.v1 import event_service_pb2

log = logging.getLogger(__name__)

MAX_EVENTS = 1000
"""Most events in one RecordEvents call."""

MAX_CLOCK_SKEW_S = 24 * 3600.0
"""How far in the future an ``event_time`` may be (client clocks drift). Further is an error: a far-future
event would win every "newest event" comparison in the online store until that time comes."""

# google.protobuf.Timestamp's valid range ends at 9999-12-31T23:59:59Z.
_MAX_TIMESTAMP_S = 253402300799


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one RecordEvents call did: events newly logged, and events already logged (answered as success)."""

    accepted: int
    duplicates: int


def parse_record_events_request(request: event_service_pb2.RecordEventsRequest, is_share: Callable[[str], bool],
                                now: float) -> list[LogRecord]:
    """Validate a whole RecordEvents request and turn it into log records, in request order.

    Args:
        request: the request as received.
        is_share: whether an event id is a share already logged (a purchase may cite it as ``share_id``).
        now: the server's time in unix seconds (the bound for future event times).

    Raises:
        ServiceError: INVALID_ARGUMENT naming the first invalid event and field (see the module for reasons).
    """
    _check_known_fields(request, "request", None)
    count = len(request.events)
    if count == 0:
        raise invalid_argument("events: give 1 to 1000 events per call, got none", "NO_EVENTS", field="events")
    if count > MAX_EVENTS:
        raise invalid_argument(f"events: give 1 to {MAX_EVENTS} events per call, got {count}; split the batch",
                               "TOO_MANY_EVENTS", field="events", count=str(count))
    records: list[LogRecord] = []
    first_index: dict[str, int] = {}
    for index, event in enumerate(request.events):
        record = _parse_event(index, event, now)
        earlier = first_index.setdefault(record.event_id, index)
        if earlier != index:
            raise _invalid(index, "event_id", f"repeats the event_id of events[{earlier}]; event ids must be unique",
                           "DUPLICATE_EVENT_ID")
        records.append(record)
    batch_shares = {r.event_id for r in records if isinstance(r, ShareRecord)}
    for index, record in enumerate(records):
        if isinstance(record, PurchaseRecord) and record.share_id and record.share_id not in batch_shares \
                and not is_share(record.share_id):
            raise _invalid(index, "purchase.share_id",
                           f"names no recorded share ({record.share_id!r}); record the share first (in this batch "
                           "or an earlier one) or leave share_id empty for an organic purchase", "UNKNOWN_SHARE")
    return records


class EventRecorder:
    """Records RecordEvents batches: validate, append to the log durably, then update the online store.

    Thread-safe (the log serialises appends; the store is thread-safe).

    Args:
        event_log: where accepted events go first; the source of truth for training.
        store: the online store that gets live state after the log has the events.
        clock: unix seconds now (default: ``time.time``).
    """

    def __init__(self, event_log: EventLog, store: OnlineStore, clock: Callable[[], float] = time.time):
        self.event_log, self.store, self.clock = event_log, store, clock
        self._store_failing = False  # logs the outage's start and end, not every failed write
        self._state_lock = threading.Lock()

    def record(self, request: event_service_pb2.RecordEventsRequest, bundle: ModelBundle | None) -> RecordResult:
        """Validate, log and apply one request; ``bundle`` (the serving model, if any) gives buyers' friends.

        Raises:
            ServiceError: INVALID_ARGUMENT for a bad batch (nothing applied), UNAVAILABLE when the log failed.
        """
        records = parse_record_events_request(request, self.event_log.is_share, self.clock())
        try:
            fresh = self.event_log.append(records)
        except EventLogError as exc:
            log.error("RecordEvents: event log append failed: %s", exc)
            raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                               "cannot record events now: the event log could not take them; retry (replays are "
                               "deduplicated by event_id)", "EVENT_LOG_UNAVAILABLE") from exc
        self._apply_online(fresh, bundle)
        return RecordResult(accepted=len(fresh), duplicates=len(records) - len(fresh))

    def _apply_online(self, records: Sequence[LogRecord], bundle: ModelBundle | None) -> None:
        """Send logged events to the online store; failures are logged and counted, never raised."""
        purchases = [Purchase(r.user_id, r.product_id, r.ts) for r in records if isinstance(r, PurchaseRecord)]
        shares = [Share(r.sharer_id, r.recipient_id, r.product_id, r.ts) for r in records
                  if isinstance(r, ShareRecord)]
        writes: list[tuple[str, Callable[[Sequence], None], Sequence]] = [
            ("record_purchases", self.store.record_purchases, purchases),
            ("record_friend_purchases", self.store.record_friend_purchases, _fan_out(purchases, bundle)),
            ("record_shares", self.store.record_shares, shares),
        ]
        failed: list[str] = []
        last_error: OnlineStoreError | None = None
        attempted = False
        for operation, write, items in writes:
            if not items:
                continue
            attempted = True
            try:
                write(items)
            except OnlineStoreError as exc:
                failed.append(operation)
                last_error = exc
                observability.record_online_store_error(operation)
        if not attempted:
            return
        with self._state_lock:
            was_failing, self._store_failing = self._store_failing, bool(failed)
        if failed and not was_failing:
            log.warning("online store failing (%s: %s); events are logged, their live features are missing until "
                        "it recovers", ", ".join(failed), last_error)
        elif failed:
            log.debug("online store still failing (%s: %s)", ", ".join(failed), last_error)
        elif was_failing:
            log.info("online store recovered: recording live features again")


def _fan_out(purchases: Sequence[Purchase], bundle: ModelBundle | None) -> list[tuple[str, Purchase]]:
    """``(friend_id, purchase)`` for each friend of each buyer, as the serving model knows friendships.

    A buyer the model has not seen has no friends yet (they appear in the next model trained on the log).
    """
    if bundle is None or not purchases:
        return []
    rows, users = bundle.user_rows, bundle.users
    items: list[tuple[str, Purchase]] = []
    for p in purchases:
        row = rows.get(p.user_id)
        if row is None:
            continue
        items.extend((str(users[friend]), p) for friend in bundle.friends_of(row) if users[friend] != p.user_id)
    return items


def _parse_event(index: int, event: event_service_pb2.Event, now: float) -> LogRecord:
    _check_known_fields(event, f"events[{index}]", index)
    event_id = event.event_id
    problem = id_problem(event_id)
    if problem is not None:
        reason = "EMPTY_EVENT_ID" if problem == "is empty" else "INVALID_EVENT_ID"
        hint = "; every event needs a unique id (the idempotency key)" if reason == "EMPTY_EVENT_ID" else ""
        raise _invalid(index, "event_id", problem + hint, reason)
    ts = _event_time(index, event, now)
    kind = event.WhichOneof("kind")
    if kind is None:
        raise _invalid(index, "kind", "set exactly one of share, purchase or view", "MISSING_EVENT_KIND")
    body = getattr(event, kind)
    _check_known_fields(body, f"events[{index}].{kind}", index)
    if kind == "share":
        _check_ids(index, kind, body, ("sharer_id", "recipient_id", "product_id"))
        if body.sharer_id == body.recipient_id:
            raise _invalid(index, "share.recipient_id", "equals sharer_id; a share goes to someone else",
                           "SELF_SHARE")
        return ShareRecord(event_id, body.sharer_id, body.recipient_id, body.product_id, ts)
    if kind == "purchase":
        _check_ids(index, kind, body, ("user_id", "product_id"))
        if body.share_id:  # empty means organic; anything else must be a usable id
            _check_ids(index, kind, body, ("share_id",))
        return PurchaseRecord(event_id, body.user_id, body.product_id, ts, body.share_id)
    _check_ids(index, kind, body, ("user_id", "product_id"))
    return ViewRecord(event_id, body.user_id, body.product_id, ts)


def _event_time(index: int, event: event_service_pb2.Event, now: float) -> float:
    if not event.HasField("event_time"):
        raise _invalid(index, "event_time", "is required (when the event happened)", "INVALID_EVENT_TIME")
    _check_known_fields(event.event_time, f"events[{index}].event_time", index)
    seconds, nanos = event.event_time.seconds, event.event_time.nanos
    if not 0 <= nanos < 1_000_000_000:
        raise _invalid(index, "event_time", f"nanos must be in 0..999999999, got {nanos}", "INVALID_EVENT_TIME")
    if seconds < 0:
        raise _invalid(index, "event_time", "is before the unix epoch (1970-01-01T00:00:00Z)", "INVALID_EVENT_TIME")
    ts = seconds + nanos / 1e9
    if seconds > _MAX_TIMESTAMP_S or ts > now + MAX_CLOCK_SKEW_S:
        raise _invalid(index, "event_time", f"is more than {MAX_CLOCK_SKEW_S / 3600:g} hours in the future "
                       "(check the client's clock)", "INVALID_EVENT_TIME")
    return ts


def _check_ids(index: int, kind: str, body: Message, names: Sequence[str]) -> None:
    for name in names:
        problem = id_problem(getattr(body, name))
        if problem is not None:
            raise _invalid(index, f"{kind}.{name}", problem, "EMPTY_ID" if problem == "is empty" else "INVALID_ID")


def _check_known_fields(message: Message, where: str, index: int | None) -> None:
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({field.field_number for field in unknown})
        metadata = {"field": where, "field_numbers": ",".join(map(str, numbers))}
        if index is not None:
            metadata["index"] = str(index)
        raise invalid_argument(
            f"{where}: has fields this server does not know (numbers {', '.join(map(str, numbers))}); "
            "it may be older than the client's contract: upgrade the server or drop the fields",
            "UNKNOWN_FIELDS", **metadata)


def _invalid(index: int, field: str, problem: str, reason: str) -> ServiceError:
    path = f"events[{index}].{field}"
    return invalid_argument(f"{path}: {problem}", reason, index=str(index), field=path)
