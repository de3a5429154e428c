"""A typed Python client for sharerank's gRPC services: deadlines on every call, gRPC's retry policy on the calls
safe to repeat, the bearer token and TLS from arguments or the settings, errors as typed exceptions carrying the
server's ErrorInfo reason (README "Calling sharerank from Python")."""

from sharerank.client.admin import AdminClient, AsyncAdminClient
from sharerank.client.base import DEADLINES_S
from sharerank.client.channel import RetryPolicy
from sharerank.client.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SharerankError,
    Unauthenticated,
    Unavailable,
)
from sharerank.client.events import AsyncEventClient, EventClient, purchase_event, share_event, view_event
from sharerank.client.feed import AsyncFeedClient, FeedClient
from sharerank.client.seeding import AsyncSeedingClient, SeedingClient

__all__ = [
    "DEADLINES_S", "AdminClient", "AsyncAdminClient", "AsyncEventClient", "AsyncFeedClient", "AsyncSeedingClient",
    "DeadlineExceeded", "EventClient", "FailedPrecondition", "FeedClient", "InvalidArgument", "NotFound",
    "PermissionDenied", "ResourceExhausted", "RetryPolicy", "SeedingClient", "SharerankError", "Unauthenticated",
    "Unavailable", "purchase_event", "share_event", "view_event",
]
