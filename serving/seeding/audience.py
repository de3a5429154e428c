"""GetAudience in domain terms: the users most likely to buy a product soon, checked against the serving model
and scored by :mod:`~sharerank.models.audience.scorer` (the same scorer ``sharerank eval-audience`` measures)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.audience.scorer import AudienceReason, category_counts, evidence, reasons, top_audience
from sharerank.serving.errors import invalid_argument, not_found
from sharerank.serving.ids import quote

MAX_AUDIENCE = 10_000
"""Most users one request may ask for."""


@dataclass(frozen=True)
class AudienceRequest:
    product_id: str
    k: int
    exclude_user_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class AudienceMember:
    user_id: str
    score: float
    reasons: list[AudienceReason]


def audience(bundle: ModelBundle, request: AudienceRequest, live_buyers: tuple[str, ...] = ()) -> list[AudienceMember]:
    """The ``k`` users most likely to buy the product, best first; buyers in the training data and
    ``live_buyers`` (since training) are left out, and live buyers count as friends' purchases.

    Raises:
        ServiceError: INVALID_ARGUMENT (k out of range) or NOT_FOUND (a product the model does not know).
    """
    if not 1 <= request.k <= MAX_AUDIENCE:
        raise invalid_argument(f"k must be between 1 and {MAX_AUDIENCE} (got {request.k})", "BAD_K")
    product = bundle.product_rows.get(request.product_id)
    if product is None:
        raise not_found(f"product {quote(request.product_id)} is not in the serving model", "UNKNOWN_PRODUCT",
                        product_id=request.product_id)
    rows = bundle.user_rows
    live = np.array([rows[u] for u in live_buyers if u in rows], dtype=np.int64)
    buyers = np.union1d(bundle.buyers(product), live)
    users = len(bundle.users)
    found = evidence(bundle.user_embedding, bundle.product_embedding[[product]], bundle.history,
                     None if bundle.item_item is None else bundle.item_item[:, [product]], bundle.friends,
                     sp.csr_matrix((np.ones(len(buyers)), (buyers, np.zeros(len(buyers), dtype=np.int64))),
                                   shape=(users, 1)),
                     category_counts(bundle.history, bundle.category_codes, bundle.category_codes[[product]]),
                     bundle.shared_by(product)[:, None]).column(0)
    scores = found.scores()
    excluded = np.r_[buyers, np.array([rows[u] for u in request.exclude_user_ids if u in rows], dtype=np.int64)]
    category = str(bundle.category[product])
    return [AudienceMember(str(bundle.users[u]), float(scores[u]), reasons(found, int(u), category, bundle.users))
            for u in top_audience(scores, request.k, excluded)]
