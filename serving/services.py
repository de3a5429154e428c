"""gRPC servicers: thin handlers that parse, call one library function, and map the result or error.

One servicer per service of the contract: FeedService, SeedingService, EventService, AdminService.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sharerank.serving import marshal, observability
from sharerank.serving.errors import ServiceError, to_status
from sharerank.serving.events import EventRecorder
from sharerank.serving.feed.pipeline import FeedPipeline
from sharerank.serving.model_loader import LoadedModel, ModelHolder, ModelLoadError
from sharerank.serving.seeding import seed_response, seed_targets
from sharerank.serving.similar import similar_products
from sharerank.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    feed_service_pb2_grpc,
    seeding_service_pb2_grpc,
)

log = logging.getLogger(__name__)


def _serving_model(holder: ModelHolder, context: grpc.ServicerContext) -> LoadedModel:
    model = holder.current
    if model is None:
        context.abort(grpc.StatusCode.UNAVAILABLE, "no model loaded yet; retry shortly")
    return model


class FeedService(feed_service_pb2_grpc.FeedServiceServicer):
    """Personalised feeds from the serving model."""

    def __init__(self, holder: ModelHolder, pipeline: FeedPipeline):
        self.holder, self.pipeline = holder, pipeline

    def GetFeed(self, request, context):
        model = _serving_model(self.holder, context)  # read once: a swap never mixes two models
        bundle = model.bundle
        try:
            parsed = marshal.parse_feed_request(request)
        except ServiceError as error:
            context.abort_with_status(to_status(error))
        rows = bundle.product_rows
        page = self.pipeline.run(
            model=bundle, user_id=parsed.user_id, page_size=parsed.page_size, categories=parsed.categories,
            exclude_products=frozenset(rows[p] for p in parsed.exclude_product_ids if p in rows),
            served=frozenset(rows[p] for p in parsed.served_product_ids if p in rows), explain=parsed.explain)
        observability.record_feed_degraded(page.degraded)
        return marshal.feed_response(page, parsed, bundle.category, bundle.products, model.version)

    def GetSimilarProducts(self, request, context):
        model = _serving_model(self.holder, context)
        bundle = model.bundle
        try:
            row, page_size, categories = marshal.parse_similar_request(request, bundle.product_rows)
        except ServiceError as error:
            context.abort_with_status(to_status(error))
        items = similar_products(bundle, row, page_size, categories)
        return marshal.similar_response(items, bundle.category, bundle.products, model.version)


class SeedingService(seeding_service_pb2_grpc.SeedingServiceServicer):
    """KOC seed targets from the serving model's influence model."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder

    def GetSeedTargets(self, request, context):
        model = _serving_model(self.holder, context)
        try:
            plan = seed_targets(model.bundle, request)
        except ServiceError as error:
            context.abort_with_status(to_status(error))
        return seed_response(plan, model.version)


class EventService(event_service_pb2_grpc.EventServiceServicer):
    """Event ingestion: the event log first, then the online store (see ``serving/events.py``)."""

    def __init__(self, holder: ModelHolder, recorder: EventRecorder):
        self.holder, self.recorder = holder, recorder

    def RecordEvents(self, request, context):
        # Events are taken without a model too (the log matters most); the model only adds friends' fan-out.
        model = self.holder.current
        try:
            result = self.recorder.record(request, model.bundle if model is not None else None)
        except ServiceError as error:
            context.abort_with_status(to_status(error))
        return event_service_pb2.RecordEventsResponse(
            accepted_count=result.accepted, duplicate_count=result.duplicates,
            model_version=model.version if model is not None else "")


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    """Model information and reloads."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder

    def GetModelInfo(self, request, context):
        model = _serving_model(self.holder, context)
        bundle = model.bundle
        load_time = Timestamp()
        load_time.FromDatetime(model.load_time)
        return admin_service_pb2.GetModelInfoResponse(
            model_name=model.name, model_version=model.version, run_id=model.run_id,
            model_type=bundle.model_type, user_count=len(bundle.users), product_count=len(bundle.products),
            index_type=bundle.index.kind, data_fingerprint=str(bundle.info.get("data_fingerprint", "")),
            load_time=load_time)

    def ReloadModel(self, request, context):
        try:
            now, before = self.holder.load(request.model_version or None)
        except ModelLoadError as exc:
            current = self.holder.current
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{exc}; still serving version {current.version if current else 'none'}")
        return admin_service_pb2.ReloadModelResponse(
            model_version=now.version, previous_model_version=before.version if before else "",
            changed=before is None or before.version != now.version)
