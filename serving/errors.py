"""Rich gRPC errors (AIP-193): a canonical code, a short actionable message, and an ErrorInfo with a
terse reason, one service-wide domain and the offending ids in metadata; a RetryInfo when the caller should
come back later (overload).

Messages and metadata are cut to a bound here, whatever a handler put in them: an error that repeats a
huge input would exceed the client's metadata limit and arrive as a transport failure instead.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "sharerank.v1"
MAX_MESSAGE_CHARS = 1024
"""Longest error message sent; handlers quote input through :func:`sharerank.serving.ids.quote`, this is the
backstop."""
MAX_METADATA_CHARS = 128
"""Longest ErrorInfo metadata value sent."""


class ServiceError(Exception):
    """Raised by library code called from handlers; the handler maps it to a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, retry_after_s: float | None = None,
                 **metadata: str):
        super().__init__(message)
        self.code, self.message, self.reason, self.metadata = code, message, reason, metadata
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # pickles whole: heavy calls raise it in a worker process (serving.bulkhead)
        return _rebuild, (self.code.name, self.message, self.reason, self.retry_after_s, self.metadata)


def _rebuild(code: str, message: str, reason: str, retry_after_s: float | None, metadata: dict) -> ServiceError:
    return ServiceError(grpc.StatusCode[code], message, reason, retry_after_s, **metadata)


def invalid_argument(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, reason, **metadata)


def not_found(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message, reason, **metadata)


def failed_precondition(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message, reason, **metadata)


def unauthenticated(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message, reason, **metadata)


def permission_denied(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message, reason, **metadata)


def unavailable(message: str, reason: str, retry_after_s: float | None = None, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, reason, retry_after_s, **metadata)


def resource_exhausted(message: str, reason: str, retry_after_s: float, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason, retry_after_s, **metadata)


def deadline_exceeded(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, message, reason, **metadata)


def to_status(error: ServiceError) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata={
        key: value[:MAX_METADATA_CHARS] for key, value in error.metadata.items()}))
    details = [info]
    if error.retry_after_s is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    message = error.message if len(error.message) <= MAX_MESSAGE_CHARS else error.message[:MAX_MESSAGE_CHARS] + "…"
    status = status_pb2.Status(code=getattr(code_pb2, error.code.name), message=message, details=details)
    return rpc_status.to_status(status)


def abort(context: grpc.ServicerContext, error: ServiceError):
    """Ends the call with ``error`` (code, message, ErrorInfo and RetryInfo); never returns."""
    context.abort_with_status(to_status(error))


def error_info(call_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo carried by a failed call (clients and tests read the reason from it)."""
    return _detail(call_error, error_details_pb2.ErrorInfo)


def retry_info(call_error: grpc.RpcError) -> error_details_pb2.RetryInfo | None:
    """The RetryInfo carried by a failed call: how long to wait before retrying, when the server said."""
    return _detail(call_error, error_details_pb2.RetryInfo)


def _detail(call_error: grpc.RpcError, kind):
    status = rpc_status.from_call(call_error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None
