"""The shared event journal: a NATS JetStream stream that every serving replica writes.

Why JetStream (and not Redis Streams): it is on every machine here, it stores to disk by itself, and it drops a
message whose ``Nats-Msg-Id`` it stored within the stream's duplicate window, across every publisher: a batch
resent to another replica after a timeout is answered as duplicates without a line of our own locking. Redis
Streams would need AOF with ``appendfsync always`` on a Redis of its own (the online store's keeps nothing on
disk) and a Lua script for the dedup.

Layout of the stream ``NAME`` (created at first use, file storage, no limits: ``sharerank ingest`` drains it
into a dataset folder; set ``max_age`` with ``nats stream edit`` once every consumer keeps up):

- ``NAME.share.<hex of the event id>``: one subject per share, so :meth:`JetStreamJournal.is_share` asks the
  stream for the last message on that subject (any replica's share counts, the moment it was acknowledged);
- ``NAME.purchase`` and ``NAME.view``.

Each message is one event as JSON (:func:`encode` / :func:`decode`), published with ``Nats-Msg-Id`` = its event
id. Acknowledged means JetStream answered every message of the batch with a PubAck: stored in the stream's file
(a ``kill -9`` of NATS keeps it; add ``sync_interval: always`` to its ``jetstream`` block, or run three nodes
with ``--replicas 3``, to keep it through a power cut too).

Known limits: dedup holds inside ``duplicate_window_s`` (default one hour); a resend after that is stored again,
counted as accepted and re-applied to the online store (idempotent there), and ``ingest`` still logs the event
once. The JetStream server keeps an index entry per share subject.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from sharerank.serving.events.log import (
    READ_BATCH,
    EventLogError,
    LogRecord,
    PurchaseRecord,
    ShareRecord,
    ViewRecord,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STREAM = "SHARERANK_EVENTS"
TIMEOUT_S = 5.0
"""Longest wait for the stream to answer a call (a publish batch, a lookup, a fetch)."""

_KINDS: dict[str, type[LogRecord]] = {"share": ShareRecord, "purchase": PurchaseRecord, "view": ViewRecord}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def subject(stream: str, record: LogRecord) -> str:
    """The subject a record is published on (shares: one subject per event id, hex-encoded to be a token)."""
    kind = _KIND_OF[type(record)]
    return f"{stream}.share.{record.event_id.encode().hex()}" if kind == "share" else f"{stream}.{kind}"


def encode(record: LogRecord) -> bytes:
    return json.dumps({"kind": _KIND_OF[type(record)], **asdict(record)}, separators=(",", ":")).encode()


def decode(data: bytes) -> LogRecord:
    """The record a message holds (validated again by the record's own checks).

    Raises:
        ValueError: not an event this version wrote.
    """
    try:
        fields = json.loads(data)
        return _KINDS[fields.pop("kind")](**fields)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a sharerank event message: {data[:200]!r}") from exc


class LoopThread:
    """An asyncio loop on a daemon thread, so the synchronous gRPC handlers can use the asyncio NATS client."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout_s: float = TIMEOUT_S) -> T:
        """The coroutine's result; ``TimeoutError`` (and the coroutine cancelled) after ``timeout_s``."""
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout_s), self.loop)
        return future.result(timeout_s + 1.0)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def connect(url: str, name: str) -> nats.NATS:
    """A client that reconnects by itself after it first connected (a first failure raises)."""
    return await nats.connect(url, name=name, connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1,
                              reconnect_time_wait=0.5, error_cb=_log_error)


