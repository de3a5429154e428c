"""Traces: OpenTelemetry spans for every call, each feed stage and each online-store round trip; off by default.

On when ``otlp_endpoint`` is set (spans go there over OTLP/gRPC in batches) or when a test hands the server a
tracer provider of its own (an in-memory exporter). Then ``trace_sample_ratio`` of the calls are traced, and every
call whose caller sent a sampled ``traceparent``:

- the gRPC server is instrumented by ``opentelemetry-instrumentation-grpc`` (one server span per call, a
  caller's ``traceparent`` continued);
- each traced call's reply carries its trace id in the ``x-trace-id`` header, so a storefront can quote a
  slow call;
- :func:`span` opens a child span (a feed stage, a Redis round trip) only while a sampled call's span is
  current: with tracing off it costs one context-variable read.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from sharerank.serving.observability import WrappingInterceptor

log = logging.getLogger(__name__)

TRACE_ID_HEADER = "x-trace-id"

# The tracer of the server handling the current call (set per call; None: tracing off for this call).
_tracer: contextvars.ContextVar[trace.Tracer | None] = contextvars.ContextVar("sharerank_tracer", default=None)


def otlp_provider(endpoint: str, service_name: str = "sharerank") -> TracerProvider:
    """A provider exporting to an OTLP/gRPC collector at ``endpoint`` in batches (off the request path). It keeps
    every call's span it is given: which calls are traced is decided before, by :func:`server_interceptors`."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def server_interceptors(provider: TracerProvider | None, sample_ratio: float) -> list[grpc.ServerInterceptor]:
    """The interceptors that trace ``sample_ratio`` of a server's calls with ``provider`` (and every call whose
    caller sent a sampled ``traceparent``); none when ``provider`` is None (tracing off)."""
    if provider is None:
        return []
    return [server_interceptor(tracer_provider=provider, filter_=_head_sampler(sample_ratio)),
            _TraceIdInterceptor(provider.get_tracer(__name__))]


def _head_sampler(ratio: float) -> Callable[[grpc.HandlerCallDetails], bool]:
    """Whether a call is traced, decided before the instrumentation sees it, so a call left out costs no span
    objects at all: left to the provider's sampler, the instrumentation's work on the 90% of calls it dropped
    cost a feed 6% (``bench/bench_tracing.py``). A caller's ``traceparent`` decides when sent, as
    ``ParentBased`` would; else ``ratio`` of the calls, at random."""

    def traced(details: grpc.HandlerCallDetails) -> bool:
        carrier = {key: value for key, value in details.invocation_metadata or () if isinstance(value, str)}
        parent = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if parent.is_valid:
            return parent.trace_flags.sampled
        return random.random() < ratio

    return traced


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current call's span, when the call is traced; else nothing."""
    tracer = _tracer.get()
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, attributes=attributes or None):
        yield


class _TraceIdInterceptor(WrappingInterceptor):
    """Inside the instrumentation's span: makes this server's tracer current for :func:`span` and sends the
    trace id in the reply's headers."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return handler
        behavior, tracer = handler.unary_unary, self.tracer

        def traced(request, context):
            context_span = trace.get_current_span().get_span_context()
            if not context_span.is_valid or not context_span.trace_flags.sampled:
                return behavior(request, context)
            context.send_initial_metadata(((TRACE_ID_HEADER, format(context_span.trace_id, "032x")),))
            token = _tracer.set(tracer)
            try:
                return behavior(request, context)
            finally:
                _tracer.reset(token)

        return grpc.unary_unary_rpc_method_handler(traced, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
