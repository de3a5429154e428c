r"""Influence maximisation under the independent cascade model: pick ``k`` seeds (KOCs) whose expected
spread is provably close to the best possible.

OPIM-C (`Tang, Tang, Xiao, Yuan, SIGMOD'18 "Online Processing Algorithms for Influence Maximization"
<https://doi.org/10.1145/3183713.3183749>`_) draws two independent collections of :math:`\theta` RR sets
(:mod:`sharerank.models.seeding.rrsets`): greedy maximum coverage on :math:`\mathcal{R}_1` picks :math:`S` and
bounds the optimum, coverage of :math:`S` on :math:`\mathcal{R}_2` bounds its spread from below, and both
collections double until the certified ratio is good enough. With :math:`\Lambda_2(S)` the sets of
:math:`\mathcal{R}_2` that :math:`S` hits, :math:`\Lambda^u_1` the smallest of the greedy's upper bounds
:math:`\Lambda_1(S_i) + \sum_{v \in \text{top-}k} \Lambda_1(v \mid S_i)` on :math:`\mathcal{R}_1`, and
:math:`a = \ln(3 i_{\max} / \delta)`:

.. math::
    \sigma^l(S) = \Big(\big(\sqrt{\Lambda_2(S) + 2a/9} - \sqrt{a/2}\big)^2 - a/18\Big)\frac{n}{\theta},
    \qquad
    \sigma^u(S^\circ) = \big(\sqrt{\Lambda^u_1 + a/2} + \sqrt{a/2}\big)^2 \frac{n}{\theta},

and it stops once :math:`\sigma^l / \sigma^u \geq 1 - 1/e - \epsilon`, or at :math:`i_{\max}` doublings,
where :math:`\theta` reaches IMM's worst-case sample size.

HIST (`Guo, Wang, Wei, Chen, SIGMOD'20 <https://doi.org/10.1145/3318464.3389740>`_; extended in TODS'22 as
"Influence Maximization Revisited: Efficient Sampling with Bound Tightened") is for graphs whose RR sets are
huge: it first picks a few sentinel seeds from a few full RR sets, then runs the same loop on RR sets
truncated at the sentinels, which keeps them small. The certificate comes from the second phase alone.

Greedy cover is the bucket greedy: coverage counts live in buckets (Batagelj–Zaversnik layout), so taking a
seed costs one O(1) decrement per node of each newly covered set, and the best node and the top-:math:`k`
bound are read off the top of the buckets: no per-step scan of all nodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from sharerank import progress
from sharerank.models.seeding.baselines import top_k, weighted_degree_scores
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.rrsets import SAMPLERS, RRSampler, RRSets, first_hits, invert

__all__ = ["HIST_MEAN_RR_SIZE", "SeedSelection", "estimate_spread", "select_seeds"]

HIST_MEAN_RR_SIZE = 200.0
"""``method="auto"`` switches to HIST when a pilot batch's RR sets average more nodes than this: at the
10^5 sets per collection good seeds need, that is over 10^7 stored nodes per collection, where truncation
pays. On a simulated 100k-user world (full sets ~1,000 nodes, truncated ~3) OPIM-C took 140 s and HIST 5 s."""

HUGE_RR_SIZE = 5_000.0
"""Above this pilot mean RR-set size HIST takes its sentinels from the hubs (:func:`_hub_sentinels`) instead of
from full RR sets: on a simulated 1M-user world whose sets hold ~10^5 nodes, selection fell from 92 s to
5–6 s with seeds of slightly higher spread. There a set is either small or a giant share of the graph, so a
pilot's mean swings (10^4–3·10^4): the threshold sits well below it and well above a 100k-user world's ~10^3."""

RR_NODE_BUDGET = 1 << 25
"""Nodes per RR collection (~128 MB as int32) that the :data:`MIN_RR_SETS` floor may visit, at most."""

MIN_RR_SETS = 1 << 17
"""RR sets per collection OPIM-C draws at least (fewer when IMM's worst-case size is smaller). The certificate
is often reached far earlier (NetHEPT, k = 50: ~18k sets at ratio 0.6), but greedy on so few sets picks
noisier seeds: their Monte Carlo spread there is ~1,251 at 18k sets, ~1,289 at 100k, ~1,294 at 1M. Starting
at this size costs ~0.1 s on NetHEPT and a few seconds at 20M arcs, and only tightens the bounds."""

PILOT_RR_SETS = 256
SENTINEL_FRACTION = 0.25
"""HIST picks ``ceil(SENTINEL_FRACTION * k)`` sentinels first (the authors' code starts from ``k / 4``)."""

METHODS = ("auto", "opim-c", "hist")
_STREAM_PILOT, _STREAM_R1, _STREAM_R2, _STREAM_SENTINEL_R1, _STREAM_SENTINEL_R2 = range(5)


@dataclass(frozen=True)
class SeedSelection:
    """Chosen seeds and what the sampling certifies about them.

    Args:
        seeds: ``int64`` node ids in selection order.
        marginal: Expected spread each seed adds to the ones before it, estimated on the validation sets
            (``n`` × fraction of them first hit by that seed); HIST splits the sentinels' share only roughly.
        cumulative: Estimated spread of each prefix; ``cumulative[-1]`` is the set's (seeds included).
        lower_bound: Lower bound on the chosen set's expected spread (probability ≥ ``1 - delta``).
        upper_bound: Upper bound on the best feasible set's expected spread.
        approximation: ``lower_bound / upper_bound``: the certified approximation ratio.
        num_rr_sets: RR sets drawn in the final collections (both, all phases).
        mean_rr_size: Mean nodes per RR set in the final collections (truncated ones for HIST).
        method: ``"opim-c"`` or ``"hist"``.
        sampler: ``"subsim"`` or ``"standard"``.
        seconds: Wall time of the selection.
        memory_bytes: Bytes held by the RR collections and the inverted index at the end (largest phase).
    """

    seeds: np.ndarray
    marginal: np.ndarray
    cumulative: np.ndarray
    lower_bound: float
    upper_bound: float
    approximation: float
    num_rr_sets: int
    mean_rr_size: float
    method: str
    sampler: str
    seconds: float
    memory_bytes: int


def select_seeds(
    graph: ICGraph,
    k: int,
    *,
    epsilon: float = 0.1,
    delta: float | None = None,
    candidates: np.ndarray | None = None,
    community: np.ndarray | None = None,
    max_per_community: int = 0,
    sampler: str = "subsim",
    method: str = "auto",
    min_rr_sets: int = MIN_RR_SETS,
    seed: int = 0,
) -> SeedSelection:
    r"""``k`` seeds maximising expected IC spread, with a certified approximation ratio.

    Without a community cap the target is :math:`1 - 1/e - \epsilon` with probability
    :math:`\geq 1 - \delta`. With ``max_per_community`` the feasible sets form a partition matroid, where
    greedy only guarantees :math:`1/2`: the target becomes :math:`1/2 - \epsilon` (the certified ratio is
    usually far better), and the upper bound maximises the marginals over feasible sets. ``candidates``
    restricts both the seeds and the optimum they are compared with.

    Args:
        graph: The IC graph.
        k: Number of seeds.
        epsilon: Slack on the approximation ratio, in (0, 1). (default: ``0.1``)
        delta: Failure probability, in (0, 1). (default: ``1 / n``)
        candidates: ``bool`` mask, ``True`` where a node may be a seed. (default: all nodes)
        community: Integer community id per node; needed with ``max_per_community``.
        max_per_community: At most this many seeds per community; ``0`` means no cap. (default: ``0``)
        sampler: RR-set sampler, ``"subsim"`` or ``"standard"``. (default: ``"subsim"``)
        method: ``"opim-c"``, ``"hist"`` or ``"auto"``: HIST when a pilot batch's mean RR-set size exceeds
            :data:`HIST_MEAN_RR_SIZE`. (default: ``"auto"``)
        min_rr_sets: RR sets per collection to start from (capped at IMM's worst-case size and at
            :data:`RR_NODE_BUDGET` stored nodes), for seeds better than the certificate needs. (default:
            :data:`MIN_RR_SETS`)
        seed: Random seed; the result is the same for the same seed and arguments, on any number of threads.
            (default: ``0``)

    Raises:
        ValueError: ``k`` not positive or above the seeds the constraints allow, ``epsilon`` or ``delta``
            outside (0, 1), masks or ids of the wrong shape or type, an unknown sampler or method.
    """
    started = time.perf_counter()
    n = graph.num_nodes
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"'epsilon' must lie in (0, 1) (got {epsilon})")
    if min_rr_sets < 0:
        raise ValueError(f"'min_rr_sets' must be non-negative (got {min_rr_sets})")
    delta = 1.0 / max(n, 2) if delta is None else float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"'delta' must lie in (0, 1) (got {delta})")
    if sampler not in SAMPLERS:
        raise ValueError(f"'sampler' must be one of {SAMPLERS} (got {sampler!r})")
    if method not in METHODS:
        raise ValueError(f"'method' must be one of {METHODS} (got {method!r})")
    feasible = _feasible(n, k, candidates, community, max_per_community)
    k = int(k)

    rr = RRSampler(graph, sampler, seed)
    pilot = rr.sample(PILOT_RR_SETS, stream=_STREAM_PILOT)
    if method == "auto":
        method = "hist" if pilot.mean_size() > HIST_MEAN_RR_SIZE else "opim-c"
    target = 0.5 if feasible.cap else 1.0 - 1.0 / math.e
    if method == "opim-c":
        run = _opim_c(rr, feasible, k, k, epsilon, delta, target, target - epsilon, (_STREAM_R1, _STREAM_R2),
                      min_rr_sets=_affordable(min_rr_sets, pilot.mean_size()))
        memory, sets = run.memory_bytes, run.num_rr_sets
    else:
        # Sentinels need only be as good as greedy's first b picks, 1 - (1 - 1/k)^b of the k-seed optimum
        # (HIST's sentinel target, with half the slack): full RR sets are costly here, so few are drawn.
        b = min(k, math.ceil(SENTINEL_FRACTION * k))
        goal = (1.0 - (1.0 - 1.0 / k) ** b) * target / (1.0 - 1.0 / math.e) - epsilon / 2
        if pilot.mean_size() > HUGE_RR_SIZE:
            sentinel_seeds = _hub_sentinels(graph, feasible, b)
        else:
            sentinel = _opim_c(rr, feasible, b, k, epsilon / 2, delta / 2, target, goal,
                               (_STREAM_SENTINEL_R1, _STREAM_SENTINEL_R2))
            sentinel_seeds = sentinel.seeds
        # A truncated set stores few nodes but may explore a full set's worth before it meets a sentinel, so
        # the floor is budgeted at the full sets' mean size.
        run = _opim_c(rr, feasible, k, k, epsilon, delta / 2, target, target - epsilon, (_STREAM_R1, _STREAM_R2),
                      sentinels=sentinel_seeds, min_rr_sets=_affordable(min_rr_sets, pilot.mean_size()))
        memory, sets = run.memory_bytes, run.num_rr_sets
        if pilot.mean_size() <= HUGE_RR_SIZE:
            memory, sets = max(sentinel.memory_bytes, memory), sentinel.num_rr_sets + sets
    return SeedSelection(
        seeds=run.seeds,
        marginal=run.marginal,
        cumulative=np.cumsum(run.marginal),
        lower_bound=run.lower,
        upper_bound=run.upper,
        approximation=run.lower / run.upper if run.upper > 0 else 0.0,
        num_rr_sets=sets,
        mean_rr_size=run.mean_rr_size,
        method=method,
        sampler=sampler,
        seconds=time.perf_counter() - started,
        memory_bytes=memory,
    )


