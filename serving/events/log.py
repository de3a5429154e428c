"""The event log: every event RecordEvents accepts, appended durably in the dataset-folder format.

The log is a dataset folder, so ``sharerank train --data <event_log_dir>`` and
:func:`sharerank.dataset.reader.load_dataset` read it as they read any other: ``shares.csv`` (``share_id`` is
the share's event id), ``purchases.csv`` with ``ts``, ``share_id`` (empty for an organic purchase) and
``event_id``, ``views.csv`` with ``event_id`` (columns as :mod:`sharerank.dataset.schema` declares them).

``ts`` is unix seconds (the shortest decimal that reads back as the same double). A file is created, header
first, with the first event of its kind. There is no products.csv: the reader then derives the catalogue
from the product ids in the events (with an empty category).

Guarantees:

- **Durable before acknowledged.** :meth:`EventLog.append` returns only after each file it wrote was
  flushed and ``os.fsync``'d (and the folder too, when a file was created). A caller acknowledges events
  after that, so nothing acknowledged is lost to a crash or a power cut.
- **Idempotent by event id.** Event ids are unique across all three files. The ids already logged are read
  when the log opens, so a replayed id is skipped, before and after a restart.
- **Always loadable.** Shares are written before purchases, a purchase may cite only a share already in the
  log (or in the same batch), share ids are unique, and a crash mid-append leaves at most a torn last line,
  which the next open cuts off (those events were never acknowledged).
- **One writer per folder.** Appends in one process are serialised by one lock; across processes an
  exclusive ``flock`` on ``<folder>/.lock`` makes a second writer fail at open instead of interleaving.

Known limits: the set of logged ids lives in memory (~100 bytes per event), and opening reads every id once;
rotate to a new folder (and train on several) when a log grows past tens of millions of events.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import pyarrow as pa
import pyarrow.csv as pcsv

from sharerank.dataset.schema import FILES, FileSpec
from sharerank.dataset.writer import csv_text
from sharerank.serving.ids import id_problem, quote

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CHECKPOINT_FILE = ".live-state.json"
"""The healer's checkpoint, kept with the log it describes."""
READ_BATCH = 5000
"""Records per batch :meth:`EventLog.read` yields."""


class EventLogError(Exception):
    """The log cannot open (held by another writer, files it cannot read) or cannot take an append."""


def _check(record: object, **ids: str) -> None:
    for name, value in ids.items():
        problem = id_problem(value)
        if problem is not None:
            raise ValueError(f"{type(record).__name__}.{name} {problem}: {quote(value)}")
    ts = record.ts  # type: ignore[attr-defined]
    if not (math.isfinite(ts) and ts >= 0):
        raise ValueError(f"{type(record).__name__}.ts must be finite unix seconds >= 0, got {ts!r}")


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """A purchase as the log keeps it; ``share_id`` is the event id of the share it came through, or ``""``."""

    event_id: str
    user_id: str
    product_id: str
    ts: float
    share_id: str = ""

    def __post_init__(self) -> None:
        _check(self, event_id=self.event_id, user_id=self.user_id, product_id=self.product_id,
               **({"share_id": self.share_id} if self.share_id else {}))


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """A share as the log keeps it: ``sharer_id`` sent ``product_id`` to ``recipient_id`` (another user)."""

    event_id: str
    sharer_id: str
    recipient_id: str
    product_id: str
    ts: float

    def __post_init__(self) -> None:
        _check(self, event_id=self.event_id, sharer_id=self.sharer_id, recipient_id=self.recipient_id,
               product_id=self.product_id)
        if self.sharer_id == self.recipient_id:
            raise ValueError(f"ShareRecord to oneself: {self!r}")


@dataclass(frozen=True, slots=True)
class ViewRecord:
    """A product view as the log keeps it."""

    event_id: str
    user_id: str
    product_id: str
    ts: float

    def __post_init__(self) -> None:
        _check(self, event_id=self.event_id, user_id=self.user_id, product_id=self.product_id)


LogRecord = PurchaseRecord | ShareRecord | ViewRecord


@dataclass(frozen=True)
class LogFile:
    """A file of the log: its dataset-folder spec, the columns the log writes, and the event id's column."""

    spec: FileSpec
    header: tuple[str, ...]
    id_column: str

    @property
    def name(self) -> str:
        return f"{self.spec.name}.csv"

    def row(self, r: LogRecord) -> tuple[str, ...]:
        values = {"ts": repr(float(r.ts)), self.id_column: r.event_id}
        return tuple(values[c] if c in values else getattr(r, c) for c in self.header)


