"""``sharerank ingest``: drain the shared event stream into a dataset folder, each event id exactly once.

The folder holds ``shares.parquet/``, ``purchases.parquet/`` and ``views.parquet/``, each partitioned by the
events' UTC day (``day=YYYY-MM-DD/part-<first stream sequence>-<uuid>.parquet``), with the columns the file log
writes (``ts`` as a double): the dataset-folder format, so ``sharerank train --data <folder>`` reads it.

Exactly once, and resumable after a crash at any instant:

- a durable JetStream consumer (explicit acks) remembers how far the folder is; a message not acked within
  ``ack_wait_s`` is delivered again;
- a batch's parts are written as hidden temporary files, ``fsync``'d, renamed into place and the folders
  ``fsync``'d; only then are its messages acked;
- the event ids already in the folder are read at start and kept, so a message delivered again (a crash between
  the rename and the ack) or stored twice (a resend after the stream's duplicate window) is skipped by its id.

Shares are written before the purchases of the same batch, and the stream holds a share before any purchase that
cites it (RecordEvents checks), so the folder always loads. Known limit: the ids live in memory (~100 bytes per
event), as in the file log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import nats.js.errors
import pyarrow as pa
import pyarrow.parquet as pq
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from sharerank.dataset.reader import parquet_exists
from sharerank.serving.events.log import LOG_FILES, LogFile, LogRecord, file_of, fsync_dir
from sharerank.serving.events.stream import LoopThread, connect, decode, fetch

log = logging.getLogger(__name__)

DEFAULT_CONSUMER = "sharerank-ingest"
TIMEOUT_S = 30.0
"""Longest wait for the stream to answer one call: a batch job can wait for a broker busy with live traffic."""
PROGRESS_EVERY_S = 2.0


class IngestError(Exception):
    """The stream or the folder cannot be used (named in the message)."""


@dataclass
class IngestReport:
    """What one ``ingest`` run did."""

    stream: str
    consumer: str
    out: str
    read: int = 0  # messages taken from the stream (redeliveries included)
    written: int = 0  # events new to the folder, now in it
    duplicates: int = 0  # messages whose event id the folder already held
    unreadable: int = 0  # messages that are not events (terminated: never delivered again)
    parts: int = 0  # Parquet files written
    pending: int = 0  # messages left in the stream for this consumer when the run ended
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ingest(url: str, stream: str, out: Path, *, consumer: str = DEFAULT_CONSUMER, batch: int = 1000,
           follow: bool = False, ack_wait_s: float = 30.0, max_events: int | None = None,
           stop: threading.Event | None = None, progress: Callable[[int, int], None] = lambda done, pending: None,
           after_write: Callable[[], None] = lambda: None) -> IngestReport:
    """Drain ``stream`` into ``out`` (see the module): until nothing is pending, or, with ``follow``, until
    ``stop`` is set (checked between batches: a batch is written and acked whole); ``max_events`` stops after
    that many messages. ``progress(done, pending)`` follows each batch;
    ``after_write`` runs between writing a batch and acking it (fault injection for the tests).

    Raises:
        IngestError: the stream is unreachable or missing, or ``out`` holds a CSV event log.
    """
    out = Path(out)
    _check_folder(out)
    report = IngestReport(stream, consumer, str(out))
    started = time.monotonic()
    loop = LoopThread("ingest")
    try:
        try:
            nc = loop.run(connect(url, "sharerank-ingest"))
        except Exception as exc:
            raise IngestError(f"cannot reach the event stream at {url}: {exc or type(exc).__name__}") from None
        try:
            _Drain(loop, nc, stream, out, consumer, batch, ack_wait_s, report).run(
                follow, max_events, stop or threading.Event(), progress, after_write)
        finally:
            loop.run(nc.close())
    finally:
        loop.stop()
    report.seconds = round(time.monotonic() - started, 3)
    return report


class _Drain:
    def __init__(self, loop: LoopThread, nc, stream: str, out: Path, consumer: str, batch: int, ack_wait_s: float,
                 report: IngestReport) -> None:
        self.loop, self.nc, self.out, self.batch, self.report = loop, nc, out, batch, report
        js = nc.jetstream(timeout=TIMEOUT_S)
        try:
            loop.run(js.stream_info(stream), TIMEOUT_S)
        except nats.js.errors.NotFoundError:
            raise IngestError(f"no event stream {stream!r} on this NATS server (a server with "
                              "SHARERANK_EVENT_STREAM_URL creates it)") from None
        config = ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                ack_wait=ack_wait_s, max_ack_pending=max(batch * 4, 1000))
        self.subscription = loop.run(js.pull_subscribe(f"{stream}.>", durable=consumer, stream=stream, config=config),
                                     TIMEOUT_S)
        self.ids = _logged_ids(out)
        self._next_progress = 0.0
        log.info("ingest %s → %s: %d events already there", stream, out, len(self.ids))

    def run(self, follow: bool, max_events: int | None, stop: threading.Event, progress: Callable[[int, int], None],
            after_write: Callable[[], None]) -> None:
        while not stop.is_set() and (max_events is None or self.report.read < max_events):
            want = self.batch if max_events is None else min(self.batch, max_events - self.report.read)
            messages = self.loop.run(fetch(self.subscription, want), TIMEOUT_S)
            if messages:
                self._take(messages, after_write)
                if time.monotonic() >= self._next_progress:
                    self._next_progress = time.monotonic() + PROGRESS_EVERY_S
                    progress(self.report.read, self._pending())
            elif not follow and self._drained():
                break
        self.report.pending = self._pending()

    def _take(self, messages: list, after_write: Callable[[], None]) -> None:
        self.report.read += len(messages)
        fresh: list[tuple[int, LogRecord]] = []
        bad = []
        for message in messages:
            try:
                record = decode(message.data)
            except ValueError as exc:
                log.error("ingest: skipping stream message %d: %s", message.metadata.sequence.stream, exc)
                bad.append(message)
                continue
            if record.event_id in self.ids:
                self.report.duplicates += 1
            else:
                self.ids.add(record.event_id)
                fresh.append((message.metadata.sequence.stream, record))
        try:
            self.report.parts += _write_parts(self.out, fresh)
        except BaseException:
            self.ids.difference_update(r.event_id for _, r in fresh)
            raise
        self.report.written += len(fresh)
        self.report.unreadable += len(bad)
        after_write()
        self.loop.run(_settle(self.nc, messages, bad), TIMEOUT_S)

    def _pending(self) -> int:
        info = self.loop.run(self.subscription.consumer_info(), TIMEOUT_S)
        return info.num_pending + info.num_ack_pending

    def _drained(self) -> bool:
        """Nothing left: no message waiting, and none delivered to an earlier run and waiting for redelivery."""
        return self._pending() == 0


async def _settle(nc, messages: Sequence, bad: Sequence) -> None:
    bad_ids = {id(m) for m in bad}
    await asyncio.gather(*(m.term() if id(m) in bad_ids else m.ack() for m in messages))
    await nc.flush()  # the acks reached the server before the next fetch


def _check_folder(out: Path) -> None:
    for f in LOG_FILES:
        if (out / f.name).exists():
            raise IngestError(f"{out} holds {f.name}, a file event log: ingest into a folder of its own (the reader "
                              "would take the CSV file and not the Parquet partitions)")


def logged_ids(out: Path) -> list[str]:
    """Every event id in the folder's parts, in file order, repeats included (a check of exactly-once counts them)."""
    ids: list[str] = []
    for f in LOG_FILES:
        path = _folder(out, f)
        if parquet_exists(path):
            table = pq.read_table(path, columns=[f.id_column], partitioning=None)
            ids += table.column(f.id_column).to_pylist()
    return ids


