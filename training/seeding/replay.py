"""Seeding against what really happened: held-out cascades of a real log replayed.

The log is split in time; influence is learned from the earlier part only, and every method picks seeds
from what it could see then. A held-out cascade counts for a method when its first adopter is one of the
method's seeds, with all its adopters (IMINFECTOR-style replay: nobody can run the launch again, but the
people who started the cascades that happened are known). Three reports:

- **replay**: cascades started and adopters, at each budget, for the learned seeds against top degree,
  PageRank, most shares sent and most active adopters;
- **calibration**: for held-out cascades started by users active in training, the reach the learned model
  predicts for that first adopter (Monte Carlo, given that they shared) against the cascade's real size;
- **next adopter** (cascade logs): Hits@k and MAP@k of ranking who adopts next from who adopted so far, the
  metrics of the diffusion-prediction papers that use these logs.

Splits: a cascade log's own (``cascades.csv``: learn on ``train``, report ``valid`` and ``test``), BeiBei's
(``test-`` share ids held out), else the last :data:`REPLAY_FRACTION` of shares by time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharerank.dataset.reader import Dataset
from sharerank.models.seeding.baselines import out_degree_scores, pagerank_scores, top_k
from sharerank.models.seeding.cascades import cascade_sizes, first_adopters, share_roots
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.influence import InfluenceModel
from sharerank.models.seeding.plan import pick_asked
from sharerank.models.seeding.spread import monte_carlo_spread

REPLAY_FRACTION = 0.2
CALIBRATION_CASCADES = 300
"""Held-out cascades (a seeded sample when there are more) whose predicted reach is checked."""
CALIBRATION_RUNS = 1000
NEXT_ADOPTER_KS = (10, 50, 100)
BASELINES = ("degree", "pagerank", "most_shares_sent", "most_active_adopters")


@dataclass(frozen=True)
class HeldOut:
    """What the model may learn from, and the held-out cascades: each one's first adopter and its adopters.
    ``sequences`` (cascade logs only): each held-out cascade's adopters in order."""

    name: str
    train_shares: np.ndarray
    train_products: np.ndarray
    train_purchases: np.ndarray
    root: np.ndarray
    adopters: np.ndarray
    sequences: list[np.ndarray] | None = None


