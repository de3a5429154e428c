"""The healer: every logged event's effect on the online store is re-applied when it may have been missed.

RecordEvents logs first and writes the store after; a write that fails (Redis down, hung, or the circuit
open) used to be lost for good: the event was acknowledged, a resend is a duplicate, and a Redis that
restarts empty loses all live state. The healer closes that gap from the log itself:

- **A checkpoint** (``EventJournal.checkpoint_path``: ``<log>/.live-state.json`` for the file log, one per
  replica under ``<home>/live-state/`` for the stream): the journal position (byte offsets in ``shares.csv``
  and ``purchases.csv``, or the stream sequence) before which every event is known applied, and the journal's id.
- **Missed writes**: the recorder reports where a failed batch began; the next cycle re-applies the log from
  there. At start-up, the tail after the checkpoint is re-applied the same way.
- **Lost state**: the store keeps a marker (``OnlineStore.set_marker``) once the whole log was applied. A
  store without it (a Redis restarted empty, a fresh in-process store) gets the whole log again.

A cycle runs every ``interval_s`` and at once when woken (the circuit breaker closing). Every store write is
idempotent and newest-event-wins, so re-applying events already there changes nothing. Known limit: a crash
in the instant between a failed write and the next checkpoint can leave that batch unapplied until the
store next loses its marker; the checkpoint trails the log by a cycle to keep that window small.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving.events.journal import EventJournal, Offsets
from sharerank.serving.events.log import CHECKPOINT_FILE
from sharerank.serving.events.recorder import live_writes
from sharerank.serving.online_store import OnlineStore, OnlineStoreError
from sharerank.serving.ratelog import RateLimitedLog

log = logging.getLogger(__name__)
_outage_log = RateLimitedLog(log)

APPLIED = "applied"

__all__ = ["APPLIED", "CHECKPOINT_FILE", "LiveStateHealer"]


class LiveStateHealer:
    """Keeps ``store`` holding the effect of every event in ``event_log``; see the module.

    Args:
        event_log: the server's event journal (the source of truth).
        store: the online store to heal (behind the circuit breaker, so an outage costs a cycle nothing).
        bundle: the serving model now, or None (its friendships drive the fan-out of purchases).
        interval_s: seconds between cycles. (default: ``5.0``)
    """

    def __init__(self, event_log: EventJournal, store: OnlineStore, bundle: Callable[[], ModelBundle | None],
                 interval_s: float = 5.0):
        self.event_log, self.store, self.bundle, self.interval_s = event_log, store, bundle, interval_s
        self.on_replayed: Callable[[int], None] = lambda count: None
        self.path = event_log.checkpoint_path
        self.log_id, checkpoint = _read_checkpoint(self.path)
        self.marker = f"events-{self.log_id}"
        self._lock = threading.Lock()
        self._missed: Offsets | None = checkpoint  # start-up re-applies the tail after the checkpoint
        self._checkpoint = self._previous = checkpoint
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0  # completed cycles (tests wait on it)

    def note_missed(self, since: Offsets) -> None:
        """A write of events logged at or after ``since`` failed: re-apply the log from there next cycle."""
        with self._lock:
            self._missed = since if self._missed is None else _earliest(self._missed, since)

    def wake(self) -> None:
        """Run a cycle now (the store answers again)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-state-healer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def heal_once(self) -> int:
        """One cycle: re-apply what was missed (everything, when the store lost its marker) and move the
        checkpoint; returns the events re-applied.

        Raises:
            OnlineStoreError: the store failed; what was missed stays to re-apply next cycle.
        """
        until = self.event_log.offsets()
        with self._lock:
            missed, self._missed = self._missed, None
        try:
            lost = self.store.get_marker(self.marker) != APPLIED
            since = {} if lost else missed
            replayed = self._replay(since, until) if since is not None else 0
            if lost:
                self.store.set_marker(self.marker, APPLIED)
        except BaseException:
            if missed is not None:
                self.note_missed(missed)
            raise
        with self._lock:
            # Trail the log by a cycle: writes of events logged before `previous` have finished by now, and any
            # of them that failed is in `_missed`.
            checkpoint = self._previous if self._missed is None else _earliest(self._previous, self._missed)
        self._previous = until
        if checkpoint != self._checkpoint:
            _write_checkpoint(self.path, self.log_id, checkpoint)
            self._checkpoint = checkpoint
        self.cycles += 1
        if replayed:
            log.warning("re-applied %d logged events to the online store%s", replayed,
                        " (it had lost its state)" if lost else "")
        return replayed

    def _replay(self, since: Offsets, until: Offsets) -> int:
        bundle, count = self.bundle(), 0
        for batch in self.event_log.read(since, until):
            for _, write, items in live_writes(self.store, batch, bundle):
                write(items)
            count += len(batch)
            self.on_replayed(len(batch))
        return count

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.heal_once()
            except OnlineStoreError as exc:
                _outage_log.warning("heal", "live state not healed yet (retrying every %g s): %s", self.interval_s,
                                    exc)
            except Exception:  # a bug must not end healing for the life of the server
                log.exception("live-state healer cycle failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()


def _earliest(a: Offsets, b: Offsets) -> Offsets:
    return {name: min(a.get(name, 0), b.get(name, 0)) for name in a.keys() | b.keys()}


def _read_checkpoint(path: Path) -> tuple[str, Offsets]:
    """The log's id and its checkpoint; a new id and the log's start when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
        return str(data["log_id"]), {str(k): int(v) for k, v in data["applied"].items()}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("unreadable checkpoint %s (%s): the whole event log will be re-applied", path, exc)
    return uuid.uuid4().hex, {}


def _write_checkpoint(path: Path, log_id: str, applied: Offsets) -> None:
    """Replaces the checkpoint file atomically (a torn one would cost a full replay, not a wrong state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"log_id": log_id, "applied": applied}))
    os.replace(temporary, path)
