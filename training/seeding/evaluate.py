"""`sharerank eval-seeding`: how good and how fast seed selection is, on whatever the folder allows.

Every spread is scored by Monte Carlo runs independent of the selection (their own random stream, never the
RR sets that chose the seeds), with a 95% interval. Sections, each run when the folder has what it needs:

- ``synthetic`` (a ``sharerank simulate`` world, with ``truth/``): spread under the *true* probabilities of
  seeds picked from (a) the learned influence model, (b) the true probabilities (oracle), (c) highest
  degree, (d) PageRank, (e) most shares sent; ratios to the oracle. The truth is a share's chance to convert
  with every activated user sharing to every friend, so the learned model is used on the same footing: its
  conversion probabilities, seeds sharing for sure (no share propensity, no compliance). Either logging
  regime of the simulator (``--log``) is measured against the same truth. Its ``fatigue`` part scores
  fatigue-blind seeds (the learned model above) against fatigue-aware ones
  (:func:`~sharerank.models.seeding.fatigue.fit_fatigue`, counts taken at a launch time ``T``, the
  :data:`LAUNCH_QUANTILE` of the share times) under the world's *true* fatigue at ``T``
  (:func:`true_fatigue_graph`); without fatigue in the world, under the plain truth.
- ``given_influence`` (an ``influence.csv``, e.g. NetHEPT): spread and selection time at each k against
  top degree, and against a CELF Monte Carlo greedy on a small subgraph.
- ``replay`` (shares with times, or a cascade log): held-out cascades started by each method's seeds,
  calibration of predicted against real cascade sizes, next-adopter Hits@k / MAP@k
  (:mod:`~sharerank.training.seeding.replay`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sharerank.dataset.reader import Dataset, has_truth, read_truth
from sharerank.models.rings import DEFAULT_THRESHOLD, dataset_ring_scores
from sharerank.models.seeding.baselines import out_degree_scores, pagerank_scores, top_k
from sharerank.models.seeding.fatigue import DEFAULT_WINDOW_S, FatigueState, fit_fatigue
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.influence import InfluenceModel
from sharerank.models.seeding.opim import select_seeds
from sharerank.models.seeding.spread import SpreadEstimate, celf_greedy, induced_subgraph, monte_carlo_spread
from sharerank.training.seeding.replay import replay_report
from sharerank.training.seeding.seed import load_for_seeding

log = logging.getLogger(__name__)

SCORING_SEED = 1_000_003
"""Seed of the scoring Monte Carlo: far from the selection seeds, so the two never share a stream."""
CELF_NODES = 1000
LAUNCH_QUANTILE = 0.9
"""The fatigue comparison launches when this share of the log's shares has been sent: inside ordinary traffic
(the simulator's last days are a wind-down of late cascades, after which nobody has received anything lately)."""


def run_eval_seeding(data_dir: str | Path, *, k: int = 50, ks: tuple[int, ...] = (10, 50, 100),
                     epsilon: float = 0.1, mc_runs: int = 10_000, category: str | None = None, seed: int = 0,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs every section the folder supports; returns the report (JSON-able)."""
    data_dir = Path(data_dir)
    dataset = load_for_seeding(data_dir)
    say = progress or (lambda message: log.info(message))
    report: dict[str, Any] = {"data": str(data_dir), "k": k, "epsilon": epsilon, "mc_runs": mc_runs,
                              "users": dataset.num_users,
                              "dropped": {f"{what}_dropped": count for what, count in dataset.dropped.items()}}
    if has_truth(data_dir):
        say("synthetic world: learned vs oracle vs baselines")
        report["synthetic"] = synthetic_section(data_dir, dataset, k=k, epsilon=epsilon, mc_runs=mc_runs,
                                                category=category, seed=seed)
    if dataset.influence is not None:
        say("given influence: spread and time per k")
        report["given_influence"] = given_influence_section(dataset, ks=ks, epsilon=epsilon, mc_runs=mc_runs,
                                                            seed=seed)
    if dataset.shares is not None and len(dataset.shares.id) > 0:
        say("held-out cascade replay")
        report["replay"] = replay_report(dataset, ks=ks, epsilon=epsilon, seed=seed, say=say)
    if not {"synthetic", "given_influence", "replay"} & report.keys():
        raise ValueError(f"{data_dir}: nothing to evaluate seeding on (no truth/, influence.csv or shares.csv)")
    return report


# --------------------------------------------------------------------------------------------- synthetic


def true_graph(data_dir: Path, dataset: Dataset, category: str) -> ICGraph:
    """The world's true IC graph for a launch in ``category``: ``min(1, p_uv * weight(v, category))``."""
    arcs = read_truth(data_dir, "influence").to_pandas()
    interests = read_truth(data_dir, "interests").to_pandas()
    rows = {u: i for i, u in enumerate(dataset.users.tolist())}
    weight = np.ones(dataset.num_users)
    mine = interests[interests["category"] == category]
    row = mine["user_id"].map(rows)
    known = row.notna().to_numpy()  # users in no file of the folder are not in its vocabulary
    weight[row[known].astype(np.int64).to_numpy()] = mine["weight"].to_numpy()[known]
    src = arcs["src_id"].map(rows).astype(np.int64).to_numpy()
    dst = arcs["dst_id"].map(rows).astype(np.int64).to_numpy()
    return ICGraph.from_arcs(src, dst, np.minimum(1.0, arcs["p"].to_numpy() * weight[dst]), dataset.num_users)


def synthetic_section(data_dir: Path, dataset: Dataset, *, k: int, epsilon: float, mc_runs: int,
                      category: str | None, seed: int) -> dict[str, Any]:
    if category is None:  # the category bought most (the same whatever the log keeps of the shares)
        names, counts = np.unique(dataset.category[dataset.purchases.product], return_counts=True)
        category = str(names[np.argmax(counts)])
    truth = true_graph(data_dir, dataset, category)
    started = time.perf_counter()
    learned = InfluenceModel.fit(dataset, seed=seed)
    fit_seconds = time.perf_counter() - started
    learned_graph = learned.ic_graph(category, conversion=True)
    social = social_graph(dataset)
    sent = np.bincount(dataset.shares.sharer, minlength=dataset.num_users).astype(float)
    pickers: dict[str, Callable[[], np.ndarray]] = {
        "learned": lambda: select_seeds(learned_graph, k, epsilon=epsilon, seed=seed).seeds,
        "oracle": lambda: select_seeds(truth, k, epsilon=epsilon, seed=seed).seeds,
        "degree": lambda: top_k(out_degree_scores(social), k),
        "pagerank": lambda: top_k(pagerank_scores(social), k),
        "most_shares_sent": lambda: top_k(sent, k),
    }
    methods = {name: _scored(truth, pick, mc_runs, dataset.users) for name, pick in pickers.items()}
    oracle = methods["oracle"]["spread"]
    for row in methods.values():
        row["ratio_to_oracle"] = round(row["spread"] / oracle, 4) if oracle else None
    baselines = ("degree", "pagerank", "most_shares_sent")
    return {"category": category, "influence": dict(learned.info), "true_arcs": truth.num_arcs,
            "learned_arcs": learned_graph.num_arcs,
            "influence_fit_seconds": round(fit_seconds, 3), "methods": methods,
            "learned_over_oracle": methods["learned"]["ratio_to_oracle"],
            "learned_beats_every_baseline": all(methods["learned"]["spread"] > methods[b]["spread"]
                                                for b in baselines),
            "fatigue": fatigue_section(data_dir, dataset, learned, truth, category=category, k=k, epsilon=epsilon,
                                       mc_runs=mc_runs, seed=seed)}


def fatigue_section(data_dir: Path, dataset: Dataset, blind: InfluenceModel, truth: ICGraph, *, category: str,
                    k: int, epsilon: float, mc_runs: int, seed: int,
                    launch_quantile: float = LAUNCH_QUANTILE) -> dict[str, Any]:
    """Fatigue-blind vs fatigue-aware seeds (and the aware ones with flagged ring members left out, as
    :func:`~sharerank.models.seeding.plan.plan_seeds` does by default), scored under the true fatigue at the
    launch time, against seeds picked on that truth itself (``oracle``). Needs a log of every share (the
    true state counts the shares people saw). In a world with fatigue two more rows split the oracle's lead:
    the aware model's probabilities times the world's *true* fatigue factors (``fatigue_aware_true_factors``: the
    most a perfect fatigue estimate could give this influence model), and the true probabilities without any
    fatigue (``truth_without_fatigue``)."""
    if blind.info.get("regime") != "recorded":
        return {"skipped": "a log of successes only: the shares people received are not in the folder"}
    world_fatigue = (Path(data_dir) / "truth" / "fatigue.csv").exists()
    at_ts = float(np.quantile(dataset.shares.ts, launch_quantile))
    window_s = DEFAULT_WINDOW_S
    if world_fatigue:
        window_s = float(read_truth(data_dir, "fatigue").column("window_s").to_numpy()[0])
        true_graph_now = true_fatigue_graph(data_dir, dataset, truth, at_ts)
    else:
        true_graph_now = truth
    started = time.perf_counter()
    aware, curves = fit_fatigue(dataset, window_s=window_s, seed=seed)
    state = FatigueState.snapshot(dataset, aware, curves, window_s=window_s, at_ts=at_ts)
    fit_seconds = time.perf_counter() - started
    blind_graph = blind.ic_graph(category, conversion=True)
    aware_graph = aware.ic_graph(category, conversion=True, arc_factor=state.arc_factor)
    no_ring = dataset_ring_scores(dataset).user < DEFAULT_THRESHOLD
    pickers: dict[str, Callable[[], np.ndarray]] = {
        "fatigue_blind": lambda: select_seeds(blind_graph, k, epsilon=epsilon, seed=seed).seeds,
        "fatigue_aware": lambda: select_seeds(aware_graph, k, epsilon=epsilon, seed=seed).seeds,
        "fatigue_aware_rings_excluded": lambda: select_seeds(aware_graph, k, epsilon=epsilon, candidates=no_ring,
                                                             seed=seed).seeds,
        "oracle": lambda: select_seeds(true_graph_now, k, epsilon=epsilon, seed=seed).seeds,
    }
    if world_fatigue:  # where the oracle's lead comes from: knowing the fatigue, or knowing the probabilities
        pickers["fatigue_aware_true_factors"] = lambda: select_seeds(
            true_fatigue_graph(data_dir, dataset, aware.ic_graph(category, conversion=True), at_ts), k,
            epsilon=epsilon, seed=seed).seeds
        pickers["truth_without_fatigue"] = lambda: select_seeds(truth, k, epsilon=epsilon, seed=seed).seeds
    methods = {name: _scored(true_graph_now, pick, mc_runs, dataset.users) for name, pick in pickers.items()}
    base = methods["fatigue_blind"]["spread"]
    for row in methods.values():
        row["ratio_to_blind"] = round(row["spread"] / base, 4) if base else None
    same = len(set(methods["fatigue_aware"]["seeds"]) & set(methods["fatigue_blind"]["seeds"]))
    return {"world_fatigue": world_fatigue, "launch_ts": at_ts, "launch_quantile": launch_quantile,
            "window_s": window_s, "fatigue_model": state.info(), "fit_seconds": round(fit_seconds, 3),
            "seeds_in_common": same, "methods": methods,
            "aware_over_blind": methods["fatigue_aware"]["ratio_to_blind"]}


def true_fatigue_graph(data_dir: Path, dataset: Dataset, truth: ICGraph, at_ts: float) -> ICGraph:
    """The world's true IC graph at ``at_ts`` with its fatigue (``training/sources/simulate.py``, item 9):
    each arc ``u -> v`` times ``tau_v / (tau_v + r_v)``, ``r_v`` the shares ``v`` saw in ``(at_ts - W, at_ts]``
    (not muted, not collusive), and 0 where ``v`` muted ``u`` by ``at_ts``. The launch's own shares are not
    added to ``r_v`` (the chance stays one per arc, as the independent cascade needs)."""
    n, shares = dataset.num_users, dataset.shares
    rows = {u: i for i, u in enumerate(dataset.users.tolist())}

    def index(column) -> np.ndarray:
        return np.array([rows.get(u, -1) for u in column.to_pylist()], dtype=np.int64)

    fatigue = read_truth(data_dir, "fatigue")
    who, tolerance = index(fatigue.column("user_id")), fatigue.column("tolerance").to_numpy()
    window = float(fatigue.column("window_s").to_numpy()[0])
    tau = np.ones(n)
    tau[who[who >= 0]] = tolerance[who >= 0]
    mutes = read_truth(data_dir, "mutes")
    m_src, m_dst, m_ts = index(mutes.column("src_id")), index(mutes.column("dst_id")), mutes.column("ts").to_numpy()
    known = (m_src >= 0) & (m_dst >= 0)
    mute_key, mute_ts = m_src[known] * n + m_dst[known], m_ts[known]
    order = np.argsort(mute_key, kind="stable")
    mute_key, mute_ts = mute_key[order], mute_ts[order]
    # Shares seen and counted: in the window, from a pair not muted before them, not a ring's own push.
    pair = shares.sharer * n + shares.recipient
    muted_at = np.full(len(pair), np.inf)  # a pair mutes once
    if len(mute_key):
        pos = np.minimum(np.searchsorted(mute_key, pair), len(mute_key) - 1)
        hit = mute_key[pos] == pair
        muted_at[hit] = mute_ts[pos[hit]]
    seen = (shares.ts <= muted_at) & ~_collusive(data_dir, dataset)
    counted = seen & (shares.ts > at_ts - window) & (shares.ts <= at_ts)
    r = np.bincount(shares.recipient[counted], minlength=n).astype(np.float64)
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(truth.out_indptr))
    dst = truth.out_indices.astype(np.int64)
    muted = np.isin(src * n + dst, mute_key[mute_ts <= at_ts])
    prob = truth.out_prob * tau[dst] / (tau[dst] + r[dst]) * ~muted
    return ICGraph.from_arcs(src, dst, prob, n)


def _collusive(data_dir: Path, dataset: Dataset) -> np.ndarray:
    """Per share: a ring member's share of one of their ring's products to a ring-mate (truth/rings.csv)."""
    shares = dataset.shares
    if not (Path(data_dir) / "truth" / "rings.csv").exists():
        return np.zeros(len(shares.id), dtype=bool)
    rows = {u: i for i, u in enumerate(dataset.users.tolist())}
    products = {p: i for i, p in enumerate(dataset.products.tolist())}
    rings, pushed = read_truth(data_dir, "rings"), read_truth(data_dir, "ring_products")
    ring_of = np.full(dataset.num_users, -1, dtype=np.int64)
    for user, ring in zip(rings.column("user_id").to_pylist(), rings.column("ring").to_pylist(), strict=True):
        if user in rows:
            ring_of[rows[user]] = int(ring)
    keys = np.array([int(r) * dataset.num_products + products[p] for r, p in
                     zip(pushed.column("ring").to_pylist(), pushed.column("product_id").to_pylist(), strict=True)
                     if p in products], dtype=np.int64)
    ring = ring_of[shares.sharer]
    return (ring >= 0) & (ring == ring_of[shares.recipient]) & np.isin(
        np.maximum(ring, 0) * dataset.num_products + shares.product, keys)


def social_graph(dataset: Dataset) -> ICGraph:
    """Who can reach whom, without probabilities: social arcs plus sharer→recipient pairs (degree and
    PageRank baselines look at the network only)."""
    src, dst = dataset.network_arcs()
    return ICGraph.from_arcs(src, dst, np.full(src.size, 0.5), dataset.num_users)


# -------------------------------------------------------------------------------------- given influence


def given_influence_section(dataset: Dataset, *, ks: tuple[int, ...], epsilon: float, mc_runs: int,
                            seed: int, repeats: int = 3) -> dict[str, Any]:
    graph = ICGraph.from_arcs(dataset.influence.src, dataset.influence.dst, dataset.influence.value,
                              dataset.num_users)
    select_seeds(graph, min(ks), epsilon=epsilon, seed=seed)  # compile and warm caches before timing
    rows = []
    for k in ks:
        times, selection = [], None
        for r in range(repeats):
            started = time.perf_counter()
            selection = select_seeds(graph, k, epsilon=epsilon, seed=seed + r)
            times.append(time.perf_counter() - started)
        ours = monte_carlo_spread(graph, selection.seeds, runs=mc_runs, seed=SCORING_SEED)
        degree = monte_carlo_spread(graph, top_k(out_degree_scores(graph), k), runs=mc_runs, seed=SCORING_SEED)
        rows.append({"k": k, "selection_seconds_median": round(float(np.median(times)), 4),
                     "selection_seconds_min": round(float(np.min(times)), 4),
                     "selection_seconds_max": round(float(np.max(times)), 4),
                     "rr_sets": int(selection.num_rr_sets), "rr_estimate": round(float(selection.cumulative[-1]), 2),
                     "spread": _spread(ours), "degree_spread": _spread(degree),
                     "ratio_to_degree": round(ours.mean / degree.mean, 4) if degree.mean else None})
    return {"nodes": graph.num_nodes, "arcs": graph.num_arcs, "per_k": rows,
            "celf_subgraph": celf_section(graph, k=min(10, min(ks)), epsilon=epsilon, mc_runs=mc_runs, seed=seed)}


def celf_section(graph: ICGraph, *, k: int, epsilon: float, mc_runs: int, seed: int) -> dict[str, Any]:
    """OPIM-C against the CELF Monte Carlo greedy (slow, the classic reference) on the subgraph induced by
    the :data:`CELF_NODES` nodes of highest out-degree (the part of the graph where seeds are found)."""
    nodes = np.sort(np.argsort(-graph.out_degree(), kind="stable")[:CELF_NODES])
    sub, _ = induced_subgraph(graph, nodes)
    started = time.perf_counter()
    celf = celf_greedy(sub, k, runs=1000, seed=seed)
    celf_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = select_seeds(sub, k, epsilon=epsilon, seed=seed).seeds
    ours_seconds = time.perf_counter() - started
    a = monte_carlo_spread(sub, ours, runs=mc_runs, seed=SCORING_SEED)
    b = monte_carlo_spread(sub, celf, runs=mc_runs, seed=SCORING_SEED)
    return {"nodes": sub.num_nodes, "arcs": sub.num_arcs, "k": k,
            "opim": {"spread": _spread(a), "seconds": round(ours_seconds, 4)},
            "celf": {"spread": _spread(b), "seconds": round(celf_seconds, 4)},
            "ratio_to_celf": round(a.mean / b.mean, 4) if b.mean else None}


# --------------------------------------------------------------------------------------------- helpers


def _scored(truth: ICGraph, pick: Callable[[], np.ndarray], mc_runs: int, users: np.ndarray) -> dict[str, Any]:
    """A method's seeds (user ids, in pick order) and their spread under the true probabilities."""
    started = time.perf_counter()
    seeds = pick()
    seconds = time.perf_counter() - started
    estimate = monte_carlo_spread(truth, seeds, runs=mc_runs, seed=SCORING_SEED)
    return {"spread": round(float(estimate.mean), 3), "ci95": [round(float(estimate.ci_low), 3),
                                                               round(float(estimate.ci_high), 3)],
            "selection_seconds": round(seconds, 4), "seeds": [str(users[s]) for s in seeds.tolist()]}


def _spread(estimate: SpreadEstimate) -> dict[str, Any]:
    return {"mean": round(float(estimate.mean), 3),
            "ci95": [round(float(estimate.ci_low), 3), round(float(estimate.ci_high), 3)]}
