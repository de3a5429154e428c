r"""Random reverse-reachable (RR) sets under the independent cascade (IC) model.

An RR set is every node that reaches a uniformly random root over live arcs, each arc :math:`u \to v` live
with probability :math:`p_{uv}` independently. For any seed set :math:`S`,

.. math::
    \sigma(S) = n \cdot \Pr[S \cap R \neq \emptyset],

so the fraction of RR sets a set hits estimates its expected spread (seeds included), and seed selection
becomes maximum coverage (`Borgs et al., SODA'14 <https://arxiv.org/abs/1212.0884>`_).

Two samplers draw the live in-arcs of each node the reverse search reaches:

* ``"standard"``: one coin per in-arc.
* ``"subsim"``: subset sampling (`Guo, Wang, Wei, Chen, SIGMOD'20 "Influence Maximization Revisited: Efficient
  Reverse Reachable Set Generation with Bound Tightened" <https://doi.org/10.1145/3318464.3389740>`_). In-arcs are
  sorted by probability, descending; from position :math:`i` a geometric skip with parameter :math:`q = p_i`
  (the largest probability left) finds the next candidate :math:`j`, kept with probability :math:`p_j / q`.
  Thinning a Bernoulli(:math:`q`) sequence by :math:`p_j / q` gives each arc exactly its own
  :math:`p_j`, and restarting with the next position's probability is valid because the coins are
  memoryless, so the draw is exact; it costs :math:`O(1 + \sum_j p_j)` random numbers per node instead of
  one per in-arc (weighted cascade, all :math:`p = 1/d`: about two instead of :math:`d`).

Truncated sets (HIST, from the same paper, extended in TODS'22 <https://doi.org/10.1145/3533817>) stop as
soon as the search reaches a node of a given *sentinel* set and are then stored as that one node: every seed
set chosen afterwards contains the sentinels, so that node stands for the whole set, and the coverage of any
superset of the sentinels stays exact.

Sets are drawn in chunks of :data:`CHUNK`, each from its own random stream keyed by ``(seed, stream, index
of its first set)``; large batches spread the chunks over numba's threads, so the same call gives the same
sets on any number of threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import get_num_threads, njit, prange
from numba.typed import List

from sharerank.models.seeding.ic_graph import ICGraph

__all__ = ["CHUNK", "RRSampler", "RRSets", "first_hits", "invert"]

CHUNK = 64
"""RR sets per random stream: small enough to balance two threads on a few hundred sets."""

SAMPLERS = ("subsim", "standard")

PARALLEL_MIN_WORK = 1 << 17
"""Jobs smaller than this many nodes (or arcs) run on one thread (see :func:`_threads_for`)."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 1.0 / 9007199254740992.0


@dataclass(frozen=True)
class RRSets:
    """A collection of RR sets as CSR: set ``i`` is ``nodes[indptr[i]:indptr[i + 1]]`` (root first).

    Args:
        indptr: ``int64``, ``len(self) + 1`` offsets.
        nodes: ``int32`` node ids, distinct within a set.
    """

    indptr: np.ndarray
    nodes: np.ndarray

    def __len__(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.nodes.nbytes)

    def mean_size(self) -> float:
        return float(self.nodes.size / len(self)) if len(self) else 0.0

    def concat(self, other: RRSets) -> RRSets:
        """These sets followed by ``other``'s."""
        indptr = np.concatenate([self.indptr, other.indptr[1:] + self.indptr[-1]])
        return RRSets(indptr, np.concatenate([self.nodes, other.nodes]))

    @classmethod
    def empty(cls) -> RRSets:
        return cls(np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int32))


