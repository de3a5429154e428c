"""Where RecordEvents puts accepted events first: the event journal, and the registry of its backends.

Two backends keep the same promises (durable before acknowledged, idempotent by event id, shares before the
purchases that cite them, a replay position the healer can read from):

- ``EventLog`` (:mod:`~sharerank.serving.events.log`), the embedded default: a dataset folder that exactly
  one server process writes.
- ``JetStreamJournal`` (:mod:`~sharerank.serving.events.stream`): a NATS JetStream stream that any number of
  server processes, on any hosts, write; ``sharerank ingest`` drains it into a dataset folder.

Pick one with :func:`open_event_journal`; code against :class:`EventJournal` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sharerank.config import Settings
from sharerank.serving.events.log import EventLog, LogRecord

Offsets = dict[str, int]


class EventJournal(Protocol):
    """The contract both backends keep (tests/serving/test_event_journal.py holds them to it)."""

    @property
    def checkpoint_path(self) -> Path:
        """Where the healer keeps this process's checkpoint of what it applied to the online store."""

    def append(self, records: Iterable[LogRecord]) -> list[LogRecord]:
        """Store the records whose event id is new, shares first; durable when this returns. Returns those new
        records. Raises ``EventLogError`` when nothing new could be acknowledged."""

    def is_share(self, event_id: str) -> bool:
        """Whether ``event_id`` is a share already stored (a purchase may cite it)."""

    def offsets(self) -> Offsets:
        """A position at or after everything this process appended: where :meth:`read` may stop or resume."""

    def read(self, since: Mapping[str, int], until: Mapping[str, int]) -> Iterator[list[LogRecord]]:
        """The shares and purchases stored between two :meth:`offsets`, in batches, oldest first."""

    def close(self) -> None:
        """Release the journal; idempotent."""


def open_event_journal(settings: Settings, replica: int = 0) -> EventJournal:
    """The journal ``settings`` name: the JetStream stream at ``event_stream_url`` when set, else the file log in
    ``event_log_dir``. ``replica`` tells the processes of one ``serve --processes N`` apart (their checkpoints).

    Raises:
        EventLogError: the log folder is held by another process, or the stream cannot be reached or made.
        ValueError: the URL's scheme names no backend.
    """
    url = settings.event_stream_url
    if not url:
        return EventLog(settings.resolved_event_log_dir)
    if urlsplit(url).scheme.lower() not in ("nats", "tls"):
        raise ValueError(f"unsupported event stream URL {url!r}: expected nats://host:port (NATS JetStream)")
    from sharerank.serving.events.stream import JetStreamJournal  # nats is imported only when it is used

    checkpoint = settings.home / "live-state" / f"{settings.event_stream_name}-{settings.port}-{replica}.json"
    return JetStreamJournal(url, settings.event_stream_name, checkpoint,
                            duplicate_window_s=settings.event_stream_dedup_seconds)
