import itertools

import numpy as np
import pytest
from scipy import stats

from sharerank.models.seeding import rrsets
from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.rrsets import CHUNK, RRSampler, RRSets, first_hits, invert

# Node 3 has three in-arcs of unequal probability (SUBSIM's sort, skip and thinning all matter), node 1 two
# equal ones (skips only), 1 -> 2 is certain, 5 is isolated; 8 arcs in all.
TINY = (
    np.array([0, 1, 2, 4, 0, 3, 2, 4]),
    np.array([1, 2, 3, 3, 3, 4, 0, 1]),
    np.array([0.5, 1.0, 0.9, 0.3, 0.05, 0.6, 0.2, 0.5]),
    6,
)


def exact_spread(src: np.ndarray, dst: np.ndarray, prob: np.ndarray, n: int, seeds: list[int]) -> float:
    """Expected number of nodes reached from ``seeds``, summed over all 2^arcs live-edge worlds."""
    total = 0.0
    for live in itertools.product((False, True), repeat=src.size):
        weight = float(np.prod(np.where(live, prob, 1.0 - prob)))
        reached, frontier = set(seeds), list(seeds)
        while frontier:
            u = frontier.pop()
            for a in np.flatnonzero(np.asarray(live) & (src == u)):
                if dst[a] not in reached:
                    reached.add(int(dst[a]))
                    frontier.append(int(dst[a]))
        total += weight * len(reached)
    return total


def hit_fraction(sets: RRSets, seeds: list[int], n: int) -> float:
    rank = np.full(n, len(seeds), dtype=np.int64)
    rank[seeds] = np.arange(len(seeds))
    return float((first_hits(sets, rank) < len(seeds)).mean())


@pytest.mark.parametrize("sampler", ["subsim", "standard"])
def test_rr_estimate_matches_exact_spread(sampler: str) -> None:
    src, dst, prob, n = TINY
    graph = ICGraph.from_arcs(src, dst, prob, num_nodes=n)
    num = 200_000
    sets = RRSampler(graph, sampler, seed=3).sample(num)
    for seeds in ([0], [1], [3], [4], [5], [0, 4], [2, 5], [1, 3, 4]):
        exact = exact_spread(src, dst, prob, n, seeds)
        estimate = n * hit_fraction(sets, seeds, n)
        se = n * np.sqrt((exact / n) * (1 - exact / n) / num)
        assert abs(estimate - exact) <= 5 * se + 1e-9 * max(1.0, exact), (seeds, estimate, exact)


@pytest.mark.parametrize("sampler", ["subsim", "standard"])
def test_each_in_arc_is_live_with_its_own_probability_independently(sampler: str) -> None:
    # Arcs j -> 0 only: a set rooted at 0 holds j exactly when arc j is live.
    prob = np.array([0.9, 0.7, 0.5, 0.5, 0.3, 0.1, 0.05])
    graph = ICGraph.from_arcs(np.arange(1, 8), np.zeros(7, dtype=int), prob, num_nodes=8)
    sets = RRSampler(graph, sampler, seed=11).sample(400_000)
    rooted = np.flatnonzero(sets.nodes[sets.indptr[:-1]] == 0)
    live = np.zeros((rooted.size, 8), dtype=bool)
    for offset in range(8):  # a set has at most 8 nodes
        at = sets.indptr[rooted] + offset
        ok = at < sets.indptr[rooted + 1]
        live[np.flatnonzero(ok), sets.nodes[at[ok]]] = True
    freq = live[:, 1:].mean(axis=0)
    se = np.sqrt(prob * (1 - prob) / rooted.size)
    assert np.all(np.abs(freq - prob) <= 5 * se + 1e-9), (freq, prob)
    for a, b in ((0, 4), (2, 3), (4, 6)):
        joint = (live[:, a + 1] & live[:, b + 1]).mean()
        expected = prob[a] * prob[b]
        assert abs(joint - expected) <= 5 * np.sqrt(expected * (1 - expected) / rooted.size) + 1e-9, (a, b)


def test_truncated_sets_estimate_supersets_of_the_sentinels_exactly() -> None:
    src, dst, prob, n = TINY
    graph = ICGraph.from_arcs(src, dst, prob, num_nodes=n)
    sentinels = np.zeros(n, dtype=bool)
    sentinels[[4]] = True
    num = 200_000
    full = RRSampler(graph, seed=5).sample(num)
    cut = RRSampler(graph, seed=5).sample(num, sentinels=sentinels)
    assert cut.mean_size() < full.mean_size()
    hit = np.flatnonzero(sentinels[cut.nodes[cut.indptr[:-1]]])
    assert np.all(np.diff(cut.indptr)[hit] == 1)  # a set that reached a sentinel is just that sentinel
    for seeds in ([4], [4, 0], [4, 2], [4, 1, 3]):
        exact = exact_spread(src, dst, prob, n, seeds)
        se = n * np.sqrt((exact / n) * (1 - exact / n) / num)
        assert abs(n * hit_fraction(cut, seeds, n) - exact) <= 5 * se + 1e-9 * max(1.0, exact), seeds


def random_graph(n: int, arcs: int, seed: int, scale: float = 1.0) -> ICGraph:
    rng = np.random.default_rng(seed)
    prob = np.minimum(1.0, scale * rng.choice([0.05, 0.1, 0.3, 0.6, 1.0], size=arcs) * rng.random(arcs))
    return ICGraph.from_arcs(rng.integers(0, n, arcs), rng.integers(0, n, arcs), prob, num_nodes=n)


