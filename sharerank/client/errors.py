"""Failed calls as typed exceptions: one class per status code a caller handles differently, each carrying the
``google.rpc.ErrorInfo`` reason the server sent (``EMPTY_USER_ID``, ``UNKNOWN_PRODUCT``, ``OVERLOADED``, ...),
its metadata, and the ``RetryInfo`` delay where the server gave one.

Callers branch on the class (``except NotFound``) and on ``reason``, never on message text, which may change.
Errors raised by the client's own gRPC stack (a deadline that expired on the way, a server nobody answers at)
have the code but no ErrorInfo: ``reason`` is ``""`` then.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "DeadlineExceeded", "FailedPrecondition", "InvalidArgument", "NotFound", "PermissionDenied", "ResourceExhausted",
    "SharerankError", "Unauthenticated", "Unavailable", "from_rpc_error",
]


class SharerankError(Exception):
    """A call sharerank refused, or that did not complete.

    Attributes:
        code: The gRPC status code.
        message: The server's short, actionable message (or gRPC's own, for a transport failure).
        reason: ``ErrorInfo.reason`` (UPPER_SNAKE), ``""`` when the server sent none.
        domain: ``ErrorInfo.domain`` (``sharerank.v1``), ``""`` when the server sent none.
        metadata: ``ErrorInfo.metadata``: the offending ids and fields.
        retry_after: seconds to wait before trying again (``RetryInfo``), None when the server did not say.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "", domain: str = "",
                 metadata: dict[str, str] | None = None, retry_after: float | None = None):
        super().__init__(f"{code.name} {reason}: {message}" if reason else f"{code.name}: {message}")
        self.code, self.message, self.reason, self.domain = code, message, reason, domain
        self.metadata = metadata or {}
        self.retry_after = retry_after


class InvalidArgument(SharerankError):
    """The request is wrong (an id, a page size, a page token): sending it again fails again."""


class NotFound(SharerankError):
    """The request names something the serving model does not know (``UNKNOWN_PRODUCT``)."""


class FailedPrecondition(SharerankError):
    """The server cannot do it in its current state (``MODEL_LOAD_FAILED``)."""


class Unauthenticated(SharerankError):
    """No bearer token, or one the server does not know (``MISSING_TOKEN``, ``INVALID_TOKEN``)."""


class PermissionDenied(SharerankError):
    """The token's role may not call this service (``ROLE_NOT_ALLOWED``; ``role`` and ``method`` in metadata)."""


class ResourceExhausted(SharerankError):
    """The server is full (``OVERLOADED``): come back after ``retry_after`` seconds."""


class Unavailable(SharerankError):
    """The server did not answer, or cannot serve yet (``NO_MODEL``, ``SHUTTING_DOWN``), after the retries the
    client is allowed for this call."""


class DeadlineExceeded(SharerankError):
    """The call's deadline passed before its answer arrived (or before the server began it: ``DEADLINE_PASSED``)."""


_BY_CODE: dict[grpc.StatusCode, type[SharerankError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> SharerankError:
    """The typed exception for a failed call (sync or ``grpc.aio``), with its ErrorInfo and RetryInfo read from
    the ``google.rpc.Status`` in the trailers."""
    code, message = error.code(), error.details() or ""
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    has_info = has_retry = False
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a Status that contradicts the call's code: trust the code, drop the details
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(info.DESCRIPTOR):
            has_info = detail.Unpack(info)
        elif detail.Is(retry.DESCRIPTOR):
            has_retry = detail.Unpack(retry)
    kind = _BY_CODE.get(code, SharerankError)
    return kind(code, message, info.reason if has_info else "", info.domain if has_info else "",
                dict(info.metadata) if has_info else {},
                retry.retry_delay.ToNanoseconds() / 1e9 if has_retry else None)
