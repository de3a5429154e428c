"""What a gRPC service is to the server: its proto name, the roles that may call it, and how to build and
register its servicer. :data:`~sharerank.serving.api.services.SERVICES` lists one per service; the server,
health checking, reflection and auth all read that table, so adding a service is one module and one row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from sharerank.config import Role
from sharerank.serving.events.log import EventLog
from sharerank.serving.model_holder import LoadedModel, ModelHolder
from sharerank.serving.online_store import OnlineStore


@dataclass(frozen=True)
class ServingContext:
    """What servicers are built from: the model holder, the online store and the event log the server owns."""

    holder: ModelHolder
    store: OnlineStore
    event_log: EventLog


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
    """The model serving now, read once per call (a swap never mixes two models); UNAVAILABLE before the first."""
    model = holder.current
    if model is None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "no model loaded yet; retry shortly")
    return model
