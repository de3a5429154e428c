"""The users most likely to buy one product soon: the recommender's affinity blended with social evidence.

The served recommender already says how much each user likes each product (``user · product`` plus the
item-item rows of what they bought, :mod:`~sharerank.models.recommenders.factors`); read from the product's
side, that column ranks users. People also buy what their friends bought, what was shared to them and more of
what they already buy, so those counts are added on a log scale:

.. math::
    s(u) = z(a_u) + w_f \\log(1 + f_u) + w_c \\log(1 + c_u) + w_s [u \\text{ received a share of it}]

with :math:`a_u` the affinity standardised over users (:math:`z`), :math:`f_u` friends who bought the product
and :math:`c_u` products of its category the user bought. Serving and ``sharerank eval-audience`` use the same
function, so the offline figures are the served scorer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class AudienceWeights:
    """Weights of the social evidence against the standardised affinity. The defaults are the validation choice
    of ``sharerank eval-audience`` on the simulated world with the graph filter; Ciao's validation (item-kNN)
    also weighs the category history 1.0 and friends 0.5 to 2.0 depending on the products sampled. A share
    received before a user's last known purchase carried no weight on either, so it is shown as a reason but not
    scored.

    Args:
        friends: Weight of ``log(1 + friends who bought it)`` (default: 2.0).
        category: Weight of ``log(1 + products of its category bought)`` (default: 1.0).
        shared: Weight of having received a share of the product (default: 0.0).
    """

    friends: float = 2.0
    category: float = 1.0
    shared: float = 0.0


@dataclass(frozen=True)
class AudienceEvidence:
    """What the score rests on: row ``u`` is a user, column ``j`` (when 2-D) one of several products scored
    together.

    Args:
        affinity: The recommender's score of the product for each user, float ``(U,)`` or ``(U, B)``.
        friends_bought: Friends of each user who bought the product, int, same shape.
        category_bought: Products of the product's category each user bought, int, same shape.
        shared_by: Row of the latest user who shared the product to each user, -1 for none, int, same shape.
    """

    affinity: np.ndarray
    friends_bought: np.ndarray
    category_bought: np.ndarray
    shared_by: np.ndarray

    def scores(self, weights: AudienceWeights = AudienceWeights()) -> np.ndarray:
        """:math:`s(u)` of the module docstring, affinity standardised over users (per product)."""
        spread = self.affinity.std(axis=0)
        z = (self.affinity - self.affinity.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
        return (z + weights.friends * np.log1p(self.friends_bought) + weights.category * np.log1p(
            self.category_bought) + weights.shared * (self.shared_by >= 0)).astype(np.float64)

    def column(self, j: int) -> AudienceEvidence:
        """The evidence of the ``j``-th product scored together, 1-D."""
        return AudienceEvidence(self.affinity[:, j], self.friends_bought[:, j], self.category_bought[:, j],
                                self.shared_by[:, j])


def evidence(user_embedding: np.ndarray, product_vectors: np.ndarray, history: sp.csr_matrix,
             item_item_columns: sp.spmatrix | None, friends: sp.csr_matrix, bought: sp.spmatrix,
             category_bought: np.ndarray, shared_by: np.ndarray) -> AudienceEvidence:
    """The evidence for ``B`` products at once from the served parts (2-D, users × products).

    Args:
        user_embedding: ``(U, d)`` user vectors; ``product_vectors``: ``(B, d)`` the products' vectors.
        history: users × catalogue CSR of purchases (what the item-item part reads).
        item_item_columns: catalogue × B, the item-item part's columns of the products (None: no such part).
        friends: users × users social neighbours.
        bought: users × B, nonzero where the user bought the product.
        category_bought: ``(U, B)`` products of each product's category each user bought
            (:func:`category_counts`).
        shared_by: ``(U, B)`` latest sharer row, -1 for none.
    """
    scores = user_embedding @ np.asarray(product_vectors, dtype=np.float32).T
    if item_item_columns is not None and item_item_columns.nnz:
        scores = scores + np.asarray((history @ item_item_columns).todense(), dtype=np.float32)
    buyers = sp.csr_matrix(bought, dtype=np.float32)
    buyers.data[:] = 1.0
    return AudienceEvidence(affinity=np.asarray(scores, dtype=np.float64),
                            friends_bought=np.rint(np.asarray((friends @ buyers).todense())).astype(np.int64),
                            category_bought=np.asarray(category_bought, dtype=np.int64),
                            shared_by=np.asarray(shared_by, dtype=np.int64))


def category_counts(history: sp.csr_matrix, category_codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``(U, len(wanted))``: how many products of category code ``wanted[j]`` each user bought (0 for -1, an
    unknown category)."""
    wanted = np.asarray(wanted, dtype=np.int64)
    names, at = np.unique(wanted, return_inverse=True)
    onehot = sp.csr_matrix((category_codes[:, None] == names[None, :]) & (names[None, :] >= 0), dtype=np.float32)
    return np.rint(np.asarray((history @ onehot).todense())).astype(np.int64)[:, at.ravel()]


def top_audience(scores: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """The ``k`` best user rows by ``scores`` (best first, ties by row), ``exclude`` left out."""
    scores = np.array(scores, dtype=np.float64)
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    eligible = int(np.isfinite(scores).sum())
    k = min(k, eligible)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))][:k]


@dataclass(frozen=True)
class AudienceReason:
    kind: str  # ReasonKind name suffix: PERSONALIZED, FRIENDS_BOUGHT, SIMILAR or SHARED_TO_YOU
    text: str


def reasons(evidence_: AudienceEvidence, row: int, category: str, user_ids: np.ndarray) -> list[AudienceReason]:
    """Why user ``row`` is in the audience, strongest social evidence first; the taste match always last."""
    out = []
    if evidence_.shared_by[row] >= 0:
        out.append(AudienceReason("SHARED_TO_YOU", f"shared to them by {user_ids[evidence_.shared_by[row]]}"))
    friends = int(evidence_.friends_bought[row])
    if friends:
        out.append(AudienceReason("FRIENDS_BOUGHT", f"{friends} friend{'s' if friends > 1 else ''} bought it"))
    bought = int(evidence_.category_bought[row])
    if bought and category:
        out.append(AudienceReason("SIMILAR", f"bought {bought} product{'s' if bought > 1 else ''} in {category}"))
    share = float((evidence_.affinity < evidence_.affinity[row]).mean())
    out.append(AudienceReason("PERSONALIZED", f"taste matches it better than {share:.0%} of users"))
    return out


def latest_sharers(recipient: np.ndarray, product: np.ndarray, sharer: np.ndarray, ts: np.ndarray,
                   num_users: int, num_products: int) -> sp.csr_matrix:
    """users × products CSR: entry ``[u, p]`` is the row + 1 of the latest user who shared ``p`` to ``u`` (+1 so
    that user row 0 is not an implicit zero); the served form of the shares for :func:`evidence`."""
    order = np.lexsort((np.nan_to_num(np.asarray(ts, dtype=np.float64), nan=0.0), product, recipient))
    r, p, s = np.asarray(recipient)[order], np.asarray(product)[order], np.asarray(sharer)[order]
    last = np.r_[(r[1:] != r[:-1]) | (p[1:] != p[:-1]), True] if len(r) else np.zeros(0, dtype=bool)
    matrix = sp.csr_matrix((s[last].astype(np.int64) + 1, (r[last], p[last])), shape=(num_users, num_products))
    matrix.sort_indices()
    return matrix
