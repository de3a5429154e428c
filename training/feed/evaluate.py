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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from sharerank.dataset.reader import Dataset, Interactions
from sharerank.models.recommenders.graph import interaction_matrix
from sharerank.models.recommenders.registry import spec
from sharerank.training.feed.metrics import evaluate_ranking
from sharerank.training.feed.split import Split
from sharerank.training.feed.train import TrainConfig, default_config, train_model

log = logging.getLogger(__name__)

CUTOFFS = (1, 5, 10, 20, 50)  # metric cut-offs always reported, for Recall@k curves


class Scorer(Protocol):
    """Scores of every product for a batch of users, shape ``(len(users), num_products)``, higher is better."""

    def score(self, users: np.ndarray) -> torch.Tensor: ...


@dataclass(frozen=True)
class EmbeddingScorer:
    """Inner products of user and product embeddings (what FAISS serves)."""

    user_embedding: torch.Tensor
    product_embedding: torch.Tensor

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.user_embedding[torch.from_numpy(users)] @ self.product_embedding.T


@dataclass
class Fitted:
    """A fitted model ready to rank, with what fitting it cost and revealed."""

    name: str
    scorer: Scorer
    fit_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # the TrainResult of graph models


class SkippedModel(Exception):
    """The model cannot run on this dataset here (e.g. EASE's dense matrix does not fit in memory)."""


def known_interactions(split: Split) -> Interactions:
    """What every model may learn from: the training and validation purchases."""
    return Interactions(*(np.concatenate([getattr(split.train, f), getattr(split.valid, f)])
                          for f in ("user", "product", "ts", "share")))


def fit_model(name: str, dataset: Dataset, split: Split, config: TrainConfig | None = None, refit: bool = True,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> Fitted:
    """Fits one model by name on ``split`` (see the module docstring for what each model sees).

    Raises:
        SkippedModel: the model cannot run on this dataset here.
        ValueError: unknown model name.
    """
    started = time.perf_counter()
    known = known_interactions(split)
    entry = spec(name)
    if not entry.trainable:
        matrix = interaction_matrix(known, dataset.num_users, dataset.num_products)
        try:
            model = entry.load()().fit(matrix)
        except MemoryError as exc:
            raise SkippedModel(str(exc)) from exc
        return Fitted(name, model, time.perf_counter() - started)
    config = config or default_config(name)
    result = train_model(dataset, split, config, on_epoch=on_epoch)
    info = {"best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
            "epochs_run": len(result.history)}
    if refit and len(split.valid):
        everything = Split(train=known, valid=known.take(np.zeros(len(known), dtype=bool)), test=split.test)
        refit_epoch = None if on_epoch is None else (
            lambda epoch, figures: on_epoch(epoch, {f"refit_{key}": v for key, v in figures.items()}))
        result = train_model(dataset, everything, replace(config, epochs=max(result.best_epoch, 1)),
                             on_epoch=refit_epoch)
        info["refit_epochs"] = len(result.history)
    scorer = EmbeddingScorer(torch.from_numpy(result.user_embedding), torch.from_numpy(result.product_embedding))
    return Fitted(name, scorer, time.perf_counter() - started, info, result)


def rank(scorer: Scorer, users: np.ndarray, seen: sp.csr_matrix, k: int,
         batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` products and scores per user over the whole catalogue, ``seen`` products excluded."""
    tops, scores = [], []
    for batch in _batches(users, batch_size):
        s = scorer.score(batch).float()
        rows = seen[batch]
        s[torch.from_numpy(np.repeat(np.arange(len(batch)), np.diff(rows.indptr))),
          torch.from_numpy(rows.indices.astype(np.int64))] = -torch.inf
        value, index = torch.topk(s, k, dim=1)
        tops.append(index.numpy())
        scores.append(value.numpy())
    if not tops:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    return np.concatenate(tops), np.concatenate(scores)


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
             configs: dict[str, TrainConfig] | None = None, refit: bool = True,
             on_epoch: Callable[[str, int, dict[str, float]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Fits and scores each named model; returns ``{name: {"metrics": ..., "fit_seconds": ..., ...}}``.

    Metrics at every cut-off in :data:`CUTOFFS` and at ``k``: Recall, NDCG, hit rate,
    catalogue coverage and long-tail share (recommended slots outside the 20% most bought products).
    """
    users, seen, test = held_out_users(dataset, split)
    popularity = np.asarray(seen.sum(axis=0)).ravel()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            fitted = fit_model(name, dataset, split, (configs or {}).get(name), refit=refit,
                               on_epoch=None if on_epoch is None else (lambda e, f, n=name: on_epoch(n, e, f)))
        except SkippedModel as exc:
            results[name] = {"skipped": str(exc)}
            log.warning("%s skipped: %s", name, exc)
            continue
        t0 = time.perf_counter()
        top, _ = rank(fitted.scorer, users, seen, ranked_depth(k))
        cutoffs = tuple(sorted({*CUTOFFS, k}))
        metrics = evaluate_ranking(top, test, users, dataset.num_products, popularity, ks=cutoffs)
        results[name] = {"metrics": {m: float(v) for m, v in metrics.items()},
                         "fit_seconds": round(fitted.fit_seconds, 2),
                         "rank_seconds": round(time.perf_counter() - t0, 2), **fitted.info}
    return results
