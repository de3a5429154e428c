"""Prometheus metrics for the gRPC server, exported over HTTP on a side port.

Each server owns a :class:`ServerMetrics` with its own registry (never the process-global one), so several
servers in one process do not collide. Metrics:

- ``sharerank_grpc_requests_total{method, code}``: finished calls by method (``sharerank.v1.FeedService/GetFeed``)
  and status code name (``OK``, ``UNAUTHENTICATED``...); calls that auth rejects are counted too.
- ``sharerank_grpc_request_duration_seconds{method}``: time in the handler (interceptors included, transport
  and (de)serialisation not), buckets from 100 µs to 1 s.
- ``sharerank_feed_degraded_total{hydrator}``: GetFeed responses served without a hydrator's live features
  because the online store failed (the hydrator failed open).
- ``sharerank_online_store_errors_total{operation}``: online-store writes that failed after RecordEvents had
  logged the events (``record_purchases``, ``record_shares``, ``record_friend_purchases``); the call still
  succeeded, the events are in the log, only their live features are missing.
- ``sharerank_model_info{name, version}``: 1 for the model being served, updated on every swap.
- ``sharerank_bulkhead_calls_total{bulkhead, outcome}``: heavy calls by outcome: ``run``, ``rejected`` (the
  bulkhead was full: RESOURCE_EXHAUSTED) or ``expired`` (the deadline passed while queued: not computed).
- ``sharerank_online_store_breaker_open``: 1 while the online store's circuit breaker is open (calls skip the
  store), else 0; ``sharerank_online_store_short_circuits_total``: calls it answered without trying the store.
- ``sharerank_events_replayed_total``: logged events re-applied to the online store by the healer.
- ``sharerank_feed_stage_duration_seconds{stage}``: time per GetFeed pipeline stage (``hydrate`` includes the
  online-store read), to tell which stage a slow feed spent its time in.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

if TYPE_CHECKING:
    from sharerank.serving.model_holder import LoadedModel
    from sharerank.serving.online_store.breaker import CircuitBreaker

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Seconds. Trivial calls take ~0.2 ms of server time and feeds a few ms; slower than 1 s is an outage."""
STAGE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1)
"""Seconds. Most feed stages take tens of microseconds; the live-state read (a Redis round trip) ~0.1 ms."""

_OK, _UNKNOWN, _CANCELLED = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED

# The metrics of the server handling the current call, for code deep in a handler (set per call by the
# interceptor; gRPC runs each call in its own contextvars context).
_current: contextvars.ContextVar[ServerMetrics | None] = contextvars.ContextVar("sharerank_metrics", default=None)
_degraded = False  # last GetFeed degraded, process-wide: logs only the transitions, not every request


