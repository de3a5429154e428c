"""Rich gRPC errors (AIP-193): a canonical code, a short actionable message, and an ErrorInfo with a
terse reason, one service-wide domain and the offending ids in metadata."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "sharerank.v1"


class ServiceError(Exception):
    """Raised by library code called from handlers; the handler maps it to a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, **metadata: str):
        super().__init__(message)
        self.code, self.message, self.reason, self.metadata = code, message, reason, metadata


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


def to_status(error: ServiceError) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))
    status = status_pb2.Status(code=getattr(code_pb2, error.code.name), message=error.message, details=[detail])
    return rpc_status.to_status(status)


def error_info(call_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo carried by a failed call (clients and tests read the reason from it)."""
    status = rpc_status.from_call(call_error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
