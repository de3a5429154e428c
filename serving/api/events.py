"""EventService.RecordEvents: the servicer, and the batch's validation from proto into log records.

The whole batch is validated first, so an invalid event rejects the call with nothing applied; then the
recorder (:mod:`sharerank.serving.events.recorder`) logs and applies it.

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
``EVENT_LOG_UNAVAILABLE`` UNAVAILABLE: the event journal could not take the append (or, a shared stream,
                          answer whether a cited share exists); nothing new was acknowledged and
                          resending the batch is safe
========================  =======================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from sharerank.serving.api.spec import ServiceSpec, check_deadline, service_name
from sharerank.serving.errors import ServiceError, abort, invalid_argument
from sharerank.serving.events.log import LogRecord, PurchaseRecord, ShareRecord, ViewRecord
from sharerank.serving.events.recorder import EventRecorder
from sharerank.serving.ids import id_problem, quote
from sharerank.serving.model_holder import ModelHolder
from sharerank.v1 import event_service_pb2, event_service_pb2_grpc

MAX_EVENTS = 1000
"""Most events in one RecordEvents call."""

MAX_CLOCK_SKEW_S = 24 * 3600.0
"""How far in the future an ``event_time`` may be (client clocks drift). Further is an error: a far-future
event would win every "newest event" comparison in the online store until that time comes."""

# google.protobuf.Timestamp's valid range ends at 9999-12-31T23:59:59Z.
_MAX_TIMESTAMP_S = 253402300799


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
                           f"names no recorded share ({quote(record.share_id)}); record the share first (in this batch "
                           "or an earlier one) or leave share_id empty for an organic purchase", "UNKNOWN_SHARE")
    return records


class EventService(event_service_pb2_grpc.EventServiceServicer):
    """Event ingestion: validate, then the event log first and the online store after (see the recorder)."""

    def __init__(self, holder: ModelHolder, recorder: EventRecorder, clock: Callable[[], float] = time.time):
        self.holder, self.recorder, self.clock = holder, recorder, clock

    def RecordEvents(self, request, context):
        # Events are taken without a model too (the log matters most); the model only adds friends' fan-out.
        check_deadline(context)
        model = self.holder.current
        try:
            records = parse_record_events_request(request, self.recorder.is_share, self.clock())
            result = self.recorder.record(records, model.bundle if model is not None else None)
        except ServiceError as error:
            abort(context, error)
        return event_service_pb2.RecordEventsResponse(
            accepted_count=result.accepted, duplicate_count=result.duplicates,
            model_version=model.version if model is not None else "")


SERVICE = ServiceSpec(
    name=service_name(event_service_pb2, "EventService"), roles=frozenset({"storefront"}),
    build=lambda ctx: EventService(ctx.holder, EventRecorder(ctx.event_log, ctx.store, ctx.healer.note_missed)),
    register=event_service_pb2_grpc.add_EventServiceServicer_to_server)


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