def estimate_spread(graph: ICGraph, seeds: np.ndarray, *, num_rr_sets: int = 100_000, sampler: str = "subsim",
                    seed: int = 1) -> float:
    """Expected IC spread of ``seeds`` (seeds included): ``n`` × the fraction of fresh RR sets they hit.
    Sets stop at the first seed they reach, so hits cost little. Standard error about
    ``sqrt(s (n - s) / num_rr_sets)`` for a spread ``s``."""
    seeds = np.asarray(seeds, dtype=np.int64)
    n = graph.num_nodes
    if seeds.size and (seeds.min() < 0 or seeds.max() >= n):
        raise ValueError(f"seed ids must lie in [0, {n})")
    if num_rr_sets <= 0:
        raise ValueError(f"'num_rr_sets' must be positive (got {num_rr_sets})")
    if seeds.size == 0:
        return 0.0
    mask = np.zeros(n, dtype=np.bool_)
    mask[seeds] = True
    sets = RRSampler(graph, sampler, seed).sample(num_rr_sets, sentinels=mask)
    # A set that reached a seed was cut to that seed alone; any other set starts with a non-seed root.
    return n * float(mask[sets.nodes[sets.indptr[:-1]]].mean())


# ------------------------------------------------------------------------------------------------- OPIM-C


