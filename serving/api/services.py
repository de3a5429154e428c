"""The gRPC services this server offers, one row each: the server registers them, health reports on them,
reflection lists them and auth admits callers by their roles."""

from __future__ import annotations

from sharerank.serving.api import admin, events, feed, seeding
from sharerank.serving.api.spec import ServiceSpec

SERVICES: tuple[ServiceSpec, ...] = (feed.SERVICE, seeding.SERVICE, events.SERVICE, admin.SERVICE)
SERVICE_NAMES: tuple[str, ...] = tuple(spec.name for spec in SERVICES)
