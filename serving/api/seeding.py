"""SeedingService (GetSeedTargets): the servicer, and the proto ↔ domain mapping of its messages."""

from __future__ import annotations

import logging

from sharerank.models.seeding.plan import SeedPlan
from sharerank.serving.api.spec import ServiceSpec, service_name, serving_model
from sharerank.serving.errors import ServiceError, to_status
from sharerank.serving.model_holder import ModelHolder
from sharerank.serving.online_store import OnlineStore, OnlineStoreError
from sharerank.serving.seeding.targets import SeedRequest, seed_targets
from sharerank.v1 import reason_pb2, seeding_service_pb2, seeding_service_pb2_grpc

log = logging.getLogger(__name__)


class SeedingService(seeding_service_pb2_grpc.SeedingServiceServicer):
    """KOC seed targets from the serving model's influence model; buyers of the product since training (the
    online store) are left out too."""

    def __init__(self, holder: ModelHolder, store: OnlineStore):
        self.holder, self.store = holder, store

    def GetSeedTargets(self, request, context):
        model = serving_model(self.holder, context)
        try:
            parsed = parse_seed_request(request)
            live, note = live_buyers(self.store, parsed.product_id)
            plan = seed_targets(model.bundle, parsed, live_buyers=live)
        except ServiceError as error:
            context.abort_with_status(to_status(error))
        return seed_response(plan, model.version, note)


def live_buyers(store: OnlineStore, product_id: str | None) -> tuple[tuple[str, ...], str | None]:
    """Who bought ``product_id`` since training, from the online store; fails open with a warning."""
    if product_id is None:
        return (), None
    try:
        return tuple(store.get_buyers(product_id)), None
    except OnlineStoreError as exc:
        log.warning("seeding without live buyers of %s: %s", product_id, exc)
        return (), ("the online store did not answer: buyers of the product since the model was trained may be "
                    "among the seeds")


def parse_seed_request(request: seeding_service_pb2.GetSeedTargetsRequest) -> SeedRequest:
    target = request.WhichOneof("target")
    return SeedRequest(budget=request.budget, product_id=request.product_id if target == "product_id" else None,
                       category=request.category if target == "category" else None,
                       exclude_user_ids=tuple(request.exclude_user_ids), min_activity=request.min_activity,
                       max_seeds_per_community=request.max_seeds_per_community, epsilon=request.epsilon)


def seed_response(plan: SeedPlan, model_version: str,
                  note: str | None = None) -> seeding_service_pb2.GetSeedTargetsResponse:
    return seeding_service_pb2.GetSeedTargetsResponse(
        seeds=[seeding_service_pb2.SeedTarget(
            user_id=s.user_id, marginal_reach=s.marginal_reach, cumulative_reach=s.cumulative_reach,
            cumulative_reach_ci_low=s.ci_low, cumulative_reach_ci_high=s.ci_high, community=str(s.community),
            reasons=[reason_pb2.Reason(kind=reason_pb2.ReasonKind.Value(f"REASON_KIND_{r.kind}"), text=r.text)
                     for r in s.reasons])
            for s in plan.seeds],
        expected_reach=plan.expected_reach, expected_reach_ci_low=plan.ci_low, expected_reach_ci_high=plan.ci_high,
        warnings=[*plan.warnings, *([note] if note else [])],
        influence_regime=str(plan.selection.get("influence", {}).get("regime", "")), model_version=model_version)


SERVICE = ServiceSpec(name=service_name(seeding_service_pb2, "SeedingService"), roles=frozenset({"growth"}),
                      build=lambda ctx: SeedingService(ctx.holder, ctx.store),
                      register=seeding_service_pb2_grpc.add_SeedingServiceServicer_to_server)
