"""One channel to sharerank: TLS when a CA file is given, the bearer token as call credentials, and gRPC's own
retry policy for the calls that are safe to send twice.

Retried (on ``UNAVAILABLE`` only, with exponential backoff): the reads (GetFeed, GetSimilarProducts,
GetSeedTargets, GetAudience) and RecordEvents, which the server dedupes by event id, so a batch whose answer was
lost counts once. ReloadModel is never retried. ``RESOURCE_EXHAUSTED`` (``OVERLOADED``) is not retried either:
the server refuses a full seeding bulkhead and asks for a pause (RetryInfo, 1 s) that gRPC's backoff ignores, so
automatic retries would come back sooner than asked, from every client at once, exactly while the server is
full; the caller gets :class:`~sharerank.client.errors.ResourceExhausted` with ``retry_after`` instead.
``retryThrottling`` stops retrying while most calls fail (an outage), so retries cannot multiply the load.

The token never travels in plaintext beyond this machine: without a CA file it rides on gRPC's local
credentials, which only connect to a loopback address (the server's rule for tokens without TLS, too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import grpc

from sharerank.v1 import admin_service_pb2, event_service_pb2, feed_service_pb2, seeding_service_pb2

__all__ = ["RETRIED_METHODS", "RetryPolicy", "channel_credentials", "channel_options", "open_aio_channel",
           "open_channel"]


def _service(module, name: str) -> str:
    return module.DESCRIPTOR.services_by_name[name].full_name


RETRIED_METHODS: dict[str, tuple[str, ...]] = {
    _service(feed_service_pb2, "FeedService"): ("GetFeed", "GetSimilarProducts"),
    _service(seeding_service_pb2, "SeedingService"): ("GetSeedTargets", "GetAudience"),
    _service(event_service_pb2, "EventService"): ("RecordEvents",),
    _service(admin_service_pb2, "AdminService"): ("GetModelInfo",),
}
"""Full service name → the methods that may be sent more than once."""

RECONNECT_BACKOFF_MS = (200, 2000)
"""First and longest wait between reconnection attempts. gRPC's defaults (1 s, growing to 120 s) outlast the
retry budget: after a server restart every retry would meet a channel still waiting to reconnect."""


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retry policy for :data:`RETRIED_METHODS`: retry ``n`` waits ``initial_backoff_s ·
    multiplier^(n-1)`` (at most ``max_backoff_s``, ±20% jitter). Each call's deadline bounds all its attempts.

    The defaults wait 1.2 s in all (0.1 + 0.2 + 0.4 + 0.5, at most 1.44 s with jitter): a quick restart is ridden
    out, and the retries end inside GetFeed's 2 s deadline, so a server that stays down is
    :class:`~sharerank.client.errors.Unavailable`, not a deadline that passed.

    Args:
        max_attempts: Attempts per call, the first included; gRPC allows 2..5. (default: ``5``)
        initial_backoff_s: The wait before the first retry. (default: ``0.1``)
        max_backoff_s: The longest wait between attempts. (default: ``0.5``)
        multiplier: How much each wait grows. (default: ``2.0``)
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 0.5
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be 2..5 (gRPC's limit), got {self.max_attempts}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s or self.multiplier < 1:
            raise ValueError("backoffs must satisfy 0 < initial_backoff_s <= max_backoff_s, and multiplier >= 1")

    def service_config(self) -> str:
        """The ``grpc.service_config`` JSON."""
        policy = {"maxAttempts": self.max_attempts, "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                  "maxBackoff": f"{self.max_backoff_s:.3f}s", "backoffMultiplier": self.multiplier,
                  "retryableStatusCodes": ["UNAVAILABLE"]}
        names = [{"service": service, "method": method}
                 for service, methods in RETRIED_METHODS.items() for method in methods]
        return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}],
                           "retryThrottling": {"maxTokens": 20, "tokenRatio": 0.1}})


def channel_options(retry: RetryPolicy) -> list[tuple[str, str | int]]:
    return [("grpc.service_config", retry.service_config()), ("grpc.enable_retries", 1),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1])]


def channel_credentials(token: str | None, ca_file: Path | None) -> grpc.ChannelCredentials | None:
    """TLS trusting ``ca_file`` when given; the token (``authorization: Bearer``) on every call when given; None
    for a plaintext channel without a token."""
    if ca_file is not None:
        tls = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    elif token:
        tls = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    else:
        return None
    return grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(token)) if token else tls


def open_channel(target: str, token: str | None, ca_file: Path | None, retry: RetryPolicy) -> grpc.Channel:
    credentials, options = channel_credentials(token, ca_file), channel_options(retry)
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def open_aio_channel(target: str, token: str | None, ca_file: Path | None, retry: RetryPolicy) -> grpc.aio.Channel:
    credentials, options = channel_credentials(token, ca_file), channel_options(retry)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)
