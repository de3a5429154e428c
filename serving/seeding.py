"""GetSeedTargets: request validation, the call into :func:`~sharerank.models.seeding.plan_seeds`, the reply.

Buyers of the launched product are excluded automatically (they already own it); unknown excluded ids are
ignored (they cannot be picked anyway), an unknown product or category is NOT_FOUND, and a budget the
constraints cannot fill is INVALID_ARGUMENT naming the eligible count.
"""

from __future__ import annotations

import numpy as np

from sharerank.models.bundle import ModelBundle
from sharerank.models.seeding import MAX_BUDGET, SeedingError, SeedPlan, plan_seeds
from sharerank.serving.errors import failed_precondition, invalid_argument, not_found
from sharerank.v1 import reason_pb2, seeding_service_pb2


def seed_targets(bundle: ModelBundle, request: seeding_service_pb2.GetSeedTargetsRequest) -> SeedPlan:
    """Validates the request against the serving model and plans the seeds.

    Raises:
        ServiceError: INVALID_ARGUMENT, NOT_FOUND or FAILED_PRECONDITION (a model without influence).
    """
    context = bundle.seeding
    if context is None:
        raise failed_precondition("the serving model has no influence model (trained without shares or "
                                  "influence.csv); seeding is unavailable", "NO_INFLUENCE_MODEL")
    if not 1 <= request.budget <= MAX_BUDGET:
        raise invalid_argument(f"budget must be between 1 and {MAX_BUDGET} (got {request.budget})", "BAD_BUDGET")
    if request.min_activity < 0 or request.max_seeds_per_community < 0:
        raise invalid_argument("min_activity and max_seeds_per_community must be non-negative",
                               "NEGATIVE_CONSTRAINT")
    if request.epsilon and not 0.0 < request.epsilon < 1.0:
        raise invalid_argument(f"epsilon must lie in (0, 1) (got {request.epsilon})", "BAD_EPSILON")
    rows = bundle.user_rows  # the influence model covers the bundle's users, row for row
    exclude = [rows[u] for u in request.exclude_user_ids if u in rows]
    category = None
    target = request.WhichOneof("target")
    if target == "product_id":
        product = bundle.product_rows.get(request.product_id)
        if product is None:
            raise not_found(f"product {request.product_id!r} is not in the serving model", "UNKNOWN_PRODUCT",
                            product_id=request.product_id)
        category = str(bundle.category[product]) or None
        exclude.extend(bundle.buyers(product).tolist())
    elif target == "category":
        category = request.category
    if category is not None and category not in context.categories:
        raise not_found(f"no influence learned for category {category!r}", "UNKNOWN_CATEGORY", category=category)
    try:
        return plan_seeds(context, request.budget, category=category, exclude=np.asarray(exclude, dtype=np.int64),
                          min_activity=request.min_activity, max_per_community=request.max_seeds_per_community,
                          epsilon=request.epsilon or 0.1)
    except SeedingError as error:
        raise invalid_argument(str(error), "UNSATISFIABLE_REQUEST") from error


def seed_response(plan: SeedPlan, model_version: str) -> seeding_service_pb2.GetSeedTargetsResponse:
    return seeding_service_pb2.GetSeedTargetsResponse(
        seeds=[seeding_service_pb2.SeedTarget(
            user_id=s.user_id, marginal_reach=s.marginal_reach, cumulative_reach=s.cumulative_reach,
            cumulative_reach_ci_low=s.ci_low, cumulative_reach_ci_high=s.ci_high, community=str(s.community),
            reasons=[reason_pb2.Reason(kind=reason_pb2.ReasonKind.Value(f"REASON_KIND_{r.kind}"), text=r.text)
                     for r in s.reasons])
            for s in plan.seeds],
        expected_reach=plan.expected_reach, model_version=model_version)

