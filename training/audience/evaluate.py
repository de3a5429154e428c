"""``sharerank eval-audience``: GetAudience's scorer from the product side, against two baselines.

For every product with held-out buyers (who had not bought it before), all other users are ranked and
Recall@k is the share of those buyers in the top k. The scorer is the one serving uses
(:mod:`~sharerank.models.audience.scorer`) over a recommender fitted like ``sharerank eval`` fits it; the
baselines are the most active buyers (the same list for every product) and co-purchase (users who bought what
the product's buyers bought, ties by activity). Everything a ranking reads is what was known before the
held-out purchases: purchases of the known part, shares a user received up to their last known purchase, and
social links plus those shares. The blend's weights are chosen on the validation split (recommender fitted on
train), then the recommender is refit on train + validation and scored once on test.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sharerank.dataset.reader import Dataset, Interactions, load_dataset
from sharerank.models.audience.scorer import AudienceWeights, category_counts, evidence, latest_sharers
from sharerank.models.recommenders.factors import Factors
from sharerank.models.recommenders.graph import interaction_matrix
from sharerank.training.feed.fit import fit_model, known_interactions
from sharerank.training.feed.split import split_dataset

DEFAULT_KS = (10, 50, 100)
WEIGHT_GRID = tuple(AudienceWeights(f, c, s) for f, c, s in itertools.product((0.0, 0.5, 1.0, 2.0, 4.0),
                                                                               (0.0, 0.5, 1.0, 2.0), (0.0, 1.0, 2.0)))
"""Blends tried on validation; (0, 0, 0) is the recommender's affinity alone."""
BATCH = 128
"""Products scored together (users × BATCH dense matrices)."""


class KnownWorld:
    """What a ranking may read when the held-out purchases have not happened yet: ``known`` purchases, and
    shares received up to each recipient's last known purchase."""

    def __init__(self, dataset: Dataset, known: Interactions):
        self.dataset = dataset
        users, products = dataset.num_users, dataset.num_products
        self.history = interaction_matrix(known, users, products)
        self.activity = np.asarray(self.history.sum(axis=1)).ravel()
        self.buyers = self.history.T.tocsr()
        self.codes = _codes(dataset.category)
        cutoff = np.full(users, -np.inf)
        np.maximum.at(cutoff, known.user, np.nan_to_num(known.ts, nan=0.0))
        src, dst = ([dataset.social.src], [dataset.social.dst]) if dataset.social is not None else ([], [])
        self.shared_to = sp.csr_matrix((users, products), dtype=np.int64)
        if dataset.shares is not None:
            s = dataset.shares
            seen = np.nan_to_num(s.ts, nan=0.0) <= cutoff[s.recipient]
            self.shared_to = latest_sharers(s.recipient[seen], s.product[seen], s.sharer[seen], s.ts[seen],
                                            users, products)
            src.append(s.sharer[seen])
            dst.append(s.recipient[seen])
        a, b = (np.concatenate(src), np.concatenate(dst)) if src else (np.empty(0, int), np.empty(0, int))
        self.friends = sp.csr_matrix((np.ones(2 * len(a), dtype=np.float32), (np.r_[a, b], np.r_[b, a])),
                                     shape=(users, users))
        self.friends.data[:] = 1.0


def _codes(category: np.ndarray) -> np.ndarray:
    names, codes = np.unique(np.asarray(category).astype(str), return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    return codes - 1 if len(names) and names[0] == "" else codes


def blend_scores(world: KnownWorld, factors: Factors, item_item: sp.csc_matrix | None, batch: np.ndarray,
                 weights: tuple[AudienceWeights, ...]) -> list[np.ndarray]:
    """Users × batch scores of GetAudience's scorer for each of ``weights`` (``item_item``: the factors' part
    as CSC)."""
    found = evidence(factors.user, factors.product[batch], world.history,
                     None if item_item is None else item_item[:, batch], world.friends,
                     world.history[:, batch], category_counts(world.history, world.codes, world.codes[batch]),
                     np.asarray(world.shared_to[:, batch].todense()) - 1)
    return [found.scores(w) for w in weights]


def most_active(world: KnownWorld, batch: np.ndarray) -> np.ndarray:
    return np.repeat(world.activity[:, None].astype(np.float64), len(batch), axis=1)


def co_purchase(world: KnownWorld, batch: np.ndarray) -> np.ndarray:
    """Σ over what each user bought of how many buyers it shares with the product; ties by activity."""
    together = world.buyers @ world.history[:, batch]  # products × batch: common buyers
    scores = np.asarray((world.history @ together).todense(), dtype=np.float64)
    return scores + world.activity[:, None] / (world.activity.max(initial=0) + 1.0)


def recall_at(scores: np.ndarray, world: KnownWorld, batch: np.ndarray, held: sp.csr_matrix,
              ks: tuple[int, ...]) -> np.ndarray:
    """``(len(batch), len(ks))`` Recall@k of each product's held-out buyers; its known buyers are not ranked."""
    scores = np.array(scores, dtype=np.float64)
    known = world.history[:, batch].tocoo()
    scores[known.row, known.col] = -np.inf
    top = min(max(ks), len(scores))
    best = np.argpartition(-scores, top - 1, axis=0)[:top]  # the top, unordered: cheaper than a full sort
    order = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=0), axis=0,
                                                kind="stable"), axis=0).T  # batch × top, best first
    out = np.zeros((len(batch), len(ks)))
    for j, p in enumerate(batch):
        buyers = held.indices[held.indptr[p]:held.indptr[p + 1]]
        hit = np.isin(order[j], buyers)
        out[j] = [hit[:k].sum() / len(buyers) for k in ks]
    return out


