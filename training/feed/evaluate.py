"""The evaluation harness: every model fitted on the same split and ranked over the whole catalogue.

Each model sees the same known purchases (train ∪ validation) and is scored on the same test users with
those purchases excluded. Baselines fit on everything known at once; graph models train on the training
part, early-stop on the validation part, then (``refit``) train again on everything known for the epoch
count that validation chose, so no model gets less data than another. The top-k lists behind the metrics
are the ones ``sharerank recommend`` writes, so anyone can recompute the figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from sharerank import progress
from sharerank.dataset.reader import Dataset
from sharerank.models.recommenders.graph import interaction_matrix
from sharerank.training.feed.fit import Fitted, SkippedModel, fit_model, known_interactions
from sharerank.training.feed.metrics import evaluate_ranking
from sharerank.training.feed.split import Split

log = logging.getLogger(__name__)

CUTOFFS = (1, 5, 10, 20, 50)  # metric cut-offs always reported, for Recall@k curves


class Scorer(Protocol):
    """Scores of every product for a batch of users, shape ``(len(users), num_products)``, higher is better."""

    def score(self, users: np.ndarray) -> torch.Tensor: ...


FIDELITY_USERS = 1000
FIDELITY_DEPTH = 100
"""A served form that approximates its model is checked on this many test users: the share of the model's own
top-``FIDELITY_DEPTH`` that the served form also ranks there."""


def rank(scorer: Scorer, users: np.ndarray, seen: sp.csr_matrix, k: int,
         batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` products and scores per user over the whole catalogue, ``seen`` products excluded."""
    tops, scores = [], []
    with progress.stage("rank users", len(users), unit="users") as shown:
        for batch in _batches(users, batch_size):
            s = scorer.score(batch).float()
            s[seen_cells(seen[batch])] = -torch.inf
            value, index = torch.topk(s, k, dim=1)
            tops.append(index.numpy())
            scores.append(value.numpy())
            shown.advance(len(batch))
    if not tops:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    return np.concatenate(tops), np.concatenate(scores)


def seen_cells(rows: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, product) index of a batch's seen products, to set their scores to -inf."""
    return (torch.from_numpy(np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))),
            torch.from_numpy(rows.indices.astype(np.int64)))


def ranked_depth(k: int) -> int:
    """How deep eval ranks: ``recommend`` ranks as deep and cuts, so ties at the cut break the same way."""
    return max(k, *CUTOFFS)


def _batches(users: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(users), size):
        yield users[start:start + size]


@dataclass(frozen=True)
class Ranking:
    """The test users, their top-k lists and the matrices the metrics need."""

    users: np.ndarray
    top: np.ndarray
    scores: np.ndarray


def held_out_users(dataset: Dataset, split: Split) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """Users with at least one test purchase, the known (excluded) matrix and the test matrix."""
    seen = interaction_matrix(known_interactions(split), dataset.num_users, dataset.num_products)
    test = interaction_matrix(split.test, dataset.num_users, dataset.num_products)
    return np.flatnonzero(np.diff(test.indptr)), seen, test


def evaluate(dataset: Dataset, split: Split, names: list[str], *, k: int = 20,
             params: dict[str, dict[str, Any]] | None = None, refit: bool = True,
             on_epoch: Callable[[str, int, dict[str, float]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Fits and scores each named model (settings from ``params[name]``, defaults otherwise) in its served
    form; returns ``{name: {"metrics": ..., "fit_seconds": ..., ...}}``.

    Metrics at every cut-off in :data:`CUTOFFS` and at ``k``: Recall, NDCG, hit rate, catalogue coverage and
    long-tail share (recommended slots outside the 20% most bought products). A served form that approximates
    its model reports ``fidelity`` (see :data:`FIDELITY_USERS`).
    """
    users, seen, test = held_out_users(dataset, split)
    popularity = np.asarray(seen.sum(axis=0)).ravel()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            fitted = fit_model(name, dataset, split, (params or {}).get(name), refit=refit,
                               on_epoch=None if on_epoch is None else (lambda e, f, n=name: on_epoch(n, e, f)))
        except SkippedModel as exc:
            results[name] = {"skipped": str(exc)}
            log.warning("%s skipped: %s", name, exc)
            continue
        results[name] = score_fitted(fitted, dataset, users, seen, test, popularity, k)
    return results


def score_fitted(fitted: Fitted, dataset: Dataset, users: np.ndarray, seen: sp.csr_matrix, test: sp.csr_matrix,
                 popularity: np.ndarray, k: int) -> dict[str, Any]:
    """Test metrics of a fitted model's served form, with what fitting cost and (approximate forms) fidelity."""
    t0 = time.perf_counter()
    top, _ = rank(fitted.scorer, users, seen, ranked_depth(k))
    cutoffs = tuple(sorted({*CUTOFFS, k}))
    metrics = evaluate_ranking(top, test, users, dataset.num_products, popularity, ks=cutoffs)
    out = {"metrics": {m: float(v) for m, v in metrics.items()}, "fit_seconds": round(fitted.fit_seconds, 2),
           "rank_seconds": round(time.perf_counter() - t0, 2), "params": fitted.params, **fitted.info}
    if fitted.exact is not None:
        sample = np.sort(np.random.default_rng(0).permutation(users)[:FIDELITY_USERS])
        served, _ = rank(fitted.scorer, sample, seen, FIDELITY_DEPTH)
        exact, _ = rank(fitted.exact, sample, seen, FIDELITY_DEPTH)
        overlap = [len(np.intersect1d(a, b)) for a, b in zip(served, exact, strict=True)]
        out["fidelity"] = {f"recall@{FIDELITY_DEPTH}_vs_exact": round(float(np.mean(overlap)) / FIDELITY_DEPTH, 4),
                           "users": int(len(sample))}
    return out
