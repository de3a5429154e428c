"""Independent checks of a seed set's expected spread under the independent cascade (IC) model.

Every seeding algorithm reports its own estimate; these tools measure a seed set from scratch, so an
algorithm can be compared with baselines and with the reference below on the same footing:

- :func:`monte_carlo_spread`: forward simulation with a confidence interval, for every prefix of the seeds.
- :func:`celf_greedy`: CELF lazy greedy over Monte Carlo gains (Leskovec et al., KDD'07,
  https://doi.org/10.1145/1281192.1281239), the textbook reference on small graphs.
- :func:`exact_spread`: enumeration of live-edge worlds, the ground truth on tiny graphs for tests.

The spread counts the seeds themselves (standard IC).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from statistics import NormalDist

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from scipy.sparse.csgraph import breadth_first_order

from sharerank.models.seeding.ic_graph import ICGraph

MAX_EXACT_ARCS = 20


@dataclass(frozen=True)
class SpreadEstimate:
    """Monte Carlo estimate of the expected spread of a seed list.

    Args:
        mean, ci_low, ci_high, std_error: Of the whole seed set; the interval is the normal approximation
            of the mean at the requested confidence.
        runs: Simulated worlds.
        prefix_mean, prefix_ci_low, prefix_ci_high: ``[j]`` is the same for the first ``j + 1`` seeds, so
            ``prefix_mean[-1] == mean`` and ``np.diff(prefix_mean)`` are the seeds' marginal gains.
    """

    mean: float
    ci_low: float
    ci_high: float
    std_error: float
    runs: int
    prefix_mean: np.ndarray
    prefix_ci_low: np.ndarray
    prefix_ci_high: np.ndarray


def monte_carlo_spread(graph: ICGraph, seeds: np.ndarray, *, runs: int = 10_000, seed: int = 0,
                       confidence: float = 0.95) -> SpreadEstimate:
    """Expected spread of ``seeds`` and of each prefix of it, from ``runs`` forward IC simulations.

    Each run activates the seeds one at a time, in order, and counts what each one's cascade adds to the
    nodes already active. The live-edge world is fixed within a run, so the running totals are exact
    spreads of every prefix in that world, and one simulation serves all prefixes. Run ``r`` draws from
    its own random stream derived from ``(seed, r)``: the result depends on ``seed`` only, not on threads.

    Raises:
        ValueError: a seed is out of range or repeated, ``runs < 2`` or ``confidence`` not in (0, 1).
    """
    seeds = _check_nodes(graph, seeds)
    if runs < 2:
        raise ValueError("runs must be at least 2 (a confidence interval needs a variance)")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    if seeds.size == 0:
        empty = np.zeros(0)
        return SpreadEstimate(0.0, 0.0, 0.0, 0.0, runs, empty, empty, empty)
    total, total_sq = _prefix_moments(graph.out_indptr, graph.out_indices, graph.out_prob, seeds, runs,
                                      np.uint64(seed % 2**64), _num_chunks(runs))
    mean = total / runs
    variance = np.maximum(total_sq - total.astype(np.float64) ** 2 / runs, 0.0) / (runs - 1)
    std_error = np.sqrt(variance / runs)
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * std_error
    return SpreadEstimate(float(mean[-1]), float(mean[-1] - half[-1]), float(mean[-1] + half[-1]),
                          float(std_error[-1]), runs, mean, mean - half, mean + half)


def celf_greedy(graph: ICGraph, k: int, *, runs: int = 1000, candidates: np.ndarray | None = None,
                seed: int = 0) -> np.ndarray:
    """``k`` seeds in pick order by CELF lazy greedy, each marginal gain a Monte Carlo estimate.

    For small graphs only (a few thousand nodes): the first round simulates ``runs`` worlds per candidate
    and every later evaluation re-simulates the chosen set. Submodularity lets CELF re-evaluate only the
    candidate on top of the queue. Every estimate uses the same worlds (common random numbers: run ``r``
    always draws from the stream of ``(seed, r)``), so gains of different candidates are compared on the
    same worlds, and the chosen set's part of each world is identical across evaluations. Ties go to
    the lower node id.

    Args:
        candidates: Node ids allowed as seeds (default: all).

    Raises:
        ValueError: ``k`` exceeds the candidates, or a candidate is out of range or repeated.
    """
    all_nodes = np.arange(graph.num_nodes)
    pool = _check_nodes(graph, all_nodes if candidates is None else candidates, "candidates")
    if not 0 <= k <= pool.size:
        raise ValueError(f"k must lie in [0, {pool.size}] (the number of candidates), got {k}")
    if runs < 1:
        raise ValueError("runs must be positive")
    arcs = (graph.out_indptr, graph.out_indices, graph.out_prob)
    stream, chunks = np.uint64(seed % 2**64), _num_chunks(runs)
    chosen = np.zeros(0, dtype=np.int32)
    gains = _marginal_gains(*arcs, chosen, pool, runs, stream, chunks)
    # Heap of (-gain, node, size of the chosen set the gain was measured against).
    queue = [(-int(g), int(v), 0) for g, v in zip(gains, pool, strict=True)]
    heapq.heapify(queue)
    while chosen.size < k:
        _, node, measured_at = heapq.heappop(queue)
        if measured_at == chosen.size:
            chosen = np.append(chosen, np.int32(node))  # int32: the kernels' node type
        else:
            gain = _marginal_gains(*arcs, chosen, np.array([node], dtype=np.int32), runs, stream, chunks)[0]
            heapq.heappush(queue, (-int(gain), node, chosen.size))
    return chosen.astype(np.int64)


def exact_spread(graph: ICGraph, seeds: np.ndarray) -> float:
    """Exact expected spread by summing over all ``2^arcs`` live-edge worlds: the ground truth for tests.

    Raises:
        ValueError: the graph has more than ``MAX_EXACT_ARCS`` (20) arcs, or the seeds are invalid.
    """
    seeds = _check_nodes(graph, seeds)
    if graph.num_arcs > MAX_EXACT_ARCS:
        raise ValueError(f"exact_spread enumerates 2^arcs worlds: at most {MAX_EXACT_ARCS} arcs, "
                         f"got {graph.num_arcs}")
    return float(_exact(graph.out_indptr, graph.out_indices, graph.out_prob, seeds))


def induced_subgraph(graph: ICGraph, nodes: np.ndarray) -> tuple[ICGraph, np.ndarray]:
    """The graph on ``nodes`` with the arcs among them; node ``i`` of it is ``mapping[i]`` of ``graph``
    (``mapping`` is ``nodes`` as ``int64``, in the given order)."""
    mapping = _check_nodes(graph, nodes, "nodes").astype(np.int64)
    new_id = np.full(graph.num_nodes, -1, dtype=np.int64)
    new_id[mapping] = np.arange(mapping.size)
    src = new_id[np.repeat(np.arange(graph.num_nodes), graph.out_degree())]
    dst = new_id[graph.out_indices]
    keep = (src >= 0) & (dst >= 0)
    return ICGraph.from_arcs(src[keep], dst[keep], graph.out_prob[keep], num_nodes=mapping.size), mapping


def bfs_ball(graph: ICGraph, root: int, size: int) -> np.ndarray:
    """The first ``size`` nodes reached by breadth-first search from ``root`` over arcs in either
    direction: a connected "small subgraph" for :func:`induced_subgraph` (fewer if the component is
    smaller)."""
    n = graph.num_nodes
    arcs = sp.csr_matrix((graph.out_prob, graph.out_indices, graph.out_indptr), shape=(n, n))
    return breadth_first_order(arcs, root, directed=False, return_predecessors=False)[:size].astype(np.int64)


def _check_nodes(graph: ICGraph, nodes: np.ndarray, what: str = "seeds") -> np.ndarray:
    nodes = np.asarray(nodes)
    if nodes.ndim != 1 or (nodes.size and not np.issubdtype(nodes.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D array of node ids")
    if nodes.size and (nodes.min() < 0 or nodes.max() >= graph.num_nodes):
        raise ValueError(f"{what} must lie in [0, {graph.num_nodes})")
    if np.unique(nodes).size != nodes.size:
        raise ValueError(f"{what} must not repeat")
    return nodes.astype(np.int32)


def _num_chunks(runs: int) -> int:
    # Several chunks per thread balance the load; the result does not depend on the count.
    return min(runs, 8 * numba.get_num_threads())


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def _splitmix(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _run_stream(seed, run):
    """Start of run ``run``'s stream: a hash of (seed, run), so runs are independent of chunking."""
    return _splitmix(_splitmix(seed + _GOLDEN) + np.uint64(run))


