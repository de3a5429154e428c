"""`sharerank seed`: seed targets for a launch straight from a dataset folder (no trained model needed).

The same :func:`~sharerank.models.seeding.plan.plan_seeds` that GetSeedTargets serves, on an influence model
learned from the folder's shares (or its ``influence.csv``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from sharerank import progress
from sharerank.dataset.reader import Dataset, load_dataset
from sharerank.models.seeding.plan import DEFAULT_EPSILON, DEFAULT_MC_RUNS, SeedingContext, plan_seeds

log = logging.getLogger(__name__)


def has_influence_data(dataset: Dataset) -> bool:
    """Whether influence can be learned (shares) or is given (influence.csv)."""
    return dataset.influence is not None or (dataset.shares is not None and len(dataset.shares.id) > 0)


def load_for_seeding(data_dir: str | Path) -> Dataset:
    """The folder with self-loops in ``social`` / ``influence`` dropped (they never change a cascade, and
    published graphs such as NetHEPT hold some), with a warning that counts them."""
    dataset = load_dataset(data_dir, drop_self_loops=True)
    for what, count in dataset.dropped.items():
        file, _, _ = what.partition("_")
        log.warning("%s.csv: dropped %d self-loop%s (src_id equals dst_id; an arc to oneself never changes a "
                    "cascade)", file, count, "" if count == 1 else "s")
    return dataset


def run_seed(data_dir: str | Path, k: int, *, product: str | None = None, category: str | None = None,
             exclude: tuple[str, ...] = (), min_activity: int = 0, max_per_community: int = 0,
             max_fatigue: float | None = None, ring_policy: str = "exclude", epsilon: float = DEFAULT_EPSILON,
             mc_runs: int = DEFAULT_MC_RUNS, seed: int = 0) -> dict[str, Any]:
    """Seeds for launching ``product`` (its category's influence; its buyers excluded) or ``category``, or,
    with neither, for influence pooled over all shares (or the given ``influence.csv``). ``max_fatigue`` and
    ``ring_policy`` as in :func:`~sharerank.models.seeding.plan.plan_seeds`.

    Raises:
        ValueError: both or an unknown product/category, no influence data, or an unsatisfiable budget.
    """
    if product is not None and category is not None:
        raise ValueError("give --product or --category, not both")
    started = time.perf_counter()
    with progress.stage("read the dataset"):
        dataset = load_for_seeding(data_dir)
    if not has_influence_data(dataset):
        raise ValueError(f"{data_dir}: no shares.csv or influence.csv to learn influence from")
    rows = {u: i for i, u in enumerate(dataset.users.tolist())}
    excluded = [rows[u] for u in exclude if u in rows]
    if product is not None:
        matches = np.flatnonzero(dataset.products == product)
        if matches.size == 0:
            raise LookupError(f"unknown product {product!r} in {data_dir}")
        category = str(dataset.category[matches[0]]) or None
        excluded.extend(dataset.purchases.user[dataset.purchases.product == matches[0]].tolist())
    with progress.stage("learn influence"):
        context = SeedingContext.from_dataset(dataset, seed=seed)
    learned = time.perf_counter()
    plan = plan_seeds(context, k, category=category, exclude=np.asarray(excluded, dtype=np.int64),
                      min_activity=min_activity, max_per_community=max_per_community, max_fatigue=max_fatigue,
                      ring_policy=ring_policy, epsilon=epsilon, mc_runs=mc_runs, seed=seed)
    return {"data": str(data_dir), "product": product, "k": k, **plan.to_json(),
            "dropped": {f"{what}_dropped": count for what, count in dataset.dropped.items()},
            "seconds": {"influence_model": round(learned - started, 3),
                        "total": round(time.perf_counter() - started, 3)}}
