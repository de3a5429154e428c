"""What a gRPC service is to the server: its proto name, the roles that may call it, and how to build and
register its servicer. :data:`~sharerank.serving.api.services.SERVICES` lists one per service; the server,
health checking, reflection and auth all read that table, so adding a service is one module and one row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from sharerank.config import Role
from sharerank.serving.bulkhead import Bulkhead
from sharerank.serving.errors import abort, deadline_exceeded, unavailable
from sharerank.serving.events.healer import LiveStateHealer
from sharerank.serving.events.journal import EventJournal
from sharerank.serving.model_holder import LoadedModel, ModelHolder
from sharerank.serving.online_store import OnlineStore


@dataclass(frozen=True)
class ServingContext:
    """What servicers are built from: the model holder, the online store (behind its circuit breaker), the event
    log the server owns, its healer (told of missed store writes) and the bulkheads heavy calls run in
    (seeding; model reloads)."""

    holder: ModelHolder
    store: OnlineStore
    event_log: EventJournal
    healer: LiveStateHealer
    seeding: Bulkhead
    reloads: Bulkhead


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service of the contract.

    Args:
        name: The proto's full service name (``sharerank.v1.FeedService``): health and auth key on it.
        roles: Roles that may call it besides ``admin``, who may call every service.
        build: Makes the servicer from the server's parts.
        register: The generated ``add_<Service>Servicer_to_server``.
    """

    name: str
    roles: frozenset[Role]
    build: Callable[[ServingContext], Any]
    register: Callable[[Any, grpc.Server], None]


def service_name(module: Any, service: str) -> str:
    """The full name of ``service`` as its generated ``*_pb2`` module declares it."""
    return module.DESCRIPTOR.services_by_name[service].full_name


def serving_model(holder: ModelHolder, context: grpc.ServicerContext) -> LoadedModel:
    """The model serving now, read once per call (a swap never mixes two models); UNAVAILABLE before the first,
    DEADLINE_EXCEEDED when the caller's deadline passed before the work began (nobody would read the answer)."""
    check_deadline(context)
    model = holder.current
    if model is None:
        abort(context, unavailable("no model loaded yet; retry shortly", "NO_MODEL", retry_after_s=1.0))
    return model


def check_deadline(context: grpc.ServicerContext) -> None:
    """Ends the call DEADLINE_EXCEEDED (reason ``DEADLINE_PASSED``) when its deadline has already passed."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        abort(context, deadline_exceeded("the call's deadline passed before the server began it", "DEADLINE_PASSED"))