@njit(cache=True, nogil=True)
def _cascade(indptr, indices, prob, seeds, state, visited, stamp, queue, totals):
    """One IC world: activates ``seeds`` in order; ``totals[j]`` = active nodes after seed ``j``.

    ``visited[v] == stamp`` marks active nodes (no reset between runs). An arc's coin is tossed once, when
    its source activates, and not at all when its target is already active (its outcome cannot matter).
    Returns the stream state (splitmix64: a Weyl step, then the mix)."""
    head = tail = 0
    for j in range(seeds.size):
        s = seeds[j]
        if visited[s] != stamp:
            visited[s] = stamp
            queue[tail] = s
            tail += 1
            while head < tail:
                u = queue[head]
                head += 1
                for a in range(indptr[u], indptr[u + 1]):
                    v = indices[a]
                    if visited[v] != stamp:
                        state += _GOLDEN
                        if (_splitmix(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0) < prob[a]:
                            visited[v] = stamp
                            queue[tail] = v
                            tail += 1
        totals[j] = tail
    return state


@njit(parallel=True, cache=True, nogil=True)
def _prefix_moments(indptr, indices, prob, seeds, runs, seed, chunks):
    """Sums over runs of each prefix's spread and of its square (integers: exact, order-independent)."""
    n, k = indptr.size - 1, seeds.size
    total = np.zeros((chunks, k), dtype=np.int64)
    total_sq = np.zeros((chunks, k), dtype=np.int64)
    for c in prange(chunks):
        visited = np.zeros(n, dtype=np.int64)
        queue = np.empty(n, dtype=np.int32)
        totals = np.empty(k, dtype=np.int64)
        for r in range(c * runs // chunks, (c + 1) * runs // chunks):
            _cascade(indptr, indices, prob, seeds, _run_stream(seed, r), visited, r + 1, queue, totals)
            for j in range(k):
                total[c, j] += totals[j]
                total_sq[c, j] += totals[j] * totals[j]
    return total.sum(axis=0), total_sq.sum(axis=0).astype(np.float64)


@njit(parallel=True, cache=True, nogil=True)
def _marginal_gains(indptr, indices, prob, chosen, candidates, runs, seed, chunks):
    """Per candidate, the total over runs of the nodes it adds on top of ``chosen`` (same worlds for all)."""
    n, m = indptr.size - 1, chosen.size
    gains = np.zeros((candidates.size, chunks), dtype=np.int64)
    for task in prange(candidates.size * chunks):
        i, c = task // chunks, task % chunks
        seeds = np.empty(m + 1, dtype=np.int32)
        seeds[:m] = chosen
        seeds[m] = candidates[i]
        visited = np.zeros(n, dtype=np.int64)
        queue = np.empty(n, dtype=np.int32)
        totals = np.empty(m + 1, dtype=np.int64)
        for r in range(c * runs // chunks, (c + 1) * runs // chunks):
            _cascade(indptr, indices, prob, seeds, _run_stream(seed, r), visited, r + 1, queue, totals)
            gains[i, c] += totals[m] - (totals[m - 1] if m else 0)
    return gains.sum(axis=1)


@njit(cache=True, nogil=True)
def _exact(indptr, indices, prob, seeds):
    n, m = indptr.size - 1, indices.size
    visited = np.zeros(n, dtype=np.int64)
    queue = np.empty(n, dtype=np.int32)
    expected = 0.0
    for world in range(1 << m):
        weight = 1.0
        for a in range(m):
            weight *= prob[a] if (world >> a) & 1 else 1.0 - prob[a]
        if weight == 0.0:
            continue
        stamp = world + 1
        head = tail = 0
        for s in seeds:
            if visited[s] != stamp:
                visited[s] = stamp
                queue[tail] = s
                tail += 1
        while head < tail:
            u = queue[head]
            head += 1
            for a in range(indptr[u], indptr[u + 1]):
                v = indices[a]
                if (world >> a) & 1 and visited[v] != stamp:
                    visited[v] = stamp
                    queue[tail] = v
                    tail += 1
        expected += weight * tail
    return expected
