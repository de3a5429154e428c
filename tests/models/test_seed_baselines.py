"""Baseline seed scores against hand-computed and dense references, and top_k's constraints against a
naive selection loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharerank.models.seeding.baselines import out_degree_scores, pagerank_scores, top_k, weighted_degree_scores
from sharerank.models.seeding.ic_graph import ICGraph


def naive_top_k(scores, k, candidates, community, cap) -> list[int]:
    taken: dict[int, int] = {}
    chosen = []
    for node in sorted(range(len(scores)), key=lambda v: (-scores[v], v)):
        if candidates is not None and not candidates[node]:
            continue
        if cap and taken.get(community[node], 0) >= cap:
            continue
        taken[community[node]] = taken.get(community[node], 0) + 1
        chosen.append(node)
    return chosen[:k]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_top_k_matches_a_naive_loop(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 30))
    scores = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=np.float64)
    candidates = data.draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n).map(np.array))
    community = np.array(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    cap = data.draw(st.integers(0, 3))
    k = data.draw(st.integers(0, n))
    expected = naive_top_k(scores, n, candidates, community, cap)
    if len(expected) < k:
        with pytest.raises(ValueError, match="eligible"):
            top_k(scores, k, candidates=candidates, community=community, max_per_community=cap)
        return
    chosen = top_k(scores, k, candidates=candidates, community=community, max_per_community=cap)
    assert chosen.tolist() == expected[:k]
    if cap:
        assert np.bincount(community[chosen], minlength=5).max(initial=0) <= cap


def test_top_k_by_hand() -> None:
    scores = np.array([1.0, 5.0, 5.0, 3.0, 4.0])
    assert top_k(scores, 3).tolist() == [1, 2, 4]  # tie between 1 and 2: lower id first
    community = np.array([0, 1, 1, 0, 1])
    assert top_k(scores, 2, community=community, max_per_community=1).tolist() == [1, 3]
    mask = np.array([True, False, True, True, True])
    assert top_k(scores, 2, candidates=mask, community=community, max_per_community=1).tolist() == [2, 3]
    with pytest.raises(ValueError, match="only 2 nodes"):
        top_k(scores, 3, community=community, max_per_community=1)
    with pytest.raises(ValueError, match="community id per node"):
        top_k(scores, 1, max_per_community=1)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([np.nan]), 1)


def test_degree_scores_by_hand() -> None:
    graph = ICGraph.from_arcs(np.array([0, 0, 2]), np.array([1, 2, 1]), np.array([0.5, 0.25, 0.5]), num_nodes=4)
    assert out_degree_scores(graph).tolist() == [2.0, 0.0, 1.0, 0.0]
    assert weighted_degree_scores(graph).tolist() == [0.75, 0.0, 0.5, 0.0]


def dense_reversed_pagerank(graph: ICGraph, damping: float) -> np.ndarray:
    """Solves r = d (P^T r + dangling mass / n) + (1 - d) / n directly, P the reversed walk."""
    n = graph.num_nodes
    weight = np.zeros((n, n))
    for u in range(n):
        for a in range(graph.out_indptr[u], graph.out_indptr[u + 1]):
            weight[graph.out_indices[a], u] = graph.out_prob[a]  # reversed: v -> u
    total = weight.sum(axis=1)
    dangling = total == 0
    walk = np.where(dangling[:, None], 1.0 / n, weight / np.where(dangling, 1.0, total)[:, None])
    return np.linalg.solve(np.eye(n) - damping * walk.T, np.full(n, (1 - damping) / n))


@pytest.mark.parametrize("damping", [0.5, 0.85])
def test_pagerank_matches_a_dense_reference(damping: float) -> None:
    rng = np.random.default_rng(5)
    graph = ICGraph.from_arcs(rng.integers(0, 9, 30), rng.integers(0, 9, 30), rng.uniform(0.05, 1, 30),
                              num_nodes=10)  # node 9 has no arcs: dangling in both directions
    scores = pagerank_scores(graph, damping)
    np.testing.assert_allclose(scores, dense_reversed_pagerank(graph, damping), atol=1e-9)
    assert scores.sum() == pytest.approx(1.0)


def test_pagerank_favours_nodes_that_point_to_many() -> None:
    graph = ICGraph.from_arcs(np.array([0, 0, 0, 1]), np.array([1, 2, 3, 2]), np.full(4, 0.5))
    assert int(np.argmax(pagerank_scores(graph))) == 0