# Write order matters: shares before the purchases that cite them, so a crash between files never leaves a
# purchase pointing at a share the reader cannot find.
_SHARES = LogFile(FILES["shares"], FILES["shares"].columns(), "share_id")
_PURCHASES = LogFile(FILES["purchases"], FILES["purchases"].columns("ts", "share_id", "event_id"), "event_id")
_VIEWS = LogFile(FILES["views"], FILES["views"].columns("event_id"), "event_id")
_FILES = (_SHARES, _PURCHASES, _VIEWS)
_FILE_OF: dict[type, LogFile] = {ShareRecord: _SHARES, PurchaseRecord: _PURCHASES, ViewRecord: _VIEWS}
LOG_FILES = _FILES
"""The log's files in write order (shares first), for other writers of the same format (``sharerank ingest``)."""


def file_of(record: LogRecord) -> LogFile:
    """The log file a record belongs to."""
    return _FILE_OF[type(record)]


class EventLog:
    """An append-only event log in the dataset-folder folder ``root`` (created if missing); see the module.

    Opening takes the folder's lock, cuts off a torn last line a crash left, checks each file's header and
    reads the event ids already logged. Thread-safe; close it (or use ``with``) to release the lock.

    Args:
        root: the log's folder.

    Raises:
        EventLogError: another process holds the folder, or a file in it is not an event-log file.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._closed = False
        self._broken: str | None = None  # why appends are refused after a write the log could not undo
        self._fds: dict[str, int] = {}
        self._ids: set[str] = set()
        self._share_ids: set[str] = set()
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self.root.parent)
        self._lock_fd = _take_lock(self.root / LOCK_FILE)
        try:
            self._sizes = {f.name: self._open_file(f) for f in _FILES}
        except BaseException:
            self._release()
            raise
        log.info("event log %s open: %d events", self.root, len(self._ids))

    @property
    def checkpoint_path(self) -> Path:
        """Where the healer keeps its checkpoint of this log (with the log: a copied folder keeps both)."""
        return self.root / CHECKPOINT_FILE

    def __len__(self) -> int:
        """Events logged (all kinds)."""
        with self._lock:
            return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        """Whether an event with this id is in the log."""
        with self._lock:
            return event_id in self._ids

    def is_share(self, event_id: str) -> bool:
        """Whether ``event_id`` is a share in the log (a purchase may cite it as its ``share_id``)."""
        with self._lock:
            return event_id in self._share_ids

    def append(self, records: Iterable[LogRecord]) -> list[LogRecord]:
        """Append the records whose event id is not in the log yet; durable when this returns.

        A record whose id is already logged, or repeats an earlier record of the same call, is skipped. Each
        file gets one write of all its new rows, then ``fsync``; shares are written first.

        Returns:
            The records appended, in input order (the others were duplicates).

        Raises:
            ValueError: a purchase cites a ``share_id`` that is neither logged nor a share of this call;
                nothing is written.
            EventLogError: the log is closed, or a write or fsync failed. What reached the disk is then
                either rolled back or counted as logged (whole files only), so resending the same records is
                always safe: those already logged are skipped.
        """
        with self._lock:
            if self._closed:
                raise EventLogError(f"event log {self.root} is closed")
            if self._broken is not None:
                raise EventLogError(f"event log {self.root} refuses appends until it is reopened: {self._broken}")
            fresh: list[LogRecord] = []
            batch_ids: set[str] = set()
            for r in records:
                if r.event_id not in self._ids and r.event_id not in batch_ids:
                    batch_ids.add(r.event_id)
                    fresh.append(r)
            batch_shares = {r.event_id for r in fresh if isinstance(r, ShareRecord)}
            for r in fresh:
                if isinstance(r, PurchaseRecord) and r.share_id and r.share_id not in self._share_ids \
                        and r.share_id not in batch_shares:
                    raise ValueError(f"purchase {r.event_id!r} cites share {r.share_id!r}, which is not logged")
            for f in _FILES:
                rows = [r for r in fresh if _FILE_OF[type(r)] is f]
                if rows:
                    self._write(f, rows)
                    # Durable now: count them as logged even if a later file fails, so a retry skips them.
                    self._ids.update(r.event_id for r in rows)
                    if f is _SHARES:
                        self._share_ids.update(r.event_id for r in rows)
            return fresh

    def offsets(self) -> dict[str, int]:
        """Where each file ends now, in bytes (``{"shares.csv": n, ...}``): a position :meth:`read` resumes from."""
        with self._lock:
            return dict(self._sizes)

    def read(self, since: Mapping[str, int], until: Mapping[str, int],
             batch: int = READ_BATCH) -> Iterator[list[LogRecord]]:
        """The shares, then the purchases, logged between two :meth:`offsets` (views are not read: they change
        no live state), in batches of up to ``batch`` records. Appends may go on meanwhile."""
        for f in (_SHARES, _PURCHASES):
            start, end = since.get(f.name, 0), until.get(f.name, 0)
            if start < end:
                yield from _batches(_records(f, self.root / f.name, start, end), batch)

    def close(self) -> None:
        """Close the files and release the folder's lock; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, events={len(self._ids)}, closed={self._closed})"

    # --- internals

    def _open_file(self, f: LogFile) -> int:
        """Repair, check and index an existing file; returns its size (0 when absent)."""
        path = self.root / f.name
        if not path.exists():
            return 0
        size = _cut_torn_tail(path)
        if size == 0:
            return 0
        with path.open("rb") as fh:
            header = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        expected = ",".join(f.header)
        if header != expected:
            raise EventLogError(
                f"{path} is not an event-log file: its header is {header!r}, the log writes {expected!r}; "
                "point event_log_dir at an empty folder or at an event log")
        try:
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                include_columns=[f.id_column], column_types={f.id_column: pa.string()}, strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            raise EventLogError(f"cannot read the event ids in {path}: {exc}") from None
        ids = table.column(f.id_column).to_pylist()
        self._ids.update(ids)
        if f is _SHARES:
            self._share_ids.update(ids)
        return size

    def _write(self, f: LogFile, rows: Sequence[LogRecord]) -> None:
        size = self._sizes[f.name]
        data = csv_text(f.header, (f.row(r) for r in rows), header=size == 0).encode("utf-8")
        path = self.root / f.name
        fd = self._fds.get(f.name)
        created = size == 0  # a header goes in: the file is new (or was empty), so sync its directory entry too
        try:
            if fd is None:
                fd = self._fds[f.name] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if created:
                fsync_dir(self.root)  # the new file's directory entry must survive a crash too
        except OSError as exc:
            self._roll_back(f, fd, size, exc)
            raise EventLogError(f"cannot append to {path}: {exc}") from exc
        self._sizes[f.name] = size + len(data)

    def _roll_back(self, f: LogFile, fd: int | None, size: int, exc: OSError) -> None:
        """Cut ``f`` back to ``size`` after a failed append; if even that fails, refuse further appends."""
        try:
            if fd is not None:
                os.ftruncate(fd, size)
                os.fsync(fd)
        except OSError as undo:
            self._broken = f"{f.name}: append failed ({exc}) and so did the rollback ({undo})"
            log.error("event log %s: %s", self.root, self._broken)

    def _release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        os.close(self._lock_fd)  # closing the last descriptor releases the flock


