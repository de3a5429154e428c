"""Seed targets for a launch, checked against the serving model, then planned by
:func:`~sharerank.models.seeding.plan.plan_seeds`.

Buyers of the launched product are excluded automatically (they already own it), those in the training data
and those the online store saw since; unknown excluded ids are
ignored (they cannot be picked anyway), an unknown product or category is NOT_FOUND, and a budget the
constraints cannot fill is INVALID_ARGUMENT naming the eligible count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.seeding.plan import DEFAULT_EPSILON, MAX_BUDGET, SeedingError, SeedPlan, plan_seeds
from sharerank.serving.errors import failed_precondition, invalid_argument, not_found
from sharerank.serving.ids import quote

MIN_EPSILON = 0.01
"""Smallest epsilon a request may ask for: the work grows as 1/epsilon² (0.01 costs 100× the default 0.1), and
a tiny one (1e-200) overflowed it into a division by zero."""


@dataclass(frozen=True)
class SeedRequest:
    """A launch to seed: a product (its category's influence, its buyers excluded), a category, or neither
    (influence pooled over all categories); ``epsilon`` 0 means the default; ``max_fatigue`` None means no
    limit; ``ring_policy`` one of :data:`~sharerank.models.seeding.plan.RING_POLICIES`."""

    budget: int
    product_id: str | None = None
    category: str | None = None
    exclude_user_ids: tuple[str, ...] = ()
    min_activity: int = 0
    max_seeds_per_community: int = 0
    epsilon: float = 0.0
    max_fatigue: float | None = None
    ring_policy: str = "exclude"


def seed_targets(bundle: ModelBundle, request: SeedRequest, live_buyers: tuple[str, ...] = ()) -> SeedPlan:
    """Checks the request against the serving model and plans the seeds; ``live_buyers`` (who bought the
    product since training) are left out like the training data's buyers.

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
    if request.max_fatigue is not None and not 0.0 <= request.max_fatigue <= 1.0:  # NaN fails both
        raise invalid_argument(f"max_fatigue must lie in [0, 1] (got {request.max_fatigue:.3g})", "BAD_MAX_FATIGUE")
    if request.epsilon and not MIN_EPSILON <= request.epsilon < 1.0:
        raise invalid_argument(f"epsilon must lie in [{MIN_EPSILON}, 1) (got {request.epsilon:.3g})", "BAD_EPSILON")
    rows = bundle.user_rows  # the influence model covers the bundle's users, row for row
    exclude = [rows[u] for u in request.exclude_user_ids if u in rows]
    category = request.category
    if request.product_id is not None:
        product = bundle.product_rows.get(request.product_id)
        if product is None:
            raise not_found(f"product {quote(request.product_id)} is not in the serving model", "UNKNOWN_PRODUCT",
                            product_id=request.product_id)
        category = str(bundle.category[product]) or None
        exclude.extend(bundle.buyers(product).tolist())
        exclude.extend(rows[u] for u in live_buyers if u in rows)
    if category is not None and category not in context.categories:
        raise not_found(f"no influence learned for category {quote(category)}", "UNKNOWN_CATEGORY", category=category)
    try:
        return plan_seeds(context, request.budget, category=category, exclude=np.asarray(exclude, dtype=np.int64),
                          min_activity=request.min_activity, max_per_community=request.max_seeds_per_community,
                          max_fatigue=request.max_fatigue, ring_policy=request.ring_policy,
                          epsilon=request.epsilon or DEFAULT_EPSILON)
    except SeedingError as error:
        raise invalid_argument(str(error), "UNSATISFIABLE_REQUEST") from error
