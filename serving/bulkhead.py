"""Bulkheads: heavy calls (seeding, audiences, model reloads) run in pools of their own, so they cannot starve
feeds.

A heavy call would otherwise hold one of the gRPC worker threads that feeds need for as long as it computes
(ten GetSeedTargets calls at k = 1000 took 15-19 s each, and feeds missed their deadlines meanwhile). A
:class:`Bulkhead` admits at most ``workers + queue`` calls; one more is refused at once with
RESOURCE_EXHAUSTED and a RetryInfo. A call whose deadline passed while it waited is not computed.

Seeding and audiences run in worker *processes* (``processes=True``): in the server's own process their numpy
glue held the GIL in stretches and feeds waited for it (feed p99 2.5x idle with the heavy thread niced and a
0.5 ms GIL switch interval). A worker process has its own GIL and runs at a lower CPU priority, numba's threads
included, so on a busy machine the scheduler serves feeds first. It reads the serving model from a copy the
bulkhead saves once per model (:class:`ModelSpool`) and keeps the latest one loaded. Reloads swap the server's
own model, so they run on a thread (niced too).

The gRPC thread that admitted the call waits for its answer, so ``workers + queue`` should stay well below
the server's ``workers``: the rest are the feeds'.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.serving import observability
from sharerank.serving.errors import ServiceError, deadline_exceeded, resource_exhausted, unavailable

if TYPE_CHECKING:
    from sharerank.serving.model_holder import LoadedModel

log = logging.getLogger(__name__)

T = TypeVar("T")

NICENESS = 10
"""How much lower than the server's own the heavy workers' CPU priority is (Linux nice: 0..19)."""

GIL_SWITCH_S = 0.0005
"""The server's GIL switch interval (Python's default: 5 ms). Reloads and the server's own glue hold the GIL in
stretches; a 1 ms timer thread beside a seeding thread woke up to 4 ms late at p99 with the default and 1.1 ms
late with this, and a feed waits for the GIL several times."""

_NO_DEADLINE_S = 1e6  # gRPC reports "no deadline" as an infinite time remaining


@dataclass(frozen=True)
class ModelRef:
    """The serving model as a heavy call names it: the bundle itself (thread workers) or the folder a
    :class:`ModelSpool` saved it to (process workers, which load it once and keep it)."""

    key: str
    bundle_in_memory: ModelBundle | None = None
    path: Path | None = None

    def bundle(self) -> ModelBundle:
        if self.bundle_in_memory is not None:
            return self.bundle_in_memory
        return _worker_bundle(self)

    def __reduce__(self):  # only the folder crosses to a worker process, never the bundle
        return ModelRef, (self.key, None, self.path)


_loaded: tuple[str, ModelBundle] | None = None  # a worker process's model: (key, bundle)


def _worker_bundle(ref: ModelRef) -> ModelBundle:
    global _loaded
    if _loaded is None or _loaded[0] != ref.key:
        _loaded = None  # the old model goes before the new one loads: one model in memory at a time
        _loaded = (ref.key, ModelBundle.load(ref.path).warm())
    return _loaded[1]


class ModelSpool:
    """Saved copies of the serving model for worker processes, one per model, the latest two kept (a call on
    the one before may still be reading it)."""

    KEEP = 2

    def __init__(self, name: str):
        self._root = Path(tempfile.mkdtemp(prefix=f"sharerank-{name}-models-"))
        self._lock = threading.Lock()
        self._saved: list[str] = []

    def ref(self, model: LoadedModel) -> ModelRef:
        """Saves ``model`` on its first use (under a lock: one save per model)."""
        key = f"{model.version}-{model.load_time.timestamp():.6f}"
        with self._lock:
            if key not in self._saved:
                model.bundle.save(self._root / key)
                self._saved.append(key)
                for old in self._saved[:-self.KEEP]:
                    shutil.rmtree(self._root / old, ignore_errors=True)
                self._saved = self._saved[-self.KEEP:]
        return ModelRef(key, path=self._root / key)

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)


class Bulkhead:
    """A bounded pool for one kind of heavy call.

    Args:
        name: the kind of call, in errors and the ``bulkhead`` metric label (``seeding``).
        workers: threads (or processes) computing at once.
        queue: calls that may wait for a worker; past ``workers + queue`` calls are refused.
        retry_after_s: the RetryInfo delay sent with a refusal. (default: ``1.0``)
        processes: run the work in worker processes (started on the first call) rather than threads; the work
            and its arguments must then pickle, and the model goes as a :meth:`model_ref`. (default: ``False``)
        threads: numba threads per worker process: heavy work takes at most ``workers * threads`` cores, the rest
            are the feeds'. (default: ``1``)
    """

    def __init__(self, name: str, workers: int, queue: int, retry_after_s: float = 1.0, processes: bool = False,
                 threads: int = 1):
        if workers < 1 or queue < 0 or threads < 1:
            raise ValueError(f"bulkhead {name}: workers and threads must be >= 1 and queue >= 0, got {workers}, "
                             f"{threads}, {queue}")
        self.name, self.workers, self.queue, self.retry_after_s = name, workers, queue, retry_after_s
        self.processes, self.threads = processes, threads
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._spool = ModelSpool(name) if processes else None
        self._pool_lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> Executor:
        if self.processes:  # spawned: forking a process that runs gRPC's threads is unsafe
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_worker, initargs=(self.threads,))
        return ThreadPoolExecutor(self.workers, thread_name_prefix=f"{self.name}-heavy", initializer=_lower_priority)

    def model_ref(self, model: LoadedModel) -> ModelRef:
        """How work on this bulkhead's workers reaches ``model``'s bundle (``ref.bundle()``)."""
        if self._spool is None:
            return ModelRef(model.version, bundle_in_memory=model.bundle)
        return self._spool.ref(model)

    def run(self, context: grpc.ServicerContext, work: Callable[..., T], *args) -> T:
        """``work(*args)`` on a worker, for the gRPC call ``context``; its result or its exception.

        Raises:
            ServiceError: RESOURCE_EXHAUSTED (``OVERLOADED``, with RetryInfo) when the bulkhead is full,
                DEADLINE_EXCEEDED (``DEADLINE_PASSED``) when the deadline passed before or during the work,
                UNAVAILABLE when the server is stopping or a worker process died.
        """
        metrics = observability.current_metrics()
        if not self._slots.acquire(blocking=False):
            observability.record_bulkhead(metrics, self.name, "rejected")
            raise resource_exhausted(
                f"too many {self.name} calls at once ({self.workers} running, {self.queue} waiting); retry in "
                f"{self.retry_after_s:g} s", "OVERLOADED", self.retry_after_s, bulkhead=self.name)
        remaining = context.time_remaining()
        has_deadline = remaining < _NO_DEADLINE_S
        try:
            future = self._submit(_guarded, time.monotonic() + remaining if has_deadline else None, work, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda done: self._finished(done, metrics))
        try:
            return future.result(timeout=remaining if has_deadline else None)
        except CancelledError:  # dropped from the queue: the server is stopping
            raise unavailable("the server is stopping; retry on another", "SHUTTING_DOWN", 1.0) from None
        except FutureTimeout:
            raise deadline_exceeded(f"the {self.name} call ran past its deadline", "DEADLINE_EXCEEDED") from None
        except BrokenProcessPool:
            self._replace_broken_pool()
            raise unavailable(f"the {self.name} worker process died; retry", "WORKER_DIED",
                              self.retry_after_s) from None

    def _finished(self, future: Future, metrics) -> None:
        """Frees the call's slot and counts how it ended: ``run``, or ``expired`` when its deadline passed
        before a worker took it (the caller may have stopped waiting long before)."""
        self._slots.release()
        if future.cancelled():
            return
        error = future.exception()
        expired = isinstance(error, ServiceError) and error.reason == "DEADLINE_PASSED"
        observability.record_bulkhead(metrics, self.name, "expired" if expired else "run")

    def _submit(self, fn: Callable[..., T], *args) -> Future:
        """Submits to the pool; a pool whose worker process died since the last call is replaced first, so the
        call loses nothing."""
        for _ in range(2):
            try:
                with self._pool_lock:
                    return self._pool.submit(fn, *args)
            except BrokenProcessPool:
                self._replace_broken_pool()
            except RuntimeError:  # the pool is shut down: the server is stopping
                raise unavailable("the server is stopping; retry on another", "SHUTTING_DOWN", 1.0) from None
        raise unavailable(f"the {self.name} worker process cannot start; retry", "WORKER_DIED", self.retry_after_s)

    def _replace_broken_pool(self) -> None:
        with self._pool_lock:
            pool = self._pool
            if isinstance(pool, ProcessPoolExecutor) and pool._broken:  # a new pool for the calls to come
                log.error("a %s worker process died; starting another", self.name)
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()

    def shutdown(self) -> None:
        """Refuses new calls and drops queued ones; running ones finish on their own."""
        with self._pool_lock:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._spool is not None:
            self._spool.close()


def _guarded(deadline: float | None, work: Callable[..., T], *args) -> T:
    """Runs on the worker: the work, unless the call's deadline passed while it waited."""
    if deadline is not None and time.monotonic() >= deadline:
        raise deadline_exceeded("the call's deadline passed while it waited for a heavy worker", "DEADLINE_PASSED")
    return work(*args)


def _start_worker(threads: int) -> None:
    """A worker process's start: ``threads`` numba threads (set on the thread that runs the work), and the idle
    scheduling class (the kernel runs it only on a core nothing else wants, and a waking feed thread preempts it
    at once), else a lower nice value. Threads it starts later (numba's) inherit either."""
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux
        log.debug("heavy worker not in the idle class: %s", exc)
        _lower_priority()


def _lower_priority() -> None:
    """Nices the calling thread (a thread's nice value is its own on Linux)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: same priority, still bounded
        log.debug("heavy worker keeps its priority: %s", exc)
