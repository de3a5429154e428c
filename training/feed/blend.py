"""A blend of the two best families, ``w · a / σ_a + (1 − w) · b / σ_b``, its weight chosen on validation.

Two models that err differently rank better together than either: on Ciao's validation split the share-aware
GNN (Recall@20 0.0737, 2% of the catalogue in anyone's top 20) and the graph filter (0.0500, 31%) blend to
0.0772. A weighted sum of served forms is a served form (vectors side by side, item-item parts summed), so
the blend serves as one model. Each member's scores are divided by ``σ``, the mean standard deviation of its
users' score rows, so that ``w`` weighs comparable scales; ``σ`` is measured again whenever the members are
fitted, since a refit on more data moves a model's scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from sharerank.models.recommenders.factors import FactorScorer, WeightedScorer, weighted_sum
from sharerank.training.feed.evaluate import seen_cells
from sharerank.training.feed.fit import Fitted
from sharerank.training.feed.metrics import evaluate_ranking

BLEND = "blend"
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
"""Weights of the better member tried on validation (a blend is kept only where it beats both members)."""
MIN_GAIN = 0.01
"""The blend is chosen only when its validation Recall@20 is at least 1% above its better member's: below that
the difference is within the noise of a few thousand validation users, and one model is simpler to serve."""
SCALE_USERS = 1000

FitMember = Callable[[str, dict[str, Any]], Fitted]


def scale(scorer: Any, users: np.ndarray) -> float:
    """``σ``: the mean standard deviation of the score rows of up to :data:`SCALE_USERS` of ``users``."""
    sample = np.sort(np.random.default_rng(0).permutation(users)[:SCALE_USERS])
    spread = torch.cat([scorer.score(sample[i:i + 256]).float().std(dim=1) for i in range(0, len(sample), 256)])
    value = float(spread.mean())
    return value if value > 0 else 1.0


def search_seconds(users: np.ndarray, seen: sp.csr_matrix, batch_size: int = 512) -> float:
    """About how long :func:`search` spends beyond scoring ``users`` with each member: one batch's weighing,
    masking and top 20 for one weight, timed on random scores, times the weights and batches (Ciao: 13 weights
    over 105k products made the check 68 s where its members' two validation passes took 9 s)."""
    batch = users[:batch_size]
    a, b = torch.rand(len(batch), seen.shape[1]), torch.rand(len(batch), seen.shape[1])
    mask = seen_cells(seen[batch])
    timings = []
    for _ in range(2):  # the faster of two: a first top-k in a process pays for allocating its buffers
        started = time.perf_counter()
        blended = 0.5 * a + 0.5 * b
        blended[mask] = -torch.inf
        torch.topk(blended, min(20, blended.shape[1]), dim=1)
        timings.append(time.perf_counter() - started)
    return min(timings) * (len(WEIGHTS) + 2) * -(-len(users) // batch_size)


def search(scorers: list[Any], users: np.ndarray, seen: sp.csr_matrix, valid: sp.csr_matrix,
           popularity: np.ndarray, batch_size: int = 512) -> tuple[float, dict[str, float]]:
    """The weight of the first of two scorers (the better one) whose blend ranks ``valid`` best among
    :data:`WEIGHTS`, and that blend's ``val_recall_20`` / ``val_ndcg_20``, with ``members_recall_20``: the
    better member's alone on the same users. Each member scores every user once."""
    first, second = scorers
    sigma = (scale(first, users), scale(second, users))
    tops: dict[float, list[np.ndarray]] = {w: [] for w in (*WEIGHTS, 0.0, 1.0)}
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        a, b = (s.score(batch).float() / sd for s, sd in zip(scorers, sigma, strict=True))
        mask = seen_cells(seen[batch])
        for w in tops:
            blended = w * a + (1.0 - w) * b
            blended[mask] = -torch.inf
            tops[w].append(torch.topk(blended, min(20, blended.shape[1]), dim=1).indices.numpy())
    figures = {}
    for w, top in tops.items():
        scores = evaluate_ranking(np.concatenate(top), valid, users, seen.shape[1], popularity, ks=(20,))
        figures[w] = (float(scores["Recall@20"]), float(scores["NDCG@20"]))
    best = max(WEIGHTS, key=lambda w: figures[w])
    return best, {"val_recall_20": figures[best][0], "val_ndcg_20": figures[best][1],
                  "members_recall_20": max(figures[0.0][0], figures[1.0][0])}


def members(first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]], weight: float) -> dict[str, Any]:
    """A blend's settings: each member's family, settings and weight."""
    return {"members": [{"name": first[0], "params": first[1], "weight": weight},
                        {"name": second[0], "params": second[1], "weight": round(1.0 - weight, 6)}]}


def fit_blend(params: dict[str, Any], fit_member: FitMember, users: np.ndarray, *, served: bool = True) -> Fitted:
    """Fits each member with ``fit_member`` and weighs them, ``σ`` measured on ``users``: the served form (the
    members' served forms summed) and, as ``exact``, the members' own models summed."""
    fitted = [(fit_member(m["name"], dict(m["params"])), float(m["weight"])) for m in params["members"]]
    models = [f.model for f, _ in fitted]
    sigma = [scale(model, users) for model in models]
    exact = [(model, w / sd) for model, (_, w), sd in zip(models, fitted, sigma, strict=True)]
    seconds = sum(f.fit_seconds for f, _ in fitted)
    info = {"members": {f.name: {**f.info, "weight": w, "scale": sd} for (f, w), sd in zip(fitted, sigma, strict=True)}}
    if not served:
        return Fitted(BLEND, None, WeightedScorer(exact), seconds, params, info)
    factors = weighted_sum([(f.factors, c) for (f, _), (_, c) in zip(fitted, exact, strict=True)])
    history = next(f.scorer.history for f, _ in fitted if isinstance(f.scorer, FactorScorer))
    return Fitted(BLEND, factors, FactorScorer(factors, history), seconds, params, info, WeightedScorer(exact))
