"""Monte Carlo spread against exact enumeration on tiny graphs, its confidence interval's coverage, prefix
spreads, CELF on graphs with an obvious answer, and the subgraph helpers."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from sharerank.models.seeding.ic_graph import ICGraph
from sharerank.models.seeding.spread import (
    bfs_ball,
    celf_greedy,
    exact_spread,
    induced_subgraph,
    monte_carlo_spread,
)


def tiny_graph(seed: int, n: int = 6, m: int = 12) -> ICGraph:
    rng = np.random.default_rng(seed)
    return ICGraph.from_arcs(rng.integers(0, n, m), rng.integers(0, n, m), rng.uniform(0.1, 0.9, m), num_nodes=n)


def chain(n: int, p: float = 1.0) -> ICGraph:
    return ICGraph.from_arcs(np.arange(n - 1), np.arange(1, n), np.full(n - 1, p))


ROUNDING = 1e-9
"""Relative floor of every statistical tolerance here: where all runs agree the standard error is exactly 0,
while the exact enumeration sums world probabilities and may miss the same value by an ulp or two."""


def close(estimate: float, exact: float, std_error: float, z: float = 4.0) -> bool:
    """``estimate`` within ``z`` standard errors of ``exact``, never less than rounding apart."""
    return abs(estimate - exact) <= z * std_error + ROUNDING * max(1.0, abs(exact))


def test_exact_spread_by_hand() -> None:
    graph = chain(3, 0.5)
    assert exact_spread(graph, np.array([0])) == pytest.approx(1 + 0.5 + 0.25)
    assert exact_spread(graph, np.array([0, 2])) == pytest.approx(2.5)
    assert exact_spread(graph, np.array([], dtype=np.int64)) == 0.0
    with pytest.raises(ValueError, match="at most 20 arcs"):
        exact_spread(chain(22), np.array([0]))


@pytest.mark.parametrize("graph_seed", range(5))
def test_monte_carlo_matches_exact(graph_seed: int) -> None:
    graph = tiny_graph(graph_seed)
    seeds = np.random.default_rng(graph_seed).choice(graph.num_nodes, 2, replace=False)
    estimate = monte_carlo_spread(graph, seeds, runs=4000, seed=graph_seed)
    assert close(estimate.mean, exact_spread(graph, seeds), estimate.std_error)
    # The first prefix is the first seed alone (graph 0: a seed that reaches only itself, standard error 0);
    # 4 standard errors = 4 / 1.96 half-widths of its 95% CI.
    half = (estimate.prefix_ci_high[0] - estimate.prefix_ci_low[0]) / 2
    assert close(estimate.prefix_mean[0], exact_spread(graph, seeds[:1]), half / 1.96)


def test_confidence_interval_covers_the_exact_spread() -> None:
    graph = tiny_graph(7)
    seeds = np.array([0, 3])
    exact = exact_spread(graph, seeds)
    covered = 0
    for trial in range(100):
        estimate = monte_carlo_spread(graph, seeds, runs=300, seed=trial)
        slack = ROUNDING * max(1.0, exact)
        covered += estimate.ci_low - slack <= exact <= estimate.ci_high + slack
    assert covered >= 90


def test_prefixes_are_running_totals() -> None:
    graph = tiny_graph(3, n=12, m=20)
    estimate = monte_carlo_spread(graph, np.array([5, 0, 7, 2]), runs=500)
    assert np.all(np.diff(estimate.prefix_mean) >= 0)
    assert estimate.prefix_mean[-1] == estimate.mean
    assert estimate.prefix_ci_low[-1] == estimate.ci_low and estimate.prefix_ci_high[-1] == estimate.ci_high
    assert 1.0 <= estimate.prefix_mean[0] and estimate.mean <= graph.num_nodes
    assert np.all(estimate.prefix_ci_low <= estimate.prefix_mean)


def test_deterministic_spread_has_no_error() -> None:
    estimate = monte_carlo_spread(chain(5), np.array([2, 0]), runs=50)
    assert estimate.prefix_mean.tolist() == [3.0, 5.0]  # 2 reaches 3, 4; then 0 adds itself and 1
    assert (estimate.mean, estimate.std_error, estimate.ci_low, estimate.ci_high) == (5.0, 0.0, 5.0, 5.0)
    assert monte_carlo_spread(chain(5), np.array([], dtype=np.int64)).mean == 0.0


def test_same_seed_same_estimate_whatever_the_threads() -> None:
    graph = tiny_graph(4, n=12, m=20)
    seeds = np.argsort(-graph.out_degree(), kind="stable")[:2]
    first = monte_carlo_spread(graph, seeds, runs=1000, seed=9)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = monte_carlo_spread(graph, seeds, runs=1000, seed=9)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(first.prefix_mean, single.prefix_mean)
    assert np.array_equal(first.prefix_ci_high, single.prefix_ci_high) and first.std_error == single.std_error
    assert monte_carlo_spread(graph, seeds, runs=1000, seed=10).mean != first.mean


@pytest.mark.parametrize(("seeds", "message"), [([0, 0], "repeat"), ([5], r"\[0, 5\)"), ([-1], r"\[0, 5\)"),
                                                ([[0]], "1-D"), ([0.5], "1-D")])
def test_invalid_seeds_are_rejected(seeds: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        monte_carlo_spread(chain(5), np.array(seeds))


def test_invalid_runs_and_confidence_are_rejected() -> None:
    with pytest.raises(ValueError, match="runs"):
        monte_carlo_spread(chain(5), np.array([0]), runs=1)
    with pytest.raises(ValueError, match="confidence"):
        monte_carlo_spread(chain(5), np.array([0]), confidence=1.0)


def test_celf_avoids_overlapping_hubs() -> None:
    # 0 and 4 both reach {1, 2, 3}; 5 reaches {6, 7}. Top degree picks 0 and 4 (spread 5); the optimum is
    # 0 and 5 (spread 7), and CELF must see that 4 adds only itself once 0 is chosen.
    src = np.array([0, 0, 0, 4, 4, 4, 5, 5])
    dst = np.array([1, 2, 3, 1, 2, 3, 6, 7])
    graph = ICGraph.from_arcs(src, dst, np.full(8, 1.0), num_nodes=9)
    assert celf_greedy(graph, 2, runs=10).tolist() == [0, 5]
    assert celf_greedy(graph, 3, runs=10).tolist() == [0, 5, 4]  # ties (gain 1) go to the lower id
    assert celf_greedy(graph, 2, runs=10, candidates=np.array([4, 6, 8])).tolist() == [4, 6]
    assert celf_greedy(graph, 0).size == 0
    with pytest.raises(ValueError, match="k must lie"):
        celf_greedy(graph, 4, candidates=np.array([1, 2, 3]))


def test_celf_finds_the_best_pair_under_uncertainty() -> None:
    # Two chains of probability 0.9 and a star of small probabilities: the chains' heads are the best pair.
    src = np.array([0, 1, 2, 4, 5, 6, 8, 8, 8])
    dst = np.array([1, 2, 3, 5, 6, 7, 9, 10, 11])
    prob = np.array([0.9] * 6 + [0.2] * 3)
    graph = ICGraph.from_arcs(src, dst, prob, num_nodes=12)
    assert sorted(celf_greedy(graph, 2, runs=500).tolist()) == [0, 4]


def test_induced_subgraph_keeps_arcs_among_the_nodes() -> None:
    graph = ICGraph.from_arcs(np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0]), np.array([0.1, 0.2, 0.3, 0.4]))
    sub, mapping = induced_subgraph(graph, np.array([2, 1, 3]))
    assert mapping.tolist() == [2, 1, 3] and sub.num_nodes == 3
    arcs = {(int(mapping[u]), int(mapping[v]), float(p)) for u in range(3)
            for v, p in zip(sub.out_indices[sub.out_indptr[u]:sub.out_indptr[u + 1]],
                            sub.out_prob[sub.out_indptr[u]:sub.out_indptr[u + 1]], strict=True)}
    assert arcs == {(1, 2, 0.2), (2, 3, 0.3)}
    with pytest.raises(ValueError, match="nodes must not repeat"):
        induced_subgraph(graph, np.array([1, 1]))


def test_bfs_ball_follows_arcs_both_ways() -> None:
    graph = ICGraph.from_arcs(np.array([1, 1, 3, 5]), np.array([0, 2, 2, 4]), np.full(4, 0.5))
    assert bfs_ball(graph, 0, 3).tolist() == [0, 1, 2]
    assert sorted(bfs_ball(graph, 0, 10).tolist()) == [0, 1, 2, 3]  # 4 and 5 are another component