@dataclass(frozen=True)
class _Feasible:
    """Who may be a seed: an eligible mask, community ids ``0..``, at most ``cap`` per community (0: any)."""

    eligible: np.ndarray
    community: np.ndarray
    cap: int


@dataclass(frozen=True)
class _Run:
    seeds: np.ndarray
    marginal: np.ndarray
    lower: float
    upper: float
    num_rr_sets: int
    mean_rr_size: float
    memory_bytes: int


def _opim_c(rr: RRSampler, feasible: _Feasible, picks: int, k: int, epsilon: float, delta: float, target: float,
            goal: float, streams: tuple[int, int], sentinels: np.ndarray | None = None,
            min_rr_sets: int = 0) -> _Run:
    """The OPIM-C loop: ``picks`` greedy seeds, doubling until their lower bound reaches ``goal`` × the upper
    bound on the best ``k`` feasible seeds. Sample sizes follow the paper for approximation ``target``. With
    ``sentinels``: HIST's second phase (sets truncated at them; the greedy takes them first)."""
    n = rr.graph.num_nodes
    log_sets = _log_binomial(int(feasible.eligible.sum()), k) + math.log(6.0 / delta)
    coef = (target * math.sqrt(math.log(6.0 / delta)) + math.sqrt(target * log_sets)) ** 2
    theta_max = 2.0 * n * coef / (k * epsilon**2)
    theta = max(1, math.ceil(2.0 * coef), min(min_rr_sets, math.ceil(theta_max)))
    iterations = max(1, math.floor(math.log2(max(theta_max / theta, 1.0))) + 1)
    a = math.log(3.0 * iterations / delta)
    preselected = np.empty(0, dtype=np.int64) if sentinels is None else np.asarray(sentinels, dtype=np.int64)
    stop = None
    if sentinels is not None:
        stop = np.zeros(n, dtype=np.bool_)
        stop[preselected] = True
    r1 = r2 = RRSets.empty()
    # Each round doubles the sets until the bounds certify the seeds: open-ended, counted in RR sets drawn.
    with progress.stage(f"RR sets for {picks} seeds", each_step=True) as shown:
        for _ in range(iterations):
            r1 = r1.concat(rr.sample(theta - len(r1), stream=streams[0], first=len(r1), sentinels=stop))
            r2 = r2.concat(rr.sample(theta - len(r2), stream=streams[1], first=len(r2), sentinels=stop))
            inv_indptr, sets_of = invert(r1, n)
            seeds, upper_cov = _greedy(r1.indptr, r1.nodes, inv_indptr, sets_of, picks, k, feasible.eligible,
                                       feasible.community, feasible.cap, preselected)
            rank = np.full(n, picks, dtype=np.int64)
            rank[seeds] = np.arange(picks)
            hits = np.bincount(first_hits(r2, rank), minlength=picks + 1)[:picks]
            lower = _lower_bound(float(hits.sum()), a)
            upper = _upper_bound(float(upper_cov), a)
            shown.advance(2 * theta - shown.completed, note=f"bound ratio {lower / max(upper, 1e-12):.3f} of "
                                                            f"{goal:.3f} needed")
            if lower >= goal * upper:
                break
            theta *= 2
    return _Run(
        seeds=seeds,
        marginal=hits * (n / theta),
        lower=lower * n / theta,
        upper=upper * n / theta,
        num_rr_sets=2 * theta,
        mean_rr_size=(r1.nodes.size + r2.nodes.size) / (2 * theta),
        memory_bytes=r1.nbytes + r2.nbytes + inv_indptr.nbytes + sets_of.nbytes,
    )


