"""SeedingService (GetSeedTargets): the servicer, and the proto ↔ domain mapping of its messages."""

from __future__ import annotations

from sharerank.models.seeding.plan import SeedPlan
from sharerank.serving.api.spec import ServiceSpec, service_name, serving_model
from sharerank.serving.errors import ServiceError, to_status
from sharerank.serving.model_holder import ModelHolder
from sharerank.serving.seeding.targets import SeedRequest, seed_targets
from sharerank.v1 import reason_pb2, seeding_service_pb2, seeding_service_pb2_grpc


class SeedingService(seeding_service_pb2_grpc.SeedingServiceServicer):
    """KOC seed targets from the serving model's influence model."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder

    def GetSeedTargets(self, request, context):
        model = serving_model(self.holder, context)
        try:
            plan = seed_targets(model.bundle, parse_seed_request(request))
        except ServiceError as error:
            context.abort_with_status(to_status(error))
        return seed_response(plan, model.version)


def parse_seed_request(request: seeding_service_pb2.GetSeedTargetsRequest) -> SeedRequest:
    target = request.WhichOneof("target")
    return SeedRequest(budget=request.budget, product_id=request.product_id if target == "product_id" else None,
                       category=request.category if target == "category" else None,
                       exclude_user_ids=tuple(request.exclude_user_ids), min_activity=request.min_activity,
                       max_seeds_per_community=request.max_seeds_per_community, epsilon=request.epsilon)


def seed_response(plan: SeedPlan, model_version: str) -> seeding_service_pb2.GetSeedTargetsResponse:
    return seeding_service_pb2.GetSeedTargetsResponse(
        seeds=[seeding_service_pb2.SeedTarget(
            user_id=s.user_id, marginal_reach=s.marginal_reach, cumulative_reach=s.cumulative_reach,
            cumulative_reach_ci_low=s.ci_low, cumulative_reach_ci_high=s.ci_high, community=str(s.community),
            reasons=[reason_pb2.Reason(kind=reason_pb2.ReasonKind.Value(f"REASON_KIND_{r.kind}"), text=r.text)
                     for r in s.reasons])
            for s in plan.seeds],
        expected_reach=plan.expected_reach, model_version=model_version)


SERVICE = ServiceSpec(name=service_name(seeding_service_pb2, "SeedingService"), roles=frozenset({"growth"}),
                      build=lambda ctx: SeedingService(ctx.holder),
                      register=seeding_service_pb2_grpc.add_SeedingServiceServicer_to_server)