class ServerMetrics:
    """One server's metrics in its own registry, and the HTTP endpoint that exports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sharerank_grpc_requests", "Finished gRPC calls by method and status code.",
                                ["method", "code"], registry=self.registry)
        self.latency = Histogram("sharerank_grpc_request_duration_seconds",
                                 "Server time per gRPC call (handler and interceptors), by method.",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.degraded = Counter("sharerank_feed_degraded",
                                "GetFeed responses served without a hydrator's live features (online store "
                                "failed, the hydrator failed open), by hydrator.",
                                ["hydrator"], registry=self.registry)
        self.online_store_errors = Counter(
            "sharerank_online_store_errors",
            "Online-store writes of RecordEvents that failed after the events were logged, by operation.",
            ["operation"], registry=self.registry)
        self.model = Info("sharerank_model", "The model being served.", registry=self.registry)
        self.bulkhead = Counter("sharerank_bulkhead_calls", "Heavy calls by bulkhead and outcome (run, rejected: "
                                "the bulkhead was full, expired: the deadline passed while queued).",
                                ["bulkhead", "outcome"], registry=self.registry)
        self.breaker_open = Gauge("sharerank_online_store_breaker_open",
                                  "1 while the online store's circuit breaker is open, else 0.", registry=self.registry)
        self.short_circuits = Counter("sharerank_online_store_short_circuits",
                                      "Online-store calls answered by the open breaker without trying the store.",
                                      registry=self.registry)
        self.stage_latency = Histogram("sharerank_feed_stage_duration_seconds",
                                       "Time per GetFeed pipeline stage (hydrate, sources, filters, scorers, caps, "
                                       "rerankers, page).", ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self._stage_observers: dict[str, Callable[[float], None]] = {}
        self.replayed = Counter("sharerank_events_replayed", "Logged events re-applied to the online store.",
                                registry=self.registry)
        self._codes: dict[str, dict[grpc.StatusCode, Callable[[], None]]] = {}
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    def count(self, method: str, code: grpc.StatusCode) -> None:
        """Counts one finished call (label lookups cached: they cost more than the increment)."""
        by_code = self._codes.get(method)
        if by_code is None:
            by_code = self._codes.setdefault(method, {})
        inc = by_code.get(code)
        if inc is None:
            inc = by_code.setdefault(code, self.requests.labels(method, code.name).inc)
        inc()

    def watch_breaker(self, breaker: CircuitBreaker) -> None:
        """Exports ``breaker``'s state and counts its short circuits (a :class:`CircuitBreaker` listener)."""
        self.breaker_open.set_function(lambda: float(breaker.is_open))
        breaker.on_short_circuit = self.short_circuits.inc

    def set_model(self, model: LoadedModel) -> None:
        """Records the served model; the old version's series disappears (a ``ModelHolder`` listener)."""
        self.model.info({"name": model.name, "version": model.version})

    def start_http(self, host: str, port: int) -> int:
        """Serves ``/metrics`` on ``host:port`` (prometheus_client's server, a daemon thread); port 0 picks a
        free one. Returns the port."""
        self._http, self._http_thread = start_http_server(port, host, registry=self.registry)
        return self._http.server_port

    def stop_http(self) -> None:
        """Stops the HTTP endpoint and frees its port; no-op when it is not running."""
        http, self._http = self._http, None
        if http is None:
            return
        http.shutdown()
        http.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)


def observe_stage(name: str, seconds: float) -> None:
    """One feed stage's time, into the current server's per-stage histogram (when metrics are on)."""
    metrics = _current.get()
    if metrics is not None:
        observe = metrics._stage_observers.get(name)
        if observe is None:  # label look-ups cost more than the observation: cached per stage
            observe = metrics._stage_observers.setdefault(name, metrics.stage_latency.labels(name).observe)
        observe(seconds)


def record_feed_degraded(hydrators: tuple[str, ...]) -> None:
    """Notes one GetFeed response and the hydrators that failed open for it (empty: served with live features).

    Counts on the current call's server metrics when there are any, and logs when the feed starts or
    stops being degraded (not per request: an outage would flood the log).
    """
    global _degraded
    if hydrators:
        metrics = _current.get()
        if metrics is not None:
            for name in hydrators:
                metrics.degraded.labels(name).inc()
        if not _degraded:
            _degraded = True
            log.warning("feed degraded: %s failed open, serving without live features", ", ".join(hydrators))
    elif _degraded:
        _degraded = False
        log.info("feed recovered: serving with live features again")


def current_metrics() -> ServerMetrics | None:
    """The metrics of the server handling the current call (None outside a call or with metrics off)."""
    return _current.get()


def record_bulkhead(metrics: ServerMetrics | None, bulkhead: str, outcome: str) -> None:
    """Counts one heavy call's outcome on ``metrics`` (taken in the call's thread: pool threads have no call)."""
    if metrics is not None:
        metrics.bulkhead.labels(bulkhead, outcome).inc()


def record_online_store_error(operation: str) -> None:
    """Counts one failed online-store write (``operation`` is the store method) on the current call's server."""
    metrics = _current.get()
    if metrics is not None:
        metrics.online_store_errors.labels(operation).inc()


class WrappingInterceptor(grpc.ServerInterceptor):
    """An interceptor that wraps each method's handler once, not on every call: the next interceptor hands back
    the same handler call after call, so the wrapper is kept per method name (only known methods get here) and
    made again only when that handler changes (an auth refusal's, say)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = continuation(handler_call_details)
        if handler is None:
            return self.unknown_method()
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(handler, method[1:]))
        return cached[1]

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """``handler`` of ``method`` (``package.Service/Method``) with this interceptor's work around it."""
        raise NotImplementedError

    def unknown_method(self) -> None:
        """What a call to a method nobody serves gets past this interceptor: gRPC's UNIMPLEMENTED."""
        return None