def _hub_sentinels(graph: ICGraph, feasible: _Feasible, b: int) -> np.ndarray:
    """HIST's sentinels without full RR sets, for graphs where one full set is a sizeable share of the graph
    (supercritical cascades): the ``b`` eligible nodes of highest expected direct reach (sum of their
    out-probabilities), under the same constraints. The certificate comes from the second phase, whatever
    the sentinels; in that regime hubs are what greedy on full sets would pick first anyway."""
    return top_k(weighted_degree_scores(graph), b, candidates=feasible.eligible,
                 community=feasible.community if feasible.cap else None, max_per_community=feasible.cap)


def _affordable(min_rr_sets: int, mean_rr_size: float) -> int:
    """The floor on RR sets per collection, cut so that it visits at most :data:`RR_NODE_BUDGET` nodes at
    this mean set size: the floor buys seed quality where sets are small, never minutes or gigabytes where
    they are huge (there the certificate alone sets the size)."""
    return min(min_rr_sets, int(RR_NODE_BUDGET / max(mean_rr_size, 1.0)))


def _lower_bound(covered: float, a: float) -> float:
    """Martingale lower bound on the expected coverage of a set that covers ``covered`` independent sets."""
    root = math.sqrt(covered + 2.0 * a / 9.0) - math.sqrt(a / 2.0)
    return max(0.0, root * root - a / 18.0) if root > 0 else 0.0