class RRSampler:
    """Draws RR sets from one graph.

    For SUBSIM it builds ``rows``: per node ``(first in-arc, in-degree, top probability)``, the top
    probability negated when the node's in-arcs differ. One cache line then gives a node's arcs and its skip
    parameter, and a node whose in-arcs are all equal (almost all under weighted cascade) reads only the
    source of each live arc: a third faster on a 1M-node graph, where most accesses miss the cache. Only
    nodes with unequal in-arcs get a sorted copy of them (``sorted_src``, ``sorted_prob``, where their
    ``rows`` entry points), so no graph-sized copy is made.

    Args:
        graph: The IC graph.
        sampler: ``"subsim"`` or ``"standard"``. (default: ``"subsim"``)
        seed: Seed of every random stream. (default: ``0``)
    """

    def __init__(self, graph: ICGraph, sampler: str = "subsim", seed: int = 0) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"'sampler' must be one of {SAMPLERS} (got {sampler!r})")
        self.graph = graph
        self.sampler = sampler
        self.seed = int(seed)
        self.rows = np.empty((0, 3), dtype=np.float64)
        self.sorted_src = np.empty(0, dtype=np.int32)
        self.sorted_prob = np.empty(0, dtype=np.float64)
        if sampler == "subsim":
            self._prepare(graph)
        self._sets_drawn = self._nodes_drawn = 0  # their mean size decides whether threads pay

    def _prepare(self, graph: ICGraph) -> None:
        """Fill ``rows``, then lay the unequal nodes' in-arcs out back to back and sort them there."""
        n, indptr = graph.num_nodes, graph.in_indptr
        self.rows = np.empty((n, 3), dtype=np.float64)
        threads = min(_threads_for(graph.num_arcs), max(1, n))
        if threads > 1:
            _row_tops_parallel(indptr, graph.in_prob, self.rows, threads)
        else:
            _row_tops(indptr, graph.in_prob, self.rows, 0, n)
        unequal = self.rows[:, 2] < 0
        copied = np.where(unequal, self.rows[:, 1], 0.0)
        self.rows[unequal, 0] = (np.cumsum(copied) - copied)[unequal]
        size = int(copied.sum())
        self.sorted_src = np.empty(size, dtype=np.int32)
        self.sorted_prob = np.empty(size, dtype=np.float64)
        if threads > 1:
            _sort_unequal_parallel(indptr, graph.in_indices, graph.in_prob, self.rows, self.sorted_src,
                                   self.sorted_prob, threads)
        else:
            _sort_unequal(indptr, graph.in_indices, graph.in_prob, self.rows, self.sorted_src, self.sorted_prob, 0,
                          n)

    def sample(self, num_sets: int, *, stream: int = 0, first: int = 0, sentinels: np.ndarray | None = None
               ) -> RRSets:
        """``num_sets`` RR sets, numbers ``first ..`` of random stream ``stream``.

        Args:
            num_sets: How many sets.
            stream: Which independent family of sets (selection and validation sets use different ones).
            first: Index of the first set in its stream: extending a collection by ``sample(m, first=len)``
                never repeats a set.
            sentinels: Optional ``bool`` mask of nodes where a set stops (HIST); such a set is stored as that
                one node.
        """
        n = self.graph.num_nodes
        truncate = sentinels is not None
        stop = np.zeros(0, dtype=np.bool_) if sentinels is None else np.ascontiguousarray(sentinels, np.bool_)
        if truncate and stop.shape != (n,):
            raise ValueError(f"'sentinels' must have shape ({n},) (got {stop.shape})")
        if num_sets <= 0 or n == 0:
            return RRSets.empty()
        key = np.uint64(int(_mix(np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF))) ^ (stream & 0xFFFFFFFFFFFFFFFF))
        g = self.graph
        arcs = (g.in_indptr, g.in_indices, g.in_prob, self.rows, self.sorted_src, self.sorted_prob)
        args = (arcs, n, int(num_sets), int(first), key, self.sampler == "subsim", stop, truncate)
        threads = _threads_for(num_sets * max(1.0, self._nodes_drawn / max(1, self._sets_drawn)))
        indptr, nodes = _sample_parallel(*args, threads) if threads > 1 else _sample_serial(*args)
        self._sets_drawn += num_sets
        self._nodes_drawn += nodes.size
        return RRSets(indptr, nodes)


