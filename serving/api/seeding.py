"""SeedingService (GetSeedTargets, GetAudience): the servicer, and the proto ↔ domain mapping of its messages."""

from __future__ import annotations

import logging

from sharerank.models.seeding.plan import SeedPlan, SeedTrust
from sharerank.serving.api.spec import ServiceSpec, service_name, serving_model
from sharerank.serving.bulkhead import Bulkhead, ModelRef
from sharerank.serving.errors import ServiceError, abort, invalid_argument
from sharerank.serving.ids import check_id, check_ids, quote
from sharerank.serving.model_holder import ModelHolder
from sharerank.serving.online_store import OnlineStore, OnlineStoreError
from sharerank.serving.ratelog import RateLimitedLog
from sharerank.serving.seeding.audience import AudienceMember, AudienceRequest, audience
from sharerank.serving.seeding.targets import SeedRequest, seed_targets
from sharerank.v1 import reason_pb2, seeding_service_pb2, seeding_service_pb2_grpc

log = RateLimitedLog(logging.getLogger(__name__))


class SeedingService(seeding_service_pb2_grpc.SeedingServiceServicer):
    """KOC seed targets from the serving model's influence model; buyers of the product since training (the
    online store) are left out too."""

    def __init__(self, holder: ModelHolder, store: OnlineStore, bulkhead: Bulkhead):
        self.holder, self.store, self.bulkhead = holder, store, bulkhead

    def GetSeedTargets(self, request, context):
        try:
            parsed = parse_seed_request(request)
        except ServiceError as error:
            abort(context, error)
        model = serving_model(self.holder, context)
        live, note = live_buyers(self.store, parsed.product_id)
        try:
            reply = self.bulkhead.run(context, plan_on_worker, self.bulkhead.model_ref(model), parsed, live,
                                      model.version, note)
        except ServiceError as error:
            abort(context, error)
        return seeding_service_pb2.GetSeedTargetsResponse.FromString(reply)

    def GetAudience(self, request, context):
        try:
            parsed = parse_audience_request(request)
        except ServiceError as error:
            abort(context, error)
        model = serving_model(self.holder, context)
        live, note = live_buyers(self.store, parsed.product_id)
        try:  # it scores every user: a heavy call, in the same bulkhead as seeding
            reply = self.bulkhead.run(context, audience_on_worker, self.bulkhead.model_ref(model), parsed, live,
                                      model.version, note)
        except ServiceError as error:
            abort(context, error)
        return seeding_service_pb2.GetAudienceResponse.FromString(reply)


# The workers answer with the serialised reply: building a few hundred messages in Python held the server's GIL
# ~2 ms per call, and unpickling the plan ~1 ms more, while parsing the bytes back is C and takes microseconds.

def plan_on_worker(model: ModelRef, parsed: SeedRequest, live: tuple[str, ...], version: str,
                   note: str | None) -> bytes:
    """Runs in the seeding bulkhead's worker process (the online store was read before, in the server)."""
    return seed_response(seed_targets(model.bundle(), parsed, live_buyers=live), version, note).SerializeToString()


def audience_on_worker(model: ModelRef, parsed: AudienceRequest, live: tuple[str, ...], version: str,
                       note: str | None) -> bytes:
    """Runs in the seeding bulkhead's worker process."""
    return audience_response(audience(model.bundle(), parsed, live_buyers=live), version, note).SerializeToString()


def live_buyers(store: OnlineStore, product_id: str | None) -> tuple[tuple[str, ...], str | None]:
    """Who bought ``product_id`` since training, from the online store; fails open with a warning."""
    if product_id is None:
        return (), None
    try:
        return tuple(store.get_buyers(product_id)), None
    except OnlineStoreError as exc:
        log.warning("store-down", "seeding without live buyers of %s: %s", quote(product_id), exc)
        return (), ("the online store did not answer: buyers of the product since the model was trained may be "
                    "among the results")


MAX_EXCLUDED_USERS = 10_000
"""Most users one request may exclude."""


