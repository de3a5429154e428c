"""Bulkheads: heavy calls (seeding, model reloads) run in pools of their own, so they cannot starve feeds.

A heavy call would otherwise hold one of the gRPC worker threads that feeds need for as long as it computes
(ten GetSeedTargets calls at k = 1000 took 15-19 s each, and feeds missed their deadlines meanwhile). A
:class:`Bulkhead` admits at most ``workers + queue`` calls; one more is refused at once with
RESOURCE_EXHAUSTED and a RetryInfo. Its threads run at a lower CPU priority (Linux nice values are per
thread), so on a busy machine the scheduler serves feeds first; the numba kernels seeding runs release the
GIL, and the server switches the GIL more often (:data:`GIL_SWITCH_S`). A call whose deadline passed while it
waited is not computed.

The gRPC thread that admitted the call waits for its answer, so ``workers + queue`` should stay well below
the server's ``workers``: the rest are the feeds'.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import grpc

from sharerank.serving import observability
from sharerank.serving.errors import deadline_exceeded, resource_exhausted, unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

NICENESS = 10
"""How much lower than the server's own the heavy threads' CPU priority is (Linux nice: 0..19)."""

GIL_SWITCH_S = 0.0005
"""The server's GIL switch interval (Python's default: 5 ms). Seeding's numpy glue between its numba kernels
holds the GIL in stretches; a 1 ms timer thread beside a seeding call woke up to 4 ms late at p99 with the
default and 1.1 ms late with this, and a feed waits for the GIL several times."""

_NO_DEADLINE_S = 1e6  # gRPC reports "no deadline" as an infinite time remaining


class Bulkhead:
    """A bounded pool for one kind of heavy call.

    Args:
        name: the kind of call, in errors and the ``bulkhead`` metric label (``seeding``).
        workers: threads computing at once.
        queue: calls that may wait for a thread; past ``workers + queue`` calls are refused.
        retry_after_s: the RetryInfo delay sent with a refusal. (default: ``1.0``)
    """

    def __init__(self, name: str, workers: int, queue: int, retry_after_s: float = 1.0):
        if workers < 1 or queue < 0:
            raise ValueError(f"bulkhead {name}: workers must be >= 1 and queue >= 0, got {workers}, {queue}")
        self.name, self.workers, self.queue, self.retry_after_s = name, workers, queue, retry_after_s
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"{name}-heavy", initializer=_lower_priority)

    def run(self, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        """``work()`` on a pool thread, for the gRPC call ``context``; its result or its exception.

        Raises:
            ServiceError: RESOURCE_EXHAUSTED (``OVERLOADED``, with RetryInfo) when the bulkhead is full,
                DEADLINE_EXCEEDED (``DEADLINE_PASSED``) when the deadline passed before or during the work.
        """
        metrics = observability.current_metrics()
        if not self._slots.acquire(blocking=False):
            observability.record_bulkhead(metrics, self.name, "rejected")
            raise resource_exhausted(
                f"too many {self.name} calls at once ({self.workers} running, {self.queue} waiting); retry in "
                f"{self.retry_after_s:g} s", "OVERLOADED", self.retry_after_s, bulkhead=self.name)
        try:
            future = self._pool.submit(self._call, context, work, metrics)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._slots.release()
            raise unavailable("the server is stopping; retry on another", "SHUTTING_DOWN", 1.0) from None
        remaining = context.time_remaining()
        try:
            return future.result(timeout=remaining if remaining < _NO_DEADLINE_S else None)
        except FutureTimeout:
            raise deadline_exceeded(f"the {self.name} call ran past its deadline", "DEADLINE_EXCEEDED") from None

    def _call(self, context: grpc.ServicerContext, work: Callable[[], T], metrics) -> T:
        try:
            if context.time_remaining() <= 0 or not context.is_active():
                observability.record_bulkhead(metrics, self.name, "expired")
                raise deadline_exceeded(f"the call's deadline passed while it waited for a {self.name} worker",
                                        "DEADLINE_PASSED")
            observability.record_bulkhead(metrics, self.name, "run")
            return work()
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        """Refuses new calls and drops queued ones; running ones finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: same priority, still bounded
        log.debug("heavy thread keeps its priority: %s", exc)
