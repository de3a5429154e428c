"""Seed planning: who to ask to share a launch, with expected reach, a confidence interval and reasons.

One function, :func:`plan_seeds`, used by ``sharerank seed`` and by ``SeedingService.GetSeedTargets``: it
takes the learned influence graph of the product's category, picks seeds by RR-set influence maximisation
(:func:`~sharerank.models.seeding.opim.select_seeds`) under the request's constraints, then scores every prefix of
the seed list by an *independent* Monte Carlo run (so the reported reach and its interval never reuse the
samples that chose the seeds) and explains each seed from its share history.

Trust (issue 15): arcs into a recipient already saturated with shares, or from a sender they have heard from
too often, are scaled by the learned fatigue factors (:mod:`~sharerank.models.seeding.fatigue`, counts at the
end of the training log); each seed carries a spammer score (their conversions against the population's, a
Beta posterior with a 95% interval) and the fatigue of their audience; ``max_fatigue`` leaves out seeds whose
audience is more fatigued than that; members of collusive rings (:mod:`~sharerank.models.rings`) are left out
(default, at or above the detector's threshold), discounted (their arcs times ``1 - ring score``) or ignored.

Reach counts the seeds themselves, as the independent cascade model does: a seed who shares the product
is reached by definition. The numba kernels release the GIL, so a seeding request never stalls the feed
requests served beside it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import betaln
from scipy.stats import beta as beta_distribution

from sharerank import progress
from sharerank.models.rings import DEFAULT_THRESHOLD as RING_THRESHOLD
from sharerank.models.rings import dataset_ring_scores
from sharerank.models.seeding.communities import communities_of
from sharerank.models.seeding.fatigue import DEFAULT_WINDOW_S, FatigueState, fit_fatigue
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.influence import InfluenceModel
from sharerank.models.seeding.opim import select_seeds
from sharerank.models.seeding.spread import monte_carlo_spread

MAX_BUDGET = 1000
DEFAULT_EPSILON = 0.1
DEFAULT_MC_RUNS = 2000
MIN_HISTORY_FOR_REASON = 5
"""Shares a seed must have sent before its conversion rate is quoted as a reason (fewer say little)."""
RING_POLICIES = ("exclude", "discount", "ignore")
"""What seeding does with ring members: leave out those scoring at least the threshold, scale their arcs by
``1 - ring score``, or nothing."""


class SeedingError(ValueError):
    """A request that cannot be planned (bad budget, unknown category, too few candidates)."""


@dataclass(frozen=True)
class SeedReason:
    kind: str  # ReasonKind name suffix: CONVERSION_HISTORY or NETWORK_POSITION
    text: str


@dataclass(frozen=True)
class PlannedSeed:
    user: int
    user_id: str
    marginal_reach: float
    cumulative_reach: float
    ci_low: float
    ci_high: float
    community: int
    reasons: tuple[SeedReason, ...]
    trust: SeedTrust | None = None


@dataclass(frozen=True)
class SeedTrust:
    """How far a seed's friends can trust their shares (see :meth:`SeedingContext.spammer_scores`)."""

    shares_sent: int          # trials of their shares in training (exposures, in a log of successes only)
    conversions: int          # of those, converted
    spammer_score: float      # 1 - min(1, their conversion rate / the population's): 0 fine, 1 never converts
    spammer_ci_low: float     # 95% interval of spammer_score (Beta posterior)
    spammer_ci_high: float
    audience_fatigue: float   # share of their direct expected conversions fatigue takes away, in [0, 1]
    ring_score: float         # collusive-ring score (models/rings), 0 outside every candidate group

    def to_json(self) -> dict:
        return {"shares_sent": self.shares_sent, "conversions": self.conversions,
                "spammer_score": round(self.spammer_score, 4),
                "spammer_ci95": [round(self.spammer_ci_low, 4), round(self.spammer_ci_high, 4)],
                "audience_fatigue": round(self.audience_fatigue, 4), "ring_score": round(self.ring_score, 4)}