def held_out(part: Interactions, world: KnownWorld) -> sp.csr_matrix:
    """products × users: who bought each product in ``part`` without having bought it before."""
    d = world.dataset
    matrix = interaction_matrix(part, d.num_users, d.num_products).T.tocsr()
    matrix = matrix - matrix.multiply(world.buyers)
    matrix.eliminate_zeros()
    return matrix.tocsr()


def score_methods(world: KnownWorld, factors: Factors, part: Interactions, weights: tuple[AudienceWeights, ...],
                  ks: tuple[int, ...], max_products: int, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Mean Recall@ks over (a sample of at most ``max_products``) products with held-out buyers: one row per
    blend (``blend_i``) and per baseline."""
    held = held_out(part, world)
    # Columns are sliced per batch: CSC makes that O(batch), where CSR reads every entry.
    item_item = None if factors.item_item is None else sp.csc_matrix(factors.item_item)
    products = np.flatnonzero(np.diff(held.indptr) > 0)
    if len(products) > max_products:
        products = np.sort(np.random.default_rng(seed).choice(products, max_products, replace=False))
    totals: dict[str, np.ndarray] = {}
    for start in range(0, len(products), BATCH):
        batch = products[start:start + BATCH]
        methods = {f"blend_{i}": s for i, s in enumerate(blend_scores(world, factors, item_item, batch, weights))}
        methods.update(most_active_buyers=most_active(world, batch), co_purchase=co_purchase(world, batch))
        for name, scores in methods.items():
            totals[name] = totals.get(name, 0) + recall_at(scores, world, batch, held, ks).sum(axis=0)
    return {name: total / max(len(products), 1) for name, total in totals.items()}, len(products)


def run_eval_audience(data: Path, *, model: str = "itemknn", ks: tuple[int, ...] = DEFAULT_KS,
                      max_products: int = 3000, seed: int = 0,
                      progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """The report ``sharerank eval-audience`` prints (see the module docstring)."""
    if not ks or min(ks) < 1:
        raise ValueError("--ks needs at least one cut-off, each at least 1")
    dataset = load_dataset(data)
    split = split_dataset(dataset, seed=seed)
    if not len(split.valid) or not len(split.test):
        raise ValueError(f"{data}: too few purchases per user for a validation and a test split")
    choose_at = max(k for k in ks if k <= 50) if min(ks) <= 50 else min(ks)
    started = time.perf_counter()
    progress(f"eval-audience: fitting {model} on train")
    fitted = fit_model(model, dataset, split, refit=False)
    valid, _ = score_methods(KnownWorld(dataset, split.train), fitted.factors, split.valid, WEIGHT_GRID, ks,
                             max_products, seed)
    at = ks.index(choose_at)
    best = max(range(len(WEIGHT_GRID)), key=lambda i: (valid[f"blend_{i}"][at], -i))
    chosen = WEIGHT_GRID[best]
    progress(f"eval-audience: validation chose {chosen} (Recall@{choose_at} {valid[f'blend_{best}'][at]:.4f}); "
             f"refitting {model} on train + validation")
    fitted = fit_model(model, dataset, split, refit=True)
    affinity_only = AudienceWeights(0.0, 0.0, 0.0)
    test, count = score_methods(KnownWorld(dataset, known_interactions(split)), fitted.factors, split.test,
                                (chosen, affinity_only), ks, max_products, seed)
    names = {"blend_0": "audience", "blend_1": "affinity_only", "most_active_buyers": "most_active_buyers",
             "co_purchase": "co_purchase"}
    figures = {names[n]: {f"recall@{k}": round(float(v), 4) for k, v in zip(ks, row, strict=True)}
               for n, row in test.items()}
    best_baseline = {k: max(figures["most_active_buyers"][f"recall@{k}"], figures["co_purchase"][f"recall@{k}"])
                     for k in ks}
    return {
        "data": str(data), "model": model, "products": count, "users": dataset.num_users,
        "weights": asdict(chosen), "chosen_on": f"validation Recall@{choose_at}",
        "validation": {"audience": {f"recall@{k}": round(float(v), 4)
                                    for k, v in zip(ks, valid[f"blend_{best}"], strict=True)},
                       "most_active_buyers": {f"recall@{k}": round(float(v), 4)
                                              for k, v in zip(ks, valid["most_active_buyers"], strict=True)},
                       "co_purchase": {f"recall@{k}": round(float(v), 4)
                                       for k, v in zip(ks, valid["co_purchase"], strict=True)}},
        "test": figures,
        "beats_both_baselines": {f"recall@{k}": figures["audience"][f"recall@{k}"] > best_baseline[k] for k in ks},
        "seconds": round(time.perf_counter() - started, 1),
    }