def _upper_bound(covered: float, a: float) -> float:
    """Martingale upper bound on the expected coverage of the optimum, from its coverage bound ``covered``."""
    return (math.sqrt(covered + a / 2.0) + math.sqrt(a / 2.0)) ** 2


def _log_binomial(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _feasible(n: int, k: int, candidates: np.ndarray | None, community: np.ndarray | None,
              max_per_community: int) -> _Feasible:
    """Validated constraints; raises when ``k`` seeds cannot be placed."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"'k' must be a positive integer (got {k!r})")
    if candidates is None:
        eligible = np.ones(n, dtype=np.bool_)
    else:
        eligible = np.asarray(candidates)
        if eligible.shape != (n,) or eligible.dtype != np.bool_:
            raise ValueError(f"'candidates' must be a bool mask of shape ({n},) "
                             f"(got {eligible.dtype} of shape {eligible.shape})")
        eligible = np.ascontiguousarray(eligible)
    cap = int(max_per_community)
    if cap < 0:
        raise ValueError(f"'max_per_community' must be >= 0 (got {max_per_community})")
    comm = np.zeros(n, dtype=np.int64)
    if community is not None:
        community = np.asarray(community)
        if community.shape != (n,) or not np.issubdtype(community.dtype, np.integer):
            raise ValueError(f"'community' must hold an integer id per node, shape ({n},) "
                             f"(got {community.dtype} of shape {community.shape})")
        if cap:
            comm = np.unique(community, return_inverse=True)[1].astype(np.int64).reshape(n)
    elif cap:
        raise ValueError("'max_per_community' needs 'community'")
    num_eligible = int(eligible.sum())
    if k > num_eligible:
        raise ValueError(f"'k' = {k} exceeds the {num_eligible} eligible candidates")
    if cap:
        room = int(np.minimum(np.bincount(comm[eligible], minlength=int(comm.max(initial=0)) + 1), cap).sum())
        if k > room:
            raise ValueError(f"'k' = {k} exceeds the {room} seeds that {max_per_community} per community allows")
    return _Feasible(eligible, comm, cap)


# ------------------------------------------------------------------------------------------------ kernels


@njit(cache=True, nogil=True)
def _greedy(indptr, nodes, inv_indptr, sets_of, picks, k, eligible, community, cap, preselected):  # pragma: no cover
    """Greedy max coverage: ``picks`` eligible seeds, ``preselected`` first, at most ``cap`` per community
    (``cap = 0``: no cap). Returns them and the smallest upper bound on the coverage of ``k`` feasible seeds.

    Coverage counts of eligible nodes sit in buckets sorted ascending (``order``; bucket ``d`` is
    ``order[start[d]:start[d + 1]]``): a decrement swaps the node to the front of its bucket and moves the
    boundary, O(1); the best nodes are at the end of ``order``."""
    n = eligible.size
    cov = np.zeros(n, dtype=np.int64)
    for v in range(n):
        if eligible[v]:
            cov[v] = inv_indptr[v + 1] - inv_indptr[v]
    start = np.zeros(cov.max() + 2, dtype=np.int64)
    for v in range(n):
        if eligible[v]:
            start[cov[v] + 1] += 1
    start = np.cumsum(start)
    m = start[-1]
    order = np.empty(m, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    fill = start.copy()
    for v in range(n):
        if eligible[v]:
            pos[v] = fill[cov[v]]
            order[pos[v]] = v
            fill[cov[v]] += 1

    covered = np.zeros(indptr.size - 1, dtype=np.bool_)
    selected = np.zeros(n, dtype=np.bool_)
    tally = np.zeros(community.max() + 1, dtype=np.int64)
    trial = np.zeros_like(tally)
    taken = np.empty(k, dtype=np.int64)
    seeds = np.empty(picks, dtype=np.int64)
    total = 0
    best_bound = indptr.size - 1
    for i in range(picks + 1):
        if i >= preselected.size:
            best_bound = min(best_bound, total + _top_marginals(order, cov, k, community, cap, trial, taken))
        if i == picks:
            break
        u = -1
        if i < preselected.size:
            u = preselected[i]
        else:
            for j in range(m - 1, -1, -1):
                v = order[j]
                if not selected[v] and (cap == 0 or tally[community[v]] < cap):
                    u = v
                    break
        for t in range(inv_indptr[u], inv_indptr[u + 1]):
            r = sets_of[t]
            if covered[r]:
                continue
            covered[r] = True
            total += 1
            for j in range(indptr[r], indptr[r + 1]):
                w = nodes[j]
                if eligible[w]:
                    d = cov[w]
                    front = start[d]
                    x = order[front]
                    order[front], order[pos[w]] = w, x
                    pos[x], pos[w] = pos[w], front
                    start[d] = front + 1
                    cov[w] = d - 1
        selected[u] = True
        tally[community[u]] += 1
        seeds[i] = u
    return seeds, best_bound


@njit(cache=True, nogil=True)
def _top_marginals(order, cov, k, community, cap, trial, taken):  # pragma: no cover - compiled
    """Largest sum of ``k`` marginal coverages with at most ``cap`` per community: greedy is exact for a
    modular objective over a partition matroid."""
    total = 0
    count = 0
    j = order.size - 1
    while j >= 0 and count < k:
        v = order[j]
        j -= 1
        if cov[v] == 0:
            break
        if cap > 0:
            c = community[v]
            if trial[c] >= cap:
                continue
            trial[c] += 1
            taken[count] = c
        total += cov[v]
        count += 1
    if cap > 0:
        for t in range(count):
            trial[taken[t]] = 0
    return total
