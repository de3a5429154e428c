"""Bearer-token auth as a gRPC server interceptor: each token speaks for one role, each role may call some services.

Clients send ``authorization: Bearer <token>`` metadata; ``Settings.auth_tokens`` maps token → role, and each
service's row in :data:`~sharerank.serving.api.services.SERVICES` names the roles that may call it
(``storefront``: FeedService, EventService; ``growth``: SeedingService); ``admin`` may call every service.

Health checking and reflection are public (load balancers and grpcurl call them without a token). A call
without a bearer token, or with one nobody configured, fails UNAUTHENTICATED (reason ``MISSING_TOKEN`` or
``INVALID_TOKEN``); a known token whose role may not call the method fails PERMISSION_DENIED (reason
``ROLE_NOT_ALLOWED``, with ``role`` and ``method`` in the ErrorInfo metadata). Tokens are compared in
constant time, by SHA-256 digest, so neither a prefix nor the length of a configured token leaks.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import get_args

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from sharerank.config import Role
from sharerank.serving.api.services import SERVICES
from sharerank.serving.errors import ServiceError, permission_denied, to_status, unauthenticated

log = logging.getLogger(__name__)


ROLE_SERVICES: dict[str, frozenset[str] | None] = {
    role: None if role == "admin" else frozenset(spec.name for spec in SERVICES if role in spec.roles)
    for role in get_args(Role)
}
"""The services each role may call, from the services table; ``None`` (admin): all of them."""

PUBLIC_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"})
"""Services anyone may call without a token."""


_HEADER = "authorization"
_SCHEME = "bearer"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class BearerAuthInterceptor(grpc.ServerInterceptor):
    """Admits a call when its bearer token's role may call the method's service; rejects it with a status otherwise.

    Args:
        tokens: token → role (``Settings.auth_tokens``); must not be empty.

    Raises:
        ValueError: no tokens, or a role outside :data:`ROLE_SERVICES`.
    """

    def __init__(self, tokens: Mapping[str, str]):
        if not tokens:
            raise ValueError("BearerAuthInterceptor needs at least one token; leave it out to switch auth off")
        unknown = sorted({role for role in tokens.values() if role not in ROLE_SERVICES})
        if unknown:
            raise ValueError(f"unknown roles {unknown}; roles are {', '.join(ROLE_SERVICES)}")
        self._tokens = tuple((_digest(token), role) for token, role in tokens.items())

    def role_of(self, token: str) -> str | None:
        """The role of ``token``, or None; takes the same time whichever token (if any) matches."""
        presented = _digest(token)
        role = None
        for known, known_role in self._tokens:  # no early exit: timing does not tell which token matched
            if hmac.compare_digest(presented, known):
                role = known_role
        return role

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method  # "/sharerank.v1.FeedService/GetFeed"
        service = method[1:method.rfind("/")]
        if service in PUBLIC_SERVICES:
            return continuation(handler_call_details)
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == _HEADER:
                header = value
                break
        scheme, _, token = header.partition(" ") if isinstance(header, str) else ("", "", "")
        token = token.strip()
        if scheme.lower() != _SCHEME or not token:
            message = ("missing bearer token: send metadata 'authorization: Bearer <token>'" if header is None
                       else "malformed authorization metadata: expected 'Bearer <token>'")
            return _rejection(continuation(handler_call_details), unauthenticated(message, "MISSING_TOKEN",
                                                                                    method=method[1:]))
        role = self.role_of(token)
        if role is None:
            return _rejection(continuation(handler_call_details),
                              unauthenticated("invalid bearer token", "INVALID_TOKEN", method=method[1:]))
        allowed = ROLE_SERVICES[role]
        if allowed is not None and service not in allowed:
            log.info("role %s denied %s", role, method)
            message = (f"role {role!r} may not call {method[1:]}; it may call "
                       f"{', '.join(sorted(allowed))}")
            return _rejection(continuation(handler_call_details),
                              permission_denied(message, "ROLE_NOT_ALLOWED", role=role, method=method[1:]))
        return continuation(handler_call_details)


def _rejection(handler: grpc.RpcMethodHandler | None, error: ServiceError) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that fails every call with ``error``."""
    status = to_status(error)

    def abort(_request, context: grpc.ServicerContext):
        context.abort_with_status(status)

    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(abort)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    return grpc.unary_stream_rpc_method_handler(abort)