def invert(sets: RRSets, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The node -> sets index greedy cover walks: sets containing node ``v`` are
    ``sets_of[indptr[v]:indptr[v + 1]]`` (``int64`` indptr, ``int32`` set ids, ascending)."""
    threads = min(_threads_for(sets.nodes.size), max(1, len(sets)))
    if threads > 1:
        return _invert_parallel(sets.indptr, sets.nodes, num_nodes, threads)
    return _invert_serial(sets.indptr, sets.nodes, num_nodes)


def first_hits(sets: RRSets, rank: np.ndarray) -> np.ndarray:
    """Per set, the smallest ``rank`` of its nodes (``int64``). With seeds ranked in selection order and
    other nodes ranked ``k``: the seed that covers the set first, or ``k`` when none does."""
    out = np.empty(len(sets), dtype=np.int64)
    threads = min(_threads_for(sets.nodes.size), max(1, len(sets)))
    if threads > 1:
        _first_hits_parallel(sets.indptr, sets.nodes, rank, out, threads)
    else:
        _first_hits(sets.indptr, sets.nodes, rank, 0, len(sets), out)
    return out


def _threads_for(work: float) -> int:
    """Threads to use for ``work`` nodes or arcs. Small jobs stay on the calling thread: waking numba's
    workers is microseconds on an idle machine but took 5-15 ms on this shared, loaded 2-core one."""
    return get_num_threads() if work >= PARALLEL_MIN_WORK else 1


# ------------------------------------------------------------------------------------------------ kernels


@njit(cache=True, nogil=True)
def _mix(z):  # pragma: no cover - compiled
    """SplitMix64's finaliser: a bijective scramble of a 64-bit word."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _next(state):  # pragma: no cover - compiled
    """SplitMix64 step: the new state and a uniform double in [0, 1). The state stays a local scalar (an
    array slot or a reallocating append in this loop made sampling 2.4x slower)."""
    state += _GOLDEN
    return state, np.float64(_mix(state) >> np.uint64(11)) * _TWO_M53


@njit(cache=True, nogil=True)
def _grown(buf, pos, extra):  # pragma: no cover - compiled
    """A copy of ``buf[:pos]`` with room for at least ``extra`` more (capacity doubles)."""
    bigger = np.empty(2 * buf.size + extra, dtype=buf.dtype)
    bigger[:pos] = buf[:pos]
    return bigger


@njit(cache=True, nogil=True)
def _rr_set(indptr, src, prob, rows, sorted_src, sorted_prob, n, subsim, stop, truncate, visited, stamp, state, buf,
            pos):  # pragma: no cover - compiled
    """Append one RR set to ``buf`` at ``pos`` (breadth-first from a uniform root; ``buf`` is the queue).
    Returns the buffer (reallocated when it had to grow), the new end and the RNG state."""
    if pos == buf.size:
        buf = _grown(buf, pos, 1)
    start = pos
    state, u = _next(state)
    root = min(n - 1, np.int64(u * n))
    visited[root] = stamp
    buf[pos] = root
    pos += 1
    if truncate and stop[root]:
        return buf, pos, state
    head = start
    while head < pos:
        v = buf[head]
        head += 1
        if subsim:
            i, q = np.int64(rows[v, 0]), rows[v, 2]
            hi = i + np.int64(rows[v, 1])
            equal, q = q >= 0.0, abs(q)
            arc_src = src if equal else sorted_src
        else:
            i, hi = indptr[v], indptr[v + 1]
            arc_src = src
        if buf.size - pos < hi - i:  # room for every in-neighbour
            buf = _grown(buf, pos, hi - i)
        while i < hi:
            if subsim:
                # q bounds every probability left (unequal arcs are sorted descending): skip to the next
                # candidate, keep it with probability p / q, restart from the next arc's probability.
                if q <= 0.0:
                    break
                if q < 1.0:
                    state, u = _next(state)
                    skip = np.log(1.0 - u) / np.log1p(-q)
                    if skip >= hi - i:
                        break
                    i += np.int64(skip)
                    if not equal and sorted_prob[i] < q:
                        state, u = _next(state)
                        if u * q >= sorted_prob[i]:
                            i += 1
                            if i < hi:
                                q = sorted_prob[i]
                            continue
            else:
                state, u = _next(state)
                if u >= prob[i]:
                    i += 1
                    continue
            w = arc_src[i]
            i += 1
            if subsim and not equal and i < hi:
                q = sorted_prob[i]
            if visited[w] != stamp:
                visited[w] = stamp
                buf[pos] = w
                pos += 1
                if truncate and stop[w]:
                    buf[start] = w
                    return buf, start + 1, state
    return buf, pos, state


@njit(cache=True, nogil=True)
def _draw(graph, n, first, key, subsim, stop, truncate, w, workers, sizes, chunk_at):  # pragma: no cover - compiled
    """Worker ``w`` of ``workers``: chunks ``w, w + workers, ...`` into one growing buffer, with its own visit
    stamps; fills those sets' ``sizes`` and where each chunk starts in the buffer."""
    num_sets, n_chunks = sizes.size, chunk_at.size
    visited = np.full(n, -1, dtype=np.int32)
    buf = np.empty(4096, dtype=np.int32)
    pos = 0
    for c in range(w, n_chunks, workers):
        chunk_at[c] = pos
        state = _mix(key ^ _mix(np.uint64(first + c * CHUNK)))
        for s in range(c * CHUNK, min(num_sets, (c + 1) * CHUNK)):
            start = pos
            buf, pos, state = _rr_set(*graph, n, subsim, stop, truncate, visited, s, state, buf, pos)
            sizes[s] = pos - start
    return buf, pos


@njit(cache=True, nogil=True)
def _offsets(sizes):  # pragma: no cover - compiled
    out = np.empty(sizes.size + 1, dtype=np.int64)
    out[0] = 0
    out[1:] = np.cumsum(sizes)
    return out


@njit(cache=True, nogil=True)
def _sample_serial(graph, n, num_sets, first, key, subsim, stop, truncate):  # pragma: no cover - compiled
    sizes = np.empty(num_sets, dtype=np.int64)
    chunk_at = np.empty((num_sets + CHUNK - 1) // CHUNK, dtype=np.int64)
    buf, pos = _draw(graph, n, first, key, subsim, stop, truncate, 0, 1, sizes, chunk_at)
    return _offsets(sizes), buf[:pos].copy()


@njit(parallel=True, cache=True, nogil=True)
def _sample_parallel(graph, n, num_sets, first, key, subsim, stop, truncate, threads):  # pragma: no cover - compiled
    """Workers fill their own buffers, then one parallel copy lays the chunks out in set order."""
    n_chunks = (num_sets + CHUNK - 1) // CHUNK
    workers = min(threads, n_chunks)
    sizes = np.empty(num_sets, dtype=np.int64)
    chunk_at = np.empty(n_chunks, dtype=np.int64)
    bufs = List()
    for _ in range(workers):
        bufs.append(np.empty(0, dtype=np.int32))
    for w in prange(workers):
        buf, _ = _draw(graph, n, first, key, subsim, stop, truncate, w, workers, sizes, chunk_at)
        bufs[w] = buf
    out_indptr = _offsets(sizes)
    nodes = np.empty(out_indptr[num_sets], dtype=np.int32)
    for c in prange(n_chunks):
        lo = out_indptr[c * CHUNK]
        hi = out_indptr[min(num_sets, (c + 1) * CHUNK)]
        nodes[lo:hi] = bufs[c % workers][chunk_at[c]:chunk_at[c] + hi - lo]
    return out_indptr, nodes


@njit(cache=True, nogil=True)
def _split(indptr, parts):  # pragma: no cover - compiled
    """``parts + 1`` row bounds splitting a CSR into ranges of about equal entries."""
    bounds = np.searchsorted(indptr, (np.arange(parts + 1) * indptr[-1]) // parts)
    bounds[0], bounds[parts] = 0, indptr.size - 1
    return bounds


@njit(cache=True, nogil=True)
def _row_tops(indptr, prob, rows, lo, hi):  # pragma: no cover - compiled
    """``rows[v] = (first arc, in-degree, ±top probability)`` for nodes ``lo .. hi - 1`` (see
    :class:`RRSampler`)."""
    for v in range(lo, hi):
        a, b = indptr[v], indptr[v + 1]
        top, low = 0.0, np.inf
        for i in range(a, b):
            top, low = max(top, prob[i]), min(low, prob[i])
        rows[v, 0], rows[v, 1] = a, b - a
        rows[v, 2] = top if b == a or low == top else -top


@njit(parallel=True, cache=True, nogil=True)
def _row_tops_parallel(indptr, prob, rows, threads):  # pragma: no cover - compiled
    bounds = _split(indptr, threads)
    for w in prange(threads):
        _row_tops(indptr, prob, rows, bounds[w], bounds[w + 1])


@njit(cache=True, nogil=True)
def _sort_unequal(indptr, src, prob, rows, out_src, out_prob, lo, hi):  # pragma: no cover - compiled
    """Copy the in-arcs of each node in ``lo .. hi - 1`` whose in-arcs differ to ``rows[v, 0]`` of ``out_*``,
    sorted by probability, descending (stable)."""
    for v in range(lo, hi):
        if rows[v, 2] >= 0.0:
            continue
        a, b, at = indptr[v], indptr[v + 1], np.int64(rows[v, 0])
        order = np.argsort(-prob[a:b], kind="mergesort")
        for j in range(b - a):
            out_src[at + j] = src[a + order[j]]
            out_prob[at + j] = prob[a + order[j]]


@njit(parallel=True, cache=True, nogil=True)
def _sort_unequal_parallel(indptr, src, prob, rows, out_src, out_prob, threads):  # pragma: no cover - compiled
    bounds = _split(indptr, threads)
    for w in prange(threads):
        _sort_unequal(indptr, src, prob, rows, out_src, out_prob, bounds[w], bounds[w + 1])


@njit(cache=True, nogil=True)
def _count(indptr, nodes, lo, hi, row):  # pragma: no cover - compiled
    for j in range(indptr[lo], indptr[hi]):
        row[nodes[j]] += 1


@njit(cache=True, nogil=True)
def _scatter(indptr, nodes, lo, hi, row, sets_of):  # pragma: no cover - compiled
    for s in range(lo, hi):
        for j in range(indptr[s], indptr[s + 1]):
            v = nodes[j]
            sets_of[row[v]] = s
            row[v] += 1


@njit(cache=True, nogil=True)
def _write_positions(counts):  # pragma: no cover - compiled
    """Turns per-part node counts into each part's first write position; returns the node offsets."""
    parts, n = counts.shape
    inv_indptr = np.empty(n + 1, dtype=np.int64)
    acc = 0
    for v in range(n):
        inv_indptr[v] = acc
        for w in range(parts):
            c = counts[w, v]
            counts[w, v] = acc
            acc += c
    inv_indptr[n] = acc
    return inv_indptr


@njit(cache=True, nogil=True)
def _invert_serial(indptr, nodes, n):  # pragma: no cover - compiled
    counts = np.zeros((1, n), dtype=np.int64)
    _count(indptr, nodes, 0, indptr.size - 1, counts[0])
    inv_indptr = _write_positions(counts)
    sets_of = np.empty(inv_indptr[n], dtype=np.int32)
    _scatter(indptr, nodes, 0, indptr.size - 1, counts[0], sets_of)
    return inv_indptr, sets_of


@njit(parallel=True, cache=True, nogil=True)
def _invert_parallel(indptr, nodes, n, threads):  # pragma: no cover - compiled
    """Counting sort by node over ranges of sets, one count row per range: set ids stay ascending."""
    bounds = _split(indptr, threads)
    counts = np.zeros((threads, n), dtype=np.int64)
    for w in prange(threads):
        _count(indptr, nodes, bounds[w], bounds[w + 1], counts[w])
    inv_indptr = _write_positions(counts)
    sets_of = np.empty(inv_indptr[n], dtype=np.int32)
    for w in prange(threads):
        _scatter(indptr, nodes, bounds[w], bounds[w + 1], counts[w], sets_of)
    return inv_indptr, sets_of


@njit(cache=True, nogil=True)
def _first_hits(indptr, nodes, rank, lo, hi, out):  # pragma: no cover - compiled
    for s in range(lo, hi):
        best = rank[nodes[indptr[s]]]  # sets are never empty: the root comes first
        for j in range(indptr[s] + 1, indptr[s + 1]):
            best = min(best, rank[nodes[j]])
        out[s] = best


@njit(parallel=True, cache=True, nogil=True)
def _first_hits_parallel(indptr, nodes, rank, out, threads):  # pragma: no cover - compiled
    bounds = _split(indptr, threads)
    for w in prange(threads):
        _first_hits(indptr, nodes, rank, bounds[w], bounds[w + 1], out)