def _logged_ids(out: Path) -> set[str]:
    """The event ids in the folder's parts; removes the temporary files a crash left (never acked)."""
    for f in LOG_FILES:
        for leftover in _folder(out, f).glob("day=*/.part-*.tmp"):
            leftover.unlink()
    return set(logged_ids(out))


def _folder(out: Path, f: LogFile) -> Path:
    return out / f"{f.spec.name}.parquet"


def _write_parts(out: Path, fresh: Sequence[tuple[int, LogRecord]]) -> int:
    """One Parquet part per file and day of ``fresh`` (shares first), durable and in place when this returns."""
    groups: dict[tuple[LogFile, str], list[tuple[int, LogRecord]]] = {}
    for seq, record in fresh:
        day = datetime.fromtimestamp(record.ts, UTC).date().isoformat()
        groups.setdefault((file_of(record), day), []).append((seq, record))
    written = 0
    for f in LOG_FILES:
        for (group_file, day), items in sorted(groups.items(), key=lambda kv: kv[0][1]):
            if group_file is f:
                _write_part(_folder(out, f) / f"day={day}", f, items)
                written += 1
    return written


def _write_part(folder: Path, f: LogFile, items: Sequence[tuple[int, LogRecord]]) -> None:
    created = _make_dirs(folder)
    rows = [f.row(record) for _, record in items]
    columns = {c: [row[i] for row in rows] for i, c in enumerate(f.header)}
    table = pa.table({c: pa.array([float(v) for v in values]) if c == "ts" else pa.array(values, pa.string())
                      for c, values in columns.items()})
    name = f"part-{items[0][0]:012d}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = folder / f".{name}.tmp"  # hidden: readers skip names starting with "."
    pq.write_table(table, temporary)
    fd = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, folder / name)
    for path in (folder, *created):
        fsync_dir(path)


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; returns the parents whose listing changed (to fsync)."""
    missing = []
    path = folder
    while not path.exists():
        missing.append(path)
        path = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    return [p.parent for p in missing]