def test_subsim_and_standard_draw_the_same_set_sizes() -> None:
    graph = random_graph(300, 1500, seed=0)
    sizes = {s: np.diff(RRSampler(graph, s, seed=1).sample(20_000).indptr) for s in rrsets.SAMPLERS}
    assert stats.ks_2samp(sizes["subsim"], sizes["standard"]).pvalue > 1e-3
    # The same test tells apart a graph whose probabilities are 20% lower.
    weaker = np.diff(RRSampler(random_graph(300, 1500, seed=0, scale=0.8), "standard", seed=1).sample(20_000).indptr)
    assert stats.ks_2samp(sizes["subsim"], weaker).pvalue < 1e-3


@pytest.mark.parametrize("parallel", [False, True])
def test_subsim_rows_point_at_in_arcs_sorted_descending(parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if parallel:
        monkeypatch.setattr(rrsets, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(2)
    src, dst = rng.integers(0, 50, 400), rng.integers(0, 50, 400)
    in_degree = np.bincount(dst, minlength=50)
    prob = np.where(dst % 2 == 0, 1.0 / in_degree[dst], rng.random(400))  # even nodes: all in-arcs equal
    graph = ICGraph.from_arcs(src, dst, prob, num_nodes=50)
    sampler = RRSampler(graph, "subsim")
    for v in range(graph.num_nodes):
        lo, hi = graph.in_indptr[v], graph.in_indptr[v + 1]
        arcs = sorted(zip(graph.in_indices[lo:hi], graph.in_prob[lo:hi], strict=True))
        start, degree, top = sampler.rows[v]
        assert degree == hi - lo and abs(top) == graph.in_prob[lo:hi].max(initial=0.0)
        if top >= 0:  # all equal: read in place
            assert start == lo and np.all(graph.in_prob[lo:hi] == top)
        else:
            at = slice(int(start), int(start + degree))
            assert np.all(np.diff(sampler.sorted_prob[at]) <= 0)
            assert sorted(zip(sampler.sorted_src[at], sampler.sorted_prob[at], strict=True)) == arcs
    assert sampler.sorted_prob.size == int(sampler.rows[sampler.rows[:, 2] < 0, 1].sum()) > 0


def test_weighted_cascade_needs_no_sorted_copy() -> None:
    graph = ICGraph.from_arcs(np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2]), np.array([1.0, 0.5, 1.0, 0.5]))
    assert RRSampler(graph).sorted_prob.size == 0


def sets_equal(a: RRSets, b: RRSets) -> bool:
    return np.array_equal(a.indptr, b.indptr) and np.array_equal(a.nodes, b.nodes)


@pytest.mark.parametrize("sampler", ["subsim", "standard"])
def test_sampling_is_deterministic_and_worker_independent(sampler: str) -> None:
    graph = random_graph(400, 3000, seed=4)
    base = RRSampler(graph, sampler, seed=9).sample(1000, stream=1)
    assert sets_equal(base, RRSampler(graph, sampler, seed=9).sample(1000, stream=1))
    assert not sets_equal(base, RRSampler(graph, sampler, seed=10).sample(1000, stream=1))
    assert not sets_equal(base, RRSampler(graph, sampler, seed=9).sample(1000, stream=2))
    rr = RRSampler(graph, sampler, seed=9)
    key = np.uint64(int(rrsets._mix(np.uint64(9))) ^ 1)
    arcs = (graph.in_indptr, graph.in_indices, graph.in_prob, rr.rows, rr.sorted_src, rr.sorted_prob)
    args = (arcs, graph.num_nodes, 1000, 0, key, sampler == "subsim", np.zeros(0, dtype=bool), False)
    for workers in (1, 2, 3, 7):  # the threaded kernel, whatever the number of workers
        assert sets_equal(base, RRSets(*rrsets._sample_parallel(*args, workers)))


def test_extending_a_collection_continues_the_stream() -> None:
    graph = random_graph(100, 500, seed=6)
    rr = RRSampler(graph, seed=2)
    whole = rr.sample(3 * CHUNK)
    assert sets_equal(whole, rr.sample(CHUNK).concat(rr.sample(2 * CHUNK, first=CHUNK)))
    assert len(whole) == 3 * CHUNK and whole.indptr[-1] == whole.nodes.size


def test_sets_hold_distinct_nodes_root_first() -> None:
    graph = random_graph(60, 600, seed=7)
    sets = RRSampler(graph, seed=1).sample(500)
    for i in range(len(sets)):
        members = sets.nodes[sets.indptr[i]:sets.indptr[i + 1]]
        assert members.size >= 1 and np.unique(members).size == members.size
    assert sets.nodes.dtype == np.int32 and sets.indptr.dtype == np.int64


@pytest.mark.parametrize("parallel", [False, True])
def test_invert_matches_a_loop(parallel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if parallel:
        monkeypatch.setattr(rrsets, "PARALLEL_MIN_WORK", 0)
    graph = random_graph(80, 500, seed=8)
    sets = RRSampler(graph, seed=3).sample(700)
    indptr, sets_of = invert(sets, graph.num_nodes)
    expected = [[] for _ in range(graph.num_nodes)]
    for i in range(len(sets)):
        for v in sets.nodes[sets.indptr[i]:sets.indptr[i + 1]]:
            expected[v].append(i)
    for v in range(graph.num_nodes):
        assert sets_of[indptr[v]:indptr[v + 1]].tolist() == expected[v]


def test_sampler_errors() -> None:
    graph = random_graph(10, 20, seed=0)
    with pytest.raises(ValueError, match="sampler"):
        RRSampler(graph, "fast")
    with pytest.raises(ValueError, match="sentinels"):
        RRSampler(graph).sample(10, sentinels=np.zeros(3, dtype=bool))
    assert len(RRSampler(graph).sample(0)) == 0