def held_out_parts(dataset: Dataset) -> list[HeldOut]:
    """The held-out parts of the folder: a cascade log's valid and test cascades, else one later part."""
    shares, purchases = dataset.shares, dataset.purchases
    if dataset.cascade_split is not None:
        train = dataset.cascade_split == "train"
        root, size = first_adopters(dataset), cascade_sizes(dataset)
        parts = []
        for split in ("valid", "test"):
            products = np.flatnonzero((dataset.cascade_split == split) & (root >= 0))
            parts.append(HeldOut(split, train[shares.product], train, train[purchases.product], root[products],
                                 size[products], _sequences(dataset, products)))
        return parts
    later = _later_shares(dataset)
    if not (~later).any() or not later.any():
        raise ValueError("cascade replay needs shares both before and after the split")
    cutoff = dataset.shares.ts[~later].max()
    root = share_roots(dataset)[later]
    product = shares.product[later]
    cascade, inverse = np.unique(root * dataset.num_products + product, return_inverse=True)
    # Adopters of a cascade: its root when the root bought the product (a spammer's push has no adopter at
    # its root) and every distinct buyer through its held-out shares.
    later_ids = np.flatnonzero(later)
    buys = np.isin(purchases.share, later_ids)
    position = np.searchsorted(later_ids, purchases.share[buys])
    bought = np.unique(inverse[position] * dataset.num_users + purchases.user[buys])
    owners = np.unique(purchases.user * dataset.num_products + purchases.product)
    root_bought = np.isin(cascade, owners)
    adopters = root_bought + np.bincount(bought // dataset.num_users, minlength=len(cascade))
    name = "beibei test" if _beibei(shares) else f"last {REPLAY_FRACTION:.0%} of shares by time"
    return [HeldOut(name, ~later, np.ones(dataset.num_products, dtype=bool), ~(purchases.ts > cutoff),
                    cascade // dataset.num_products, adopters)]


def replay_report(dataset: Dataset, *, ks: tuple[int, ...], epsilon: float, seed: int,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Replay, calibration and (cascade logs) next-adopter figures for each held-out part."""
    parts = held_out_parts(dataset)
    first = parts[0]
    say(f"replay: learning influence from the training part ({int(first.train_shares.sum()):,} shares)")
    influence = InfluenceModel.fit(dataset, train_mask=first.train_shares, train_products=first.train_products,
                                   seed=seed)
    graph = influence.ic_graph(None)
    asked = graph.with_seed_handles(influence.compliance())
    picks = {name: [] for name in ("learned", *BASELINES)}
    scores = _baseline_scores(dataset, first)
    for k in ks:
        picks["learned"].append(pick_asked(asked, k, epsilon=epsilon, seed=seed)[0])
        for name in BASELINES:
            picks[name].append(top_k(scores[name], k))
    report: dict[str, Any] = {"influence": dict(influence.info), "mean_arc_probability":
                              round(float(graph.out_prob.mean()), 5) if graph.num_arcs else 0.0}
    active = np.zeros(dataset.num_users, dtype=bool)
    active[dataset.purchases.user[first.train_purchases]] = True
    for part in parts:
        say(f"replay: {part.name} ({len(part.root):,} held-out cascades)")
        rows = []
        for i, k in enumerate(ks):
            row = {"k": k, **{name: _started(part, picks[name][i]) for name in picks}}
            best = max(BASELINES, key=lambda b: row[b]["adopters"])
            row["best_baseline"] = best
            row["learned_over_best_baseline"] = (round(row["learned"]["adopters"] / row[best]["adopters"], 4)
                                                 if row[best]["adopters"] else None)
            rows.append(row)
        section = {"cascades": int(len(part.root)), "adopters": int(part.adopters.sum()), "replay": rows,
                   "calibration": calibration(graph, part, active, seed=seed)}
        if part.sequences is not None:
            section["next_adopter"] = next_adopter(graph, part, scores["most_active_adopters"])
        report[part.name] = section
    return report


def calibration(graph: ICGraph, part: HeldOut, active: np.ndarray, *, seed: int) -> dict[str, Any]:
    """Predicted reach of each sampled held-out cascade's first adopter (given they shared) against its size.

    ``slope``: of the least-squares line of real on predicted size (1 is calibrated); ``within_20pct``: the
    share of cascades predicted within ±20% of their size; ``total_ratio``: predicted over real, summed."""
    known = np.flatnonzero(active[part.root])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(known)[:CALIBRATION_CASCADES])
    if len(sample) < 2:
        return {"cascades": int(len(sample))}
    predicted = np.array([monte_carlo_spread(graph, part.root[[c]], runs=CALIBRATION_RUNS, seed=seed + int(c)).mean
                          for c in sample])
    real = part.adopters[sample].astype(np.float64)
    slope = float(np.polyfit(predicted, real, 1)[0]) if predicted.std() > 0 else None
    rank = np.argsort(np.argsort(predicted)), np.argsort(np.argsort(real))
    return {"cascades": int(len(sample)), "of_started_by_known_users": int(len(known)),
            "slope": None if slope is None else round(slope, 4),
            "within_20pct": round(float(np.mean(np.abs(predicted - real) <= 0.2 * real)), 4),
            "total_ratio": round(float(predicted.sum() / real.sum()), 4),
            "spearman": round(float(np.corrcoef(*rank)[0, 1]), 4),
            "mean_predicted": round(float(predicted.mean()), 3), "mean_real": round(float(real.mean()), 3),
            "pairs": [[round(float(p), 2), int(r)] for p, r in zip(predicted, real, strict=True)]}


def next_adopter(graph: ICGraph, part: HeldOut, popularity: np.ndarray) -> dict[str, float]:
    """Hits@k and MAP@k (reciprocal rank within k, one relevant user per step) of ranking every user who has
    not adopted yet by the chance that those who have adopted reach them in one step, ``1 - prod(1 - p)``,
    ties broken by training activity; one prediction per adopter after the first."""
    tie = popularity / (popularity.max() + 1.0) * 1e-9
    ranks = []
    for sequence in part.sequences:
        log_miss = np.zeros(graph.num_nodes)
        adopted = np.zeros(graph.num_nodes, dtype=bool)
        for position, user in enumerate(sequence.tolist()):
            if position:
                score = -np.expm1(log_miss) + tie
                score[adopted] = -np.inf
                ranks.append(int((score > score[user]).sum()) + 1)
            adopted[user] = True
            arcs = slice(graph.out_indptr[user], graph.out_indptr[user + 1])
            log_miss[graph.out_indices[arcs]] += np.log1p(-np.minimum(graph.out_prob[arcs], 1 - 1e-12))
    ranks = np.asarray(ranks)
    out: dict[str, float] = {"predictions": int(len(ranks))}
    for k in NEXT_ADOPTER_KS:
        out[f"hits@{k}"] = round(float(np.mean(ranks <= k)), 4) if len(ranks) else 0.0
        out[f"map@{k}"] = round(float(np.mean(np.where(ranks <= k, 1.0 / ranks, 0.0))), 4) if len(ranks) else 0.0
    return out


# ------------------------------------------------------------------------------------------------ helpers


def _baseline_scores(dataset: Dataset, part: HeldOut) -> dict[str, np.ndarray]:
    """Per-user scores of the baselines, from the training part only."""
    shares, n = dataset.shares, dataset.num_users
    sharer, recipient = shares.sharer[part.train_shares], shares.recipient[part.train_shares]
    social_src = dataset.social.src if dataset.social is not None else np.empty(0, dtype=np.int64)
    social_dst = dataset.social.dst if dataset.social is not None else np.empty(0, dtype=np.int64)
    network = ICGraph.from_arcs(np.r_[social_src, sharer], np.r_[social_dst, recipient],
                                np.full(len(social_src) + len(sharer), 0.5), n)
    return {"degree": out_degree_scores(network).astype(np.float64),
            "pagerank": pagerank_scores(network),
            "most_shares_sent": np.bincount(sharer, minlength=n).astype(np.float64),
            "most_active_adopters": np.bincount(dataset.purchases.user[part.train_purchases],
                                                minlength=n).astype(np.float64)}


def _started(part: HeldOut, seeds: np.ndarray) -> dict[str, int]:
    hit = np.isin(part.root, seeds)
    return {"cascades": int(hit.sum()), "adopters": int(part.adopters[hit].sum()),
            "seeds_that_started_one": int(np.isin(seeds, part.root[hit]).sum())}


def _sequences(dataset: Dataset, products: np.ndarray) -> list[np.ndarray]:
    """Each product's distinct adopters in order of their first purchase (organic first among ties)."""
    purchases = dataset.purchases
    ts = np.nan_to_num(purchases.ts, nan=np.inf)
    chosen = np.isin(purchases.product, products)
    order = np.flatnonzero(chosen)[np.lexsort((purchases.share[chosen] >= 0, ts[chosen], purchases.product[chosen]))]
    out = []
    product = purchases.product[order]
    bounds = np.flatnonzero(np.r_[True, product[1:] != product[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        users = purchases.user[order[start:end]]
        _, first = np.unique(users, return_index=True)
        out.append(users[np.sort(first)])
    return out


def _later_shares(dataset: Dataset) -> np.ndarray:
    shares = dataset.shares
    if _beibei(shares):
        return np.char.startswith(shares.id.astype(str), "test-")
    return shares.ts > np.quantile(shares.ts, 1.0 - REPLAY_FRACTION)


def _beibei(shares) -> bool:
    return len(shares.id) > 0 and str(shares.id[0]).split("-")[0] in ("tune", "invalid", "test")