class MetricsInterceptor(WrappingInterceptor):
    """Counts every call by method and status code and times it; put it outermost to count auth rejections."""

    def __init__(self, metrics: ServerMetrics):
        super().__init__()
        self.metrics = metrics

    def unknown_method(self) -> None:
        # Counted under one label, so callers cannot mint label values.
        self.metrics.count("unknown", grpc.StatusCode.UNIMPLEMENTED)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        metrics, observe = self.metrics, self.metrics.latency.labels(method).observe
        count = metrics.count
        serdes = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}

        def unary_response(behavior):
            def timed(request, context: grpc.ServicerContext):
                token = _current.set(metrics)
                start = perf_counter()
                try:
                    response = behavior(request, context)
                except BaseException:
                    observe(perf_counter() - start)
                    count(method, context.code() or _UNKNOWN)
                    raise
                finally:
                    _current.reset(token)
                observe(perf_counter() - start)
                # A client that cancelled or ran out of deadline got no OK, whatever the handler returned.
                count(method, context.code() or (_OK if context.is_active() else _CANCELLED))
                return response
            return timed

        def stream_response(behavior):
            def timed(request, context: grpc.ServicerContext) -> Iterator:
                start, code = perf_counter(), None
                try:
                    yield from behavior(request, context)
                except GeneratorExit:
                    code = _CANCELLED  # the client went away mid-stream
                    raise
                except BaseException:
                    code = context.code() or _UNKNOWN
                    raise
                finally:
                    if code is None and not context.is_active():
                        code = _CANCELLED  # a watcher ended by the client's cancel returns normally
                    observe(perf_counter() - start)
                    count(method, code or context.code() or _OK)
            return timed

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **serdes)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **serdes)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **serdes)
        return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **serdes)



request_log = logging.getLogger("sharerank.requests")
"""One line per call: at DEBUG when it succeeded, at INFO when the caller's request was refused (bad input, auth,
load shedding: under overload a line per refusal at the default level would add work when there is least to
spare), at WARNING always when the server failed it. Its ids are fields (``extra``) that the JSON log format
writes as keys: ``request_id``, ``trace_id``, ``method``, ``outcome``, ``duration_ms``, ``model_version``."""

_LOG_LEVEL = {_OK: logging.DEBUG, **{code: logging.WARNING for code in (
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED)}}
"""Outcome → level of its line; the caller's refusals (any other code) are INFO."""


class RequestLogInterceptor(WrappingInterceptor):
    """Logs calls to :data:`request_log`; costs one level check per successful call when DEBUG is off.

    The request id is the caller's ``x-request-id`` header, else a new one; the trace id the current span's
    (empty when tracing is off).
    """

    def __init__(self, model_version: Callable[[], str]) -> None:
        super().__init__()
        self.model_version = model_version

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return handler
        behavior, write = handler.unary_unary, self._write

        def logged(request, context: grpc.ServicerContext):
            start, code = perf_counter(), None
            try:
                response = behavior(request, context)
                code = context.code() or _OK
                return response
            except BaseException:
                code = context.code() or _UNKNOWN
                raise
            finally:
                level = _LOG_LEVEL.get(code, logging.INFO)
                if request_log.isEnabledFor(level):
                    write(context, method, code, level, perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(logged, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def _write(self, context: grpc.ServicerContext, method: str, code: grpc.StatusCode, level: int,
               seconds: float) -> None:
        from opentelemetry import trace

        headers = dict(context.invocation_metadata())
        span = trace.get_current_span().get_span_context()
        fields = {"request_id": headers.get("x-request-id") or uuid.uuid4().hex, "method": method,
                  "outcome": code.name, "duration_ms": round(seconds * 1000, 3),
                  "trace_id": format(span.trace_id, "032x") if span.is_valid else "",
                  "model_version": self.model_version()}
        request_log.log(level, "%s %s in %.2f ms", method, code.name, seconds * 1000, extra=fields)
