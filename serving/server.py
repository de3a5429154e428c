"""The gRPC server: every service of :data:`~sharerank.serving.api.services.SERVICES`, health checking and
reflection.

Health reports NOT_SERVING until a model is loaded. FAISS runs one OpenMP thread per call: gRPC worker
threads already give the parallelism, and two OpenMP threads per query were 5× slower here.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent import futures
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before faiss is imported: set later, it misses gRPC's threads

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection  # noqa: E402

from sharerank.config import Settings  # noqa: E402
from sharerank.serving.api.services import SERVICE_NAMES, SERVICES  # noqa: E402
from sharerank.serving.api.spec import ServingContext  # noqa: E402
from sharerank.serving.auth import BearerAuthInterceptor  # noqa: E402
from sharerank.serving.bulkhead import GIL_SWITCH_S, Bulkhead  # noqa: E402
from sharerank.serving.events.healer import LiveStateHealer  # noqa: E402
from sharerank.serving.events.journal import EventJournal, open_event_journal  # noqa: E402
from sharerank.serving.model_holder import ModelHolder, ModelLoadError  # noqa: E402
from sharerank.serving.observability import MetricsInterceptor, RequestLogInterceptor, ServerMetrics  # noqa: E402
from sharerank.serving.online_store import OnlineStore  # noqa: E402
from sharerank.serving.online_store.breaker import CircuitBreaker, GuardedOnlineStore  # noqa: E402
from sharerank.serving.tls import check_transport, server_credentials  # noqa: E402
from sharerank.serving.tracing import otlp_provider, server_interceptors  # noqa: E402

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

__all__ = ["SERVICE_NAMES", "Server", "create_server", "serve_forever"]


class Server:
    """A running sharerank server: the gRPC server, its port, the health servicer, and the parts its services
    share (``parts``: model holder, guarded store, event log, healer, bulkheads), which :meth:`stop` closes.

    ``metrics`` is None when metrics are off; ``metrics_port`` also when its port could not be bound.
    """

    def __init__(self, grpc_server: grpc.Server, port: int, parts: ServingContext, breaker: CircuitBreaker,
                 health_servicer, metrics: ServerMetrics | None = None, metrics_port: int | None = None):
        self.grpc_server, self.port, self.parts, self.breaker = grpc_server, port, parts, breaker
        self.holder, self.event_log, self.healer = parts.holder, parts.event_log, parts.healer
        self.health, self.metrics, self.metrics_port = health_servicer, metrics, metrics_port
        self.tracer_provider: TracerProvider | None = None

    def mark_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def stop(self, grace: float | None = 5.0) -> None:
        self.mark_serving(False)
        self.holder.stop()
        self.parts.seeding.shutdown()
        self.parts.reloads.shutdown()
        self.grpc_server.stop(grace).wait()
        self.healer.stop()
        self.breaker.stop()
        self.event_log.close()  # after the in-flight RecordEvents calls finished
        if self.metrics is not None:
            self.metrics.stop_http()
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(timeout_millis=2000)  # the last calls' spans reach the collector


def create_server(settings: Settings, store: OnlineStore, holder: ModelHolder | None = None,
                  address: str | None = None, metrics_address: str | None = None, replica: int = 0,
                  tracer_provider: TracerProvider | None = None) -> Server:
    """Builds and starts the server on ``address`` (default ``host:port`` from settings; port 0 picks one).

    Prometheus metrics go to ``metrics_address`` (default ``host:metrics_port``; port 0 there picks one),
    unless ``metrics_port`` is 0 and no address is given. Auth is on when ``auth_tokens`` is set; TLS when
    ``tls_cert_file`` and ``tls_key_file`` are (see :mod:`~sharerank.serving.tls`), checked before anything starts.
    The model is loaded before returning when the alias is set; otherwise health stays NOT_SERVING and
    the alias poller (or ReloadModel) loads it later. RecordEvents appends to the event journal settings name
    (:func:`~sharerank.serving.events.journal.open_event_journal`): the shared stream, or the file log in
    ``event_log_dir``, which this server holds until :meth:`Server.stop`. ``replica`` numbers the processes of
    one ``serve --processes N``. ``trace_sample_ratio`` of the calls are traced with ``tracer_provider``, by
    default an OTLP exporter when ``otlp_endpoint`` is set (:mod:`~sharerank.serving.tracing`).

    Raises:
        TLSSettingsError: a TLS file cannot be used, or auth tokens without TLS on a non-loopback address.
        EventLogError: another process writes that event log, or the event stream cannot be used.
        OSError: the address cannot be bound.
    """
    address = address or f"{settings.host}:{settings.port}"
    check_transport(settings, address)
    credentials = server_credentials(settings)
    event_log = open_event_journal(settings, replica)
    try:
        if tracer_provider is None and settings.otlp_endpoint:
            tracer_provider = otlp_provider(settings.otlp_endpoint)
        return _start(settings, store, holder, address, metrics_address, event_log, credentials, tracer_provider)
    except BaseException:
        event_log.close()
        raise


def _start(settings: Settings, store: OnlineStore, holder: ModelHolder | None, address: str,
           metrics_address: str | None, event_log: EventJournal, credentials: grpc.ServerCredentials | None,
           tracer_provider: TracerProvider | None) -> Server:
    holder = holder or ModelHolder(settings)
    # Loaded before the port is bound: with replicas on one port (SO_REUSEPORT) the kernel hands this process
    # connections from the moment it listens, and a call there must not find it still loading.
    if holder.current is None:
        try:
            holder.follow()
        except ModelLoadError as exc:
            log.error("no model to serve yet: %s", exc)
    sys.setswitchinterval(GIL_SWITCH_S)  # process-wide: feeds wait less for a GIL that heavy calls hold
    metrics = ServerMetrics() if metrics_address is not None or settings.metrics_port else None
    # Metrics outermost, so the calls auth rejects are counted (by code) like any other.
    interceptors = [MetricsInterceptor(metrics)] if metrics is not None else []
    interceptors += server_interceptors(tracer_provider, settings.trace_sample_ratio)  # rejected calls too
    interceptors.append(RequestLogInterceptor(lambda: holder.current.version if holder.current else ""))
    if settings.auth_tokens:
        interceptors.append(BearerAuthInterceptor(settings.auth_tokens))
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
                              interceptors=interceptors, options=_connection_options(settings))
    if settings.heavy_workers + settings.heavy_queue >= settings.workers:
        log.warning("heavy_workers + heavy_queue (%d) leave no gRPC worker of %d for feeds while heavy calls wait",
                    settings.heavy_workers + settings.heavy_queue, settings.workers)
    breaker = CircuitBreaker(store.ping, settings.store_failures_to_open, settings.store_probe_seconds)
    guarded = GuardedOnlineStore(store, breaker)
    healer = LiveStateHealer(event_log, guarded, lambda: holder.current.bundle if holder.current else None,
                             settings.heal_seconds)
    breaker.add_close_listener(healer.wake)
    seeding = Bulkhead("seeding", settings.heavy_workers, settings.heavy_queue, processes=settings.heavy_processes,
                       threads=settings.heavy_threads)
    parts = ServingContext(holder, guarded, event_log, healer, seeding, Bulkhead("reload", 1, 1))
    for service in SERVICES:
        service.register(service.build(parts), grpc_server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), grpc_server)
    try:
        port = (grpc_server.add_insecure_port(address) if credentials is None
                else grpc_server.add_secure_port(address, credentials))
    except RuntimeError:  # gRPC's "Failed to bind", e.g. a taken port
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}{' with TLS' if credentials is not None else ''}")
    metrics_port = None
    if metrics is not None:
        metrics_host, metrics_port = _split_address(metrics_address) if metrics_address else \
            (settings.host, settings.metrics_port)
        holder.add_listener(metrics.set_model)
        if holder.current is not None:
            metrics.set_model(holder.current)
        metrics.watch_breaker(breaker)
        healer.on_replayed = metrics.replayed.inc
        try:
            metrics_port = metrics.start_http(metrics_host, metrics_port)
        except OSError as exc:
            # Serving matters more than its metrics; the error says why the scrape target is down.
            log.error("metrics off: cannot listen on %s:%s: %s", metrics_host, metrics_port, exc)
            metrics_port = None
    grpc_server.start()
    server = Server(grpc_server, port, parts, breaker, health_servicer, metrics, metrics_port)
    server.tracer_provider = tracer_provider
    server.mark_serving(False)
    holder.add_listener(lambda _: server.mark_serving(True))
    server.mark_serving(holder.current is not None)
    holder.start_polling(settings.reload_poll_seconds)
    healer.start()  # after the model loaded: replayed purchases fan out to the buyers' friends
    return server


def _connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Connection ageing (see ``max_connection_age_seconds``): GOAWAY after the age, in-flight calls get as long
    again to finish."""
    if not settings.max_connection_age_seconds:
        return []
    age_ms = int(settings.max_connection_age_seconds * 1000)
    return [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", age_ms)]


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def serve_forever(server: Server) -> None:
    """Blocks until SIGINT/SIGTERM, then stops with a grace period."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    log.info("listening on port %d; metrics on port %s", server.port, server.metrics_port)
    done.wait()
    log.info("shutting down")
    server.stop()
