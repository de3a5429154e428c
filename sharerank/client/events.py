"""EventService from Python: record shares, purchases and views. RecordEvents is idempotent by ``event_id``, so
the client retries it like a read and a batch whose answer was lost is safe to send again (it comes back as
``duplicate_count``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from sharerank.client.base import AsyncClient, SyncClient
from sharerank.v1 import event_service_pb2, event_service_pb2_grpc


def _timestamp(event_time: float | None) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() if event_time is None else event_time) * 1e9))
    return stamp


def share_event(event_id: str, sharer_id: str, recipient_id: str, product_id: str,
                event_time: float | None = None) -> event_service_pb2.Event:
    """A share; ``event_time`` in unix seconds (default: now). Its ``event_id`` is what a purchase cites."""
    share = event_service_pb2.ShareEvent(sharer_id=sharer_id, recipient_id=recipient_id, product_id=product_id)
    return event_service_pb2.Event(event_id=event_id, event_time=_timestamp(event_time), share=share)


def purchase_event(event_id: str, user_id: str, product_id: str, share_id: str = "",
                   event_time: float | None = None) -> event_service_pb2.Event:
    """A purchase, crediting the share ``share_id`` when it came from one."""
    purchase = event_service_pb2.PurchaseEvent(user_id=user_id, product_id=product_id, share_id=share_id)
    return event_service_pb2.Event(event_id=event_id, event_time=_timestamp(event_time), purchase=purchase)


def view_event(event_id: str, user_id: str, product_id: str,
               event_time: float | None = None) -> event_service_pb2.Event:
    """A product view."""
    return event_service_pb2.Event(event_id=event_id, event_time=_timestamp(event_time),
                                   view=event_service_pb2.ViewEvent(user_id=user_id, product_id=product_id))


class EventClient(SyncClient):
    """Records events (a ``storefront`` token when the server has auth on). Arguments as
    :class:`~sharerank.client.base.ClientBase`."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = event_service_pb2_grpc.EventServiceStub(self.channel)

    def record_events(self, events: Iterable[event_service_pb2.Event], *,
                      timeout: float | None = None) -> event_service_pb2.RecordEventsResponse:
        """Records 1..1000 events as one batch: all of them, or none when one is invalid
        (:class:`~sharerank.client.errors.InvalidArgument` naming it in ``metadata``)."""
        return self._call(self.stub, "RecordEvents", event_service_pb2.RecordEventsRequest(events=events), timeout)


class AsyncEventClient(AsyncClient):
    """:class:`EventClient` on ``grpc.aio``: the same method, awaited."""

    def __init__(self, target: str | None = None, **kwargs: Any):
        super().__init__(target, **kwargs)
        self.stub = event_service_pb2_grpc.EventServiceStub(self.channel)

    async def record_events(self, events: Iterable[event_service_pb2.Event], *,
                            timeout: float | None = None) -> event_service_pb2.RecordEventsResponse:
        request = event_service_pb2.RecordEventsRequest(events=events)
        return await self._call(self.stub, "RecordEvents", request, timeout)