async def ensure_stream(js: JetStreamContext, stream: str, duplicate_window_s: float) -> int:
    """Create ``stream`` if missing; returns the sequence its next message will get."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"], storage=StorageType.FILE,
                                                duplicate_window=duplicate_window_s))
        log.info("created event stream %s", stream)
    return info.state.last_seq + 1


class JetStreamJournal:
    """The event journal on a JetStream stream; see the module. Thread-safe.

    Args:
        url: the NATS server, ``nats://host:port``.
        stream: the stream's name (its subjects are ``<stream>.>``).
        checkpoint_path: where this process's healer keeps its checkpoint.
        duplicate_window_s: how long JetStream remembers event ids, set when this creates the stream.

    Raises:
        EventLogError: the server cannot be reached, or the stream cannot be made.
    """

    def __init__(self, url: str, stream: str, checkpoint_path: Path, duplicate_window_s: float = 3600.0) -> None:
        self.url, self.stream, self._checkpoint_path = url, stream, checkpoint_path
        self._loop = LoopThread(f"event-stream-{stream}")
        self._lock = threading.Lock()
        self._shares: set[str] = set()  # shares known stored: skips a lookup
        self._closed = False
        try:
            self._nc = self._loop.run(connect(url, "sharerank-serve"))
            self._js = self._nc.jetstream(timeout=TIMEOUT_S)
            self._next = self._loop.run(ensure_stream(self._js, stream, duplicate_window_s))
        except Exception as exc:
            self._loop.stop()
            raise EventLogError(f"cannot use the event stream {stream} at {url}: {_describe(exc)}") from None
        log.info("event stream %s at %s open, next sequence %d", stream, url, self._next)

    @property
    def checkpoint_path(self) -> Path:
        return self._checkpoint_path

    def append(self, records: Iterable[LogRecord]) -> list[LogRecord]:
        """Publish the records, shares first, and wait for every PubAck; returns those JetStream had not seen.

        Raises:
            EventLogError: a message was not acknowledged in time; the batch may be partly stored, and resending
                it is safe (the stored ones come back as duplicates).
        """
        ordered = sorted(records, key=lambda r: not isinstance(r, ShareRecord))
        if not ordered:
            return []
        try:
            acks = self._loop.run(self._publish(ordered))
        except Exception as exc:
            raise EventLogError(f"the event stream did not store the batch: {_describe(exc)}") from None
        fresh = [record for record, ack in zip(ordered, acks, strict=True) if not ack.duplicate]
        with self._lock:
            self._next = max(self._next, max(ack.seq for ack in acks) + 1)
            self._shares.update(r.event_id for r in ordered if isinstance(r, ShareRecord))
        return fresh

    async def _publish(self, records: list[LogRecord]) -> list:
        futures = [await self._js.publish_async(subject(self.stream, r), encode(r), headers={"Nats-Msg-Id": r.event_id})
                   for r in records]
        return await asyncio.gather(*futures)

    def is_share(self, event_id: str) -> bool:
        """Whether a share with this id is in the stream (any replica's). Raises ``EventLogError`` when the stream
        does not answer."""
        with self._lock:
            if event_id in self._shares:
                return True
        try:
            self._loop.run(self._js.get_last_msg(self.stream, f"{self.stream}.share.{event_id.encode().hex()}"))
        except nats.js.errors.NotFoundError:
            return False
        except Exception as exc:
            raise EventLogError(f"the event stream did not answer: {_describe(exc)}") from None
        with self._lock:
            self._shares.add(event_id)
        return True

    def offsets(self) -> dict[str, int]:
        """``{"seq": n}``: every message this process published has a sequence below ``n``."""
        with self._lock:
            return {"seq": self._next}

    def read(self, since: Mapping[str, int], until: Mapping[str, int],
             batch: int = READ_BATCH) -> Iterator[list[LogRecord]]:
        """Shares and purchases with sequences in ``[since, until)`` (the whole stream from ``{}``); views skipped."""
        start, end = max(1, since.get("seq", 1)), until.get("seq", 1)
        if start >= end:
            return
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                                ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
        subscription = self._loop.run(self._js.pull_subscribe(f"{self.stream}.>", stream=self.stream, config=config))
        try:
            seq = start
            while seq < end:
                messages = self._loop.run(fetch(subscription, min(batch, end - seq)))
                if not messages:
                    return  # the stream ends before `end` (purged, or a replay position from another stream)
                records = []
                for message in messages:
                    seq = message.metadata.sequence.stream
                    if seq >= end:
                        break
                    record = decode(message.data)
                    if not isinstance(record, ViewRecord):
                        records.append(record)
                seq += 1
                if records:
                    yield records
        finally:
            self._loop.run(subscription.unsubscribe())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._loop.run(self._nc.drain())
        except Exception as exc:  # closing: nothing left to lose
            log.debug("event stream close: %s", _describe(exc))
        self._loop.stop()

    def __repr__(self) -> str:
        return f"JetStreamJournal({self.url!r}, {self.stream!r})"


async def fetch(subscription: JetStreamContext.PullSubscription, count: int) -> list[Msg]:
    """Up to ``count`` messages, or none when none came within a second."""
    try:
        return await subscription.fetch(count, timeout=1.0)
    except (nats.errors.TimeoutError, TimeoutError):  # nothing within the timeout (which one: by version)
        return []


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _log_error(exc: Exception) -> None:
    log.warning("event stream connection: %s", _describe(exc))