def parse_seed_request(request: seeding_service_pb2.GetSeedTargetsRequest) -> SeedRequest:
    """The request in domain terms, every id checked by the one id rule (a target set but empty is an error).

    Raises:
        ServiceError: INVALID_ARGUMENT naming the bad field.
    """
    target = request.WhichOneof("target")
    product_id = category = None
    if target == "product_id":
        product_id = check_id(request.product_id, "product_id", "EMPTY_PRODUCT_ID", "INVALID_PRODUCT_ID")
    elif target == "category":
        category = check_id(request.category, "category", "EMPTY_CATEGORY", "INVALID_CATEGORY")
    excluded = check_ids(request.exclude_user_ids, "exclude_user_ids", MAX_EXCLUDED_USERS)
    max_fatigue = request.max_fatigue if request.HasField("max_fatigue") else None
    if max_fatigue is not None and not 0.0 <= max_fatigue <= 1.0:  # NaN fails both
        raise invalid_argument(f"max_fatigue must lie in [0, 1] (got {max_fatigue:.3g})", "BAD_MAX_FATIGUE")
    policy = RING_POLICIES.get(request.ring_policy)
    if policy is None:
        raise invalid_argument(f"unknown ring_policy {request.ring_policy}", "BAD_RING_POLICY")
    return SeedRequest(budget=request.budget, product_id=product_id, category=category,
                       exclude_user_ids=excluded, min_activity=request.min_activity,
                       max_seeds_per_community=request.max_seeds_per_community, epsilon=request.epsilon,
                       max_fatigue=max_fatigue, ring_policy=policy)


RING_POLICIES = {seeding_service_pb2.RING_POLICY_UNSPECIFIED: "exclude",
                 seeding_service_pb2.RING_POLICY_EXCLUDE: "exclude",
                 seeding_service_pb2.RING_POLICY_DISCOUNT: "discount",
                 seeding_service_pb2.RING_POLICY_IGNORE: "ignore"}
"""The proto's ring policies in domain terms (unset: exclude)."""


def parse_audience_request(request: seeding_service_pb2.GetAudienceRequest) -> AudienceRequest:
    """The request in domain terms, ids checked by the one id rule.

    Raises:
        ServiceError: INVALID_ARGUMENT naming the bad field.
    """
    product_id = check_id(request.product_id, "product_id", "EMPTY_PRODUCT_ID", "INVALID_PRODUCT_ID")
    excluded = check_ids(request.exclude_user_ids, "exclude_user_ids", MAX_EXCLUDED_USERS)
    return AudienceRequest(product_id=product_id, k=request.k, exclude_user_ids=excluded)


def audience_response(members: list[AudienceMember], model_version: str,
                      note: str | None = None) -> seeding_service_pb2.GetAudienceResponse:
    return seeding_service_pb2.GetAudienceResponse(
        members=[seeding_service_pb2.AudienceMember(
            user_id=m.user_id, score=m.score,
            reasons=[reason_pb2.Reason(kind=reason_pb2.ReasonKind.Value(f"REASON_KIND_{r.kind}"), text=r.text)
                     for r in m.reasons]) for m in members],
        model_version=model_version, warnings=[note] if note else [])


def seed_response(plan: SeedPlan, model_version: str,
                  note: str | None = None) -> seeding_service_pb2.GetSeedTargetsResponse:
    return seeding_service_pb2.GetSeedTargetsResponse(
        seeds=[seeding_service_pb2.SeedTarget(
            user_id=s.user_id, marginal_reach=s.marginal_reach, cumulative_reach=s.cumulative_reach,
            cumulative_reach_ci_low=s.ci_low, cumulative_reach_ci_high=s.ci_high, community=str(s.community),
            reasons=[reason_pb2.Reason(kind=reason_pb2.ReasonKind.Value(f"REASON_KIND_{r.kind}"), text=r.text)
                     for r in s.reasons], **_trust_fields(s.trust))
            for s in plan.seeds],
        expected_reach=plan.expected_reach, expected_reach_ci_low=plan.ci_low, expected_reach_ci_high=plan.ci_high,
        warnings=[*plan.warnings, *([note] if note else [])],
        influence_regime=str(plan.selection.get("influence", {}).get("regime", "")), model_version=model_version)


def _trust_fields(trust: SeedTrust | None) -> dict:
    if trust is None:
        return {}
    return {"spammer_score": trust.spammer_score, "spammer_score_ci_low": trust.spammer_ci_low,
            "spammer_score_ci_high": trust.spammer_ci_high, "shares_sent": trust.shares_sent,
            "conversions": trust.conversions, "audience_fatigue": trust.audience_fatigue,
            "ring_score": trust.ring_score}


SERVICE = ServiceSpec(name=service_name(seeding_service_pb2, "SeedingService"), roles=frozenset({"growth"}),
                      build=lambda ctx: SeedingService(ctx.holder, ctx.store, ctx.seeding),
                      register=seeding_service_pb2_grpc.add_SeedingServiceServicer_to_server)