def _records(f: LogFile, path: Path, start: int, end: int) -> Iterator[LogRecord]:
    """The records of ``f``'s lines in bytes ``[start, end)`` (both at line ends; 0 is before the header)."""
    make = ShareRecord if f is _SHARES else PurchaseRecord
    names = f.header
    with path.open("rb") as fh:
        fh.seek(start)
        rows = csv.reader(_lines(fh, end - start))
        if start == 0:
            next(rows, None)  # the header
        for row in rows:
            values = dict(zip(names, row, strict=True))
            values["ts"] = float(values["ts"])
            values["event_id"] = values.pop(f.id_column)
            yield make(**values)


def _lines(fh: BinaryIO, size: int) -> Iterator[str]:
    """The next ``size`` bytes of ``fh`` as text lines, read as they go (a whole log may be replayed)."""
    for line in fh:
        size -= len(line)
        if size < 0:
            return
        yield line.decode("utf-8")


def _batches(records: Iterable[LogRecord], size: int) -> Iterator[list[LogRecord]]:
    batch: list[LogRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise EventLogError(
                f"event log {path.parent} is already open for writing (lock {path} held by pid {holder}); "
                "one process writes a log at a time: give this one its own event_log_dir") from None
        raise EventLogError(f"cannot lock {path}: {exc}") from exc
    pid = f"{os.getpid()}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, pid, 0)  # for the error message of the next would-be writer, not for locking
    return fd


def _cut_torn_tail(path: Path) -> int:
    """Truncate ``path`` after its last newline (a crash can leave half a line); return the new size."""
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end != size:
            log.warning("event log: cut a torn last line of %d bytes from %s (a crash mid-append; those events "
                        "were never acknowledged)", size - end, path)
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
        return end


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a file created or renamed in it) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