@dataclass(frozen=True)
class SeedPlan:
    seeds: list[PlannedSeed]
    expected_reach: float
    ci_low: float
    ci_high: float
    category: str | None
    selection: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """Why the reach should not be trusted as it stands (a degenerate learned graph: see :func:`degenerate`)."""

    def to_json(self) -> dict:
        return {
            "category": self.category,
            "warnings": list(self.warnings),
            "expected_reach": round(self.expected_reach, 3),
            "ci95": [round(self.ci_low, 3), round(self.ci_high, 3)],
            "seeds": [{"user_id": s.user_id, "marginal_reach": round(s.marginal_reach, 3),
                       "cumulative_reach": round(s.cumulative_reach, 3),
                       "ci95": [round(s.ci_low, 3), round(s.ci_high, 3)], "community": s.community,
                       "reasons": [r.text for r in s.reasons],
                       **({"trust": s.trust.to_json()} if s.trust else {})} for s in self.seeds],
            "selection": self.selection,
        }


class SeedingContext:
    """What seeding needs about a population: the influence model, communities and activity per user.

    Influence graphs are built once per category and cached (thread-safe), so a server pays for a category's
    graph on its first request only (or at :meth:`warm`). ``fatigue`` (None: off) scales the arcs; ``ring_score``
    (default: 0 for all) is each user's collusive-ring score.
    """

    def __init__(self, users: np.ndarray, influence: InfluenceModel, community: np.ndarray, activity: np.ndarray,
                 fatigue: FatigueState | None = None, ring_score: np.ndarray | None = None):
        if not (len(users) == len(community) == len(activity)):
            raise ValueError("'users', 'community' and 'activity' must have one entry per user")
        self.fatigue = fatigue if fatigue is not None else FatigueState.off(influence, "not modelled")
        if self.fatigue.arc_factor.shape != influence.arrays["arc_src"].shape:
            raise ValueError("the fatigue state must have one factor per influence arc")
        self.ring_score = np.zeros(len(users)) if ring_score is None else np.asarray(ring_score, dtype=np.float64)
        if self.ring_score.shape != (len(users),):
            raise ValueError("'ring_score' must have one entry per user")
        self.users = np.asarray(users, dtype=object)
        self.influence = influence
        self.community = np.asarray(community, dtype=np.int32)
        self.activity = np.asarray(activity, dtype=np.int64)
        self.community_size = np.bincount(self.community)
        self.compliance = influence.compliance()
        """P(a user asked to share a launch does): see :meth:`InfluenceModel.compliance`."""
        self._graphs: dict[tuple, ICGraph] = {}
        self._seed_graphs: dict[tuple, ICGraph] = {}
        self._audience: dict[str | None, np.ndarray] = {}
        self._spam: tuple[float, float] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_dataset(cls, dataset, user_embedding: np.ndarray | None = None, seed: int = 0, *,
                     fatigue_window_s: float = DEFAULT_WINDOW_S) -> SeedingContext:
        """Learns influence and fatigue from the dataset's shares (or takes its ``influence.csv``; fatigue
        then off) with the fatigue counts at the last share, scores collusive rings, finds communities on the
        fatigue-blind influence graph and counts each user's shares sent and purchases."""
        if dataset.influence is None and dataset.shares is not None and len(dataset.shares.id):
            influence, curves = fit_fatigue(dataset, window_s=fatigue_window_s, user_embedding=user_embedding,
                                            seed=seed)
            fatigue = FatigueState.snapshot(dataset, influence, curves, window_s=fatigue_window_s)
        else:
            influence = InfluenceModel.fit(dataset, user_embedding=user_embedding, seed=seed)
            fatigue = FatigueState.off(influence, "a given influence table (no share log to read fatigue from)")
        blind = influence.ic_graph(None)
        activity = np.bincount(dataset.purchases.user, minlength=dataset.num_users)
        if dataset.shares is not None:
            activity = activity + np.bincount(dataset.shares.sharer, minlength=dataset.num_users)
        context = cls(dataset.users, influence, communities_of(blind, seed=seed), activity, fatigue,
                      dataset_ring_scores(dataset).user)
        if not fatigue.active:
            context._graphs[(None, True, False)] = blind
        return context

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.influence.categories)

    def graph(self, category: str | None, *, fatigue: bool = True, ring_discount: bool = False) -> ICGraph:
        """The influence graph of ``category``, with the fatigue factors on its arcs (``fatigue``) and ring
        members' out-arcs times ``1 - ring score`` (``ring_discount``)."""
        if category is not None and category not in self.influence.categories:
            raise SeedingError(f"unknown category {category!r}; known: {', '.join(self.categories)}")
        key = (category, fatigue, ring_discount)
        with self._lock:
            if key not in self._graphs:
                self._graphs[key] = self.influence.ic_graph(category, arc_factor=self._arc_factor(fatigue,
                                                                                                 ring_discount))
            return self._graphs[key]

    def _arc_factor(self, fatigue: bool, ring_discount: bool) -> np.ndarray | None:
        factor = self.fatigue.arc_factor if fatigue and self.fatigue.active else None
        if ring_discount and self.ring_score.any():
            trust = 1.0 - self.ring_score[self.influence.arrays["arc_src"]]
            factor = trust if factor is None else factor * trust
        return factor

    def seed_graph(self, category: str | None, *, fatigue: bool = True, ring_discount: bool = False) -> ICGraph:
        """:meth:`graph` with a handle per user whose arc to the user is that user's compliance
        (:meth:`ICGraph.with_seed_handles`); seeds are picked among the handles."""
        graph = self.graph(category, fatigue=fatigue, ring_discount=ring_discount)
        key = (category, fatigue, ring_discount)
        with self._lock:
            if key not in self._seed_graphs:
                self._seed_graphs[key] = graph.with_seed_handles(self.compliance)
            return self._seed_graphs[key]

    def audience_fatigue(self, category: str | None) -> np.ndarray:
        """Per user, the share of their direct expected conversions in ``category`` that fatigue takes away:
        ``1 - sum_v p_uv f_uv / sum_v p_uv`` over their arcs (0 without arcs or without fatigue)."""
        with self._lock:
            if category in self._audience:
                return self._audience[category]
        n = len(self.users)
        if not self.fatigue.active:
            out = np.zeros(n)
        else:
            src, dst = self.influence.arrays["arc_src"], self.influence.arrays["arc_dst"]
            p = self.influence.probability(src, dst, category)
            total = np.bincount(src, p, n)
            kept = np.bincount(src, p * np.minimum(1.0, self.fatigue.arc_factor), n)
            out = np.where(total > 0, 1.0 - kept / np.where(total > 0, total, 1.0), 0.0).clip(0.0, 1.0)
        with self._lock:
            self._audience[category] = out
        return out

    def spammer_scores(self, users: np.ndarray) -> tuple[np.ndarray, ...]:
        """(shares sent, conversions, spammer score, 95% low, 95% high) of ``users``: their trials and
        conversions in training, and ``1 - min(1, rate / mu)`` for their conversion rate under a Beta posterior
        (prior mean ``mu``, the population's rate; strength fitted by beta-binomial maximum likelihood). Without
        share statistics (a given table) the score is 0 in an interval [0, 1]."""
        users = np.asarray(users, dtype=np.int64)
        a = self.influence.arrays
        if "sender_n" not in a:
            zero = np.zeros(len(users))
            return zero.astype(np.int64), zero.astype(np.int64), zero, zero, np.ones(len(users))
        n_all, k_all = a["sender_n"], a["sender_k"]
        if self._spam is None:
            self._spam = _beta_prior(k_all, n_all)
        mu, m = self._spam
        n, k = n_all[users], k_all[users]
        alpha, beta = k + m * mu, n - k + m * (1 - mu)
        mean = alpha / (alpha + beta)
        low, high = beta_distribution.ppf([[0.025], [0.975]], alpha, beta)
        score = 1.0 - np.minimum(1.0, mean / mu)
        return (n.astype(np.int64), k.astype(np.int64), score, 1.0 - np.minimum(1.0, high / mu),
                1.0 - np.minimum(1.0, low / mu))

    def warm(self) -> SeedingContext:
        self.graph(None)
        return self

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.influence.save(path / "influence")
        self.fatigue.save(path / "fatigue")
        np.savez(path / "population.npz", users=self.users.astype(str), community=self.community,
                 activity=self.activity, ring_score=self.ring_score)
        (path / "info.json").write_text(json.dumps({"users": len(self.users),
                                                    "communities": int(self.community.max(initial=-1) + 1)}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SeedingContext:
        path = Path(path)
        influence = InfluenceModel.load(path / "influence")
        # Bundles saved before fatigue and rings were modelled load with both off.
        fatigue = FatigueState.load(path / "fatigue") if (path / "fatigue").is_dir() else None
        with np.load(path / "population.npz") as arrays:
            ring = arrays["ring_score"] if "ring_score" in arrays.files else None
            return cls(arrays["users"].astype(object), influence, arrays["community"], arrays["activity"], fatigue,
                       ring)


def plan_seeds(context: SeedingContext, k: int, *, category: str | None = None,
               exclude: np.ndarray | None = None, min_activity: int = 0, max_per_community: int = 0,
               max_fatigue: float | None = None, ring_policy: str = "exclude",
               ring_threshold: float = RING_THRESHOLD, fatigue: bool = True,
               epsilon: float = DEFAULT_EPSILON, mc_runs: int = DEFAULT_MC_RUNS, seed: int = 0) -> SeedPlan:
    """Picks ``k`` seeds for a launch in ``category`` (None: influence pooled over all categories).

    Args:
        exclude: User rows never to pick (opted out, already bought the product).
        min_activity: Only users with at least this many shares sent plus purchases.
        max_per_community: At most this many seeds per community; 0: no cap.
        max_fatigue: Only users whose audience fatigue (:meth:`SeedingContext.audience_fatigue`) is at most
            this, in [0, 1]; None: no limit.
        ring_policy: ``exclude`` (default: users whose ring score is at least ``ring_threshold`` are never
            picked), ``discount`` (every ring member's arcs times ``1 - ring score``) or ``ignore``.
        ring_threshold: Ring score from which ``exclude`` leaves a user out (default: the detector's).
        fatigue: Use the fatigue factors (default); False gives the fatigue-blind plan.
        epsilon: Slack of the (1 - 1/e - epsilon) guarantee (1/2 - epsilon with a community cap).
        mc_runs: Independent Monte Carlo runs behind the reported reach and its 95% interval.

    Raises:
        SeedingError: k outside 1..MAX_BUDGET or above the eligible candidates, epsilon outside (0, 1),
            a negative constraint, an unknown category.
    """
    if not 1 <= k <= MAX_BUDGET:
        raise SeedingError(f"budget must be between 1 and {MAX_BUDGET} (got {k})")
    if not 0.0 < epsilon < 1.0:
        raise SeedingError(f"epsilon must lie in (0, 1) (got {epsilon})")
    if min_activity < 0 or max_per_community < 0:
        raise SeedingError("min_activity and max_seeds_per_community must be non-negative")
    if max_fatigue is not None and not 0.0 <= max_fatigue <= 1.0:
        raise SeedingError(f"max_fatigue must lie in [0, 1] (got {max_fatigue})")
    if ring_policy not in RING_POLICIES:
        raise SeedingError(f"ring_policy must be one of {', '.join(RING_POLICIES)} (got {ring_policy!r})")
    discount = ring_policy == "discount"
    graph = context.graph(category, fatigue=fatigue, ring_discount=discount)
    candidates = context.activity >= min_activity
    if exclude is not None and len(exclude):
        candidates[np.asarray(exclude, dtype=np.int64)] = False
    audience_fatigue = context.audience_fatigue(category)
    if max_fatigue is not None:
        candidates &= audience_fatigue <= max_fatigue
    ring_excluded = 0
    if ring_policy == "exclude":
        ring = context.ring_score >= ring_threshold
        ring_excluded = int((ring & candidates).sum())
        candidates &= ~ring
    eligible = int(candidates.sum())
    if max_per_community:
        eligible = int(np.minimum(np.bincount(context.community[candidates]), max_per_community).sum())
    if k > eligible:
        raise SeedingError(f"budget {k} is above the {eligible} eligible candidates under these constraints")
    n = graph.num_nodes
    asked = context.seed_graph(category, fatigue=fatigue, ring_discount=discount)  # each shares w. compliance
    users, selection = pick_asked(asked, k, epsilon=epsilon, candidates=candidates,
                                  community=context.community if max_per_community else None,
                                  max_per_community=max_per_community, seed=seed)
    with progress.stage(f"reach by {mc_runs:,} Monte Carlo runs"):
        mean, low, high = asked_reach(asked, users, runs=mc_runs, seed=seed + 1)
    marginal = np.diff(mean, prepend=0.0)
    sent, converted, spam, spam_low, spam_high = context.spammer_scores(users)
    seeds = [
        PlannedSeed(user=int(u), user_id=str(context.users[u]), marginal_reach=float(marginal[i]),
                    cumulative_reach=float(mean[i]), ci_low=float(low[i]), ci_high=float(high[i]),
                    community=int(context.community[u]), reasons=explain_seed(context, graph, int(u), category),
                    trust=SeedTrust(int(sent[i]), int(converted[i]), float(spam[i]), float(spam_low[i]),
                                    float(spam_high[i]), float(audience_fatigue[u]), float(context.ring_score[u])))
        for i, u in enumerate(users.tolist())
    ]
    info = {"method": selection.method, "sampler": selection.sampler, "rr_sets": int(selection.num_rr_sets),
            "mean_rr_size": round(float(selection.mean_rr_size), 3),
            "rr_estimate": round(float(selection.cumulative[-1] - k), 3),
            "approximation": round(float(selection.approximation), 4), "epsilon": epsilon,
            "seconds": round(float(selection.seconds), 4), "mc_runs": mc_runs,
            "graph": {"users": n, "arcs": graph.num_arcs}, "influence": dict(context.influence.info),
            "fatigue": {"used": bool(fatigue and context.fatigue.active), "window_s": context.fatigue.window_s,
                        "max_fatigue": max_fatigue},
            "rings": {"policy": ring_policy, "threshold": ring_threshold, "excluded_candidates": ring_excluded}}
    return SeedPlan(seeds, float(mean[-1]), float(low[-1]), float(high[-1]), category, info,
                    degenerate(graph, mean, low, high))


def pick_asked(asked: ICGraph, k: int, *, candidates: np.ndarray | None = None, community: np.ndarray | None = None,
               max_per_community: int = 0, epsilon: float = DEFAULT_EPSILON, seed: int = 0):
    """``k`` users to ask, by RR-set selection on a graph with seed handles
    (:meth:`~sharerank.models.seeding.ic_graph.ICGraph.with_seed_handles`); returns the users (real node ids, in
    pick order) and the selection. ``candidates`` and ``community`` are per real user."""
    n = asked.num_nodes // 2
    allowed = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    selection = select_seeds(asked, k, epsilon=epsilon, candidates=np.r_[np.zeros(n, dtype=bool), allowed],
                             community=None if community is None else np.r_[community, community],
                             max_per_community=max_per_community, seed=seed)
    return selection.seeds - n, selection


def asked_reach(asked: ICGraph, users: np.ndarray, *, runs: int, seed: int) -> tuple[np.ndarray, ...]:
    """Expected reach of asking each prefix of ``users`` and its 95% interval, by independent Monte Carlo on a
    graph with seed handles (the handles themselves not counted)."""
    n = asked.num_nodes // 2
    spread = monte_carlo_spread(asked, np.asarray(users, dtype=np.int64) + n, runs=runs, seed=seed)
    handles = np.arange(1, len(users) + 1)
    return spread.prefix_mean - handles, spread.prefix_ci_low - handles, spread.prefix_ci_high - handles


def _beta_prior(k: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Mean and strength of the Beta prior on senders' conversion rates: the pooled rate, and the strength
    maximising the beta-binomial likelihood of the senders with two or more trials."""
    mu = float(np.clip(k.sum() / max(n.sum(), 1.0), 1e-6, 1 - 1e-6))
    keep = n > 1
    if not keep.any():
        return mu, 2.0
    kk, nn = k[keep], n[keep]

    def nll(log_m: float) -> float:
        m = np.exp(log_m)
        return -float((betaln(kk + m * mu, nn - kk + m * (1 - mu)) - betaln(m * mu, m * (1 - mu))).sum())

    best = minimize_scalar(nll, bounds=(np.log(1e-2), np.log(1e6)), method="bounded")
    return mu, float(np.exp(best.x))


DEGENERATE_COVER = 0.5
"""One seed "reaching" more than this share of all users, or more than this share of the arcs being near
certain, is a sign of a degenerate learned graph."""


def degenerate(graph: ICGraph, mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[str, ...]:
    """Warnings for reach that cannot be what it seems: most arcs near certain, an interval of width 0 with
    more than one seed (every run gave the same cascade), or one seed covering most users. Probabilities of
    ~1 are what a log of successes alone gives when failures are not inferred."""
    warnings, num_users = [], graph.num_nodes
    certain = float(np.mean(graph.out_prob >= 0.99)) if graph.num_arcs else 0.0
    if certain > DEGENERATE_COVER:
        warnings.append(f"degenerate influence graph: {certain:.0%} of its arcs have a probability of 0.99 or more")
    if len(mean) > 1 and high[-1] - low[-1] <= 1e-9 * max(1.0, mean[-1]):
        warnings.append(f"degenerate influence graph: every simulation of these {len(mean)} seeds reached the same "
                        f"{mean[-1]:.0f} users (an interval of width 0); the learned probabilities are ~0 or ~1, "
                        "as when a log records only successful shares")
    if len(mean) and mean[0] > DEGENERATE_COVER * num_users:
        warnings.append(f"degenerate influence graph: the first seed alone reaches {mean[0]:.0f} of {num_users} "
                        "users; the learned graph is one near-certain component")
    return tuple(warnings)


def explain_seed(context: SeedingContext, graph: ICGraph, user: int, category: str | None) -> tuple[SeedReason, ...]:
    """How often the seed starts cascades (their chance to share when asked), their conversion history where
    there is enough of it, and always their network position and community."""
    where = f" in {category}" if category else ""
    influence = context.influence
    reasons = []
    if influence.coef is not None:
        started, cascades = int(influence.arrays["initiations"][user]), int(influence.params["cascades"])
        reasons.append(SeedReason("SHARE_PROPENSITY",
                                  f"started {started} of {cascades:,} cascades in training; shares when asked with "
                                  f"p≈{context.compliance[user]:.0%}"))
    shares, conversions = influence.sender_stats(user, category)
    if shares >= MIN_HISTORY_FOR_REASON:
        whom = "friends who saw their adoptions" if influence.info.get("regime") == "exposure" else "recipients"
        reasons.append(SeedReason("CONVERSION_HISTORY", f"converted {conversions / shares:.0%} of {shares} "
                                                        f"{whom}{where}"))
    out = slice(graph.out_indptr[user], graph.out_indptr[user + 1])
    direct = float(graph.out_prob[out].sum())
    size = int(context.community_size[context.community[user]])
    reasons.append(SeedReason("NETWORK_POSITION",
                              f"shares reach {graph.out_indptr[user + 1] - graph.out_indptr[user]} people, "
                              f"{direct:.1f} expected to buy directly; community {context.community[user]} "
                              f"({size:,} people)"))
    return tuple(reasons)
