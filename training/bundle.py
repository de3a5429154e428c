"""The served bundle from a fitted model: its served form, the catalogue, histories, friends and influence.

An IVF index (large catalogues) gets the smallest nprobe that reaches :data:`TUNING_RECALL` on the model's own
user vectors; ``info["index"]`` records the index kind and that tuning.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sharerank.dataset.reader import Dataset
from sharerank.models.artifact.bundle import ModelBundle
from sharerank.models.artifact.index import ProductIndex
from sharerank.models.audience.scorer import latest_sharers
from sharerank.models.recommenders.factors import Factors
from sharerank.models.recommenders.graph import friends_matrix, interaction_matrix
from sharerank.models.seeding.plan import SeedingContext
from sharerank.training.seeding.seed import has_influence_data

log = logging.getLogger(__name__)

TUNING_USERS = 2000
"""Users (with purchases) whose vectors tune an IVF index's nprobe: the queries the feed will send."""
TUNING_RECALL = 0.95
"""Recall@100 against exact search that the tuned nprobe must reach (nprobe 4–8 gives 0.95–0.99 on 1M
clustered vectors)."""


def tune_index(index: ProductIndex, user_embedding: np.ndarray, history, *, users: int = TUNING_USERS,
               target: float = TUNING_RECALL, seed: int = 0) -> dict[str, Any]:
    """Tunes an IVF index's nprobe on a sample of users with purchases; returns what goes in ``info["index"]``."""
    report: dict[str, Any] = {"kind": index.kind}
    if index.is_exact:
        return report
    active = np.flatnonzero(np.diff(history.indptr) > 0)
    if len(active) == 0:
        active = np.arange(len(user_embedding))
    sample = np.random.default_rng(seed).permutation(active)[:users]
    tuned = index.tune_nprobe(user_embedding[np.sort(sample)], k=100, target=target)
    report.update(tuned.to_dict())
    log.info("index %s: nprobe %d gives recall@%d %.3f (target %.2f) on %d users", index.kind, tuned.nprobe,
             tuned.k, tuned.recall, target, tuned.queries)
    return report


def build_bundle(dataset: Dataset, factors: Factors, info: dict[str, Any]) -> ModelBundle:
    """The served model. Its history is every purchase in the folder, so the feed never offers those."""
    history = interaction_matrix(dataset.purchases, dataset.num_users, dataset.num_products)
    index = ProductIndex.build(factors.product)
    info = {**info, "index": tune_index(index, factors.user, history)}
    return ModelBundle(
        users=dataset.users,
        products=dataset.products,
        category=dataset.category,
        in_stock=dataset.in_stock,
        user_embedding=factors.user,
        product_embedding=factors.product,
        history=history,
        friends=friends_matrix(dataset),
        popularity=np.bincount(dataset.purchases.product, minlength=dataset.num_products),
        index=index,
        info=info,
        seller=None if dataset.seller is None else np.asarray(dataset.seller, dtype=object),  # None: all ""
        # Influence for GetSeedTargets, learned with the user vectors for pairs without history.
        seeding=SeedingContext.from_dataset(dataset, user_embedding=factors.user if factors.user.any() else None)
        if has_influence_data(dataset) else None,
        item_item=factors.item_item,
        shared_to=None if dataset.shares is None else latest_sharers(
            dataset.shares.recipient, dataset.shares.product, dataset.shares.sharer, dataset.shares.ts,
            dataset.num_users, dataset.num_products),
    )
