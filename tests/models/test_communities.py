"""Label propagation on planted communities, its id numbering, isolated nodes and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sharerank.models.seeding.communities import communities_of, label_propagation
from sharerank.models.seeding.ic_graph import ICGraph


def two_cliques(size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Arcs u < v of two cliques ``0..size-1`` and ``size..2size-1`` joined by the edge (0, size)."""
    block = [(u, v) for u in range(size) for v in range(u + 1, size)]
    arcs = np.array(block + [(u + size, v + size) for u, v in block] + [(0, size)])
    return arcs[:, 0], arcs[:, 1]


def symmetric_csr(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    a = sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(n, n))
    a = (a + a.T).tocsr()
    return a.indptr, a.indices


@pytest.mark.parametrize("seed", range(5))
def test_two_cliques_joined_by_one_edge(seed: int) -> None:
    src, dst = two_cliques()
    labels = label_propagation(*symmetric_csr(src, dst, 19), seed=seed)  # node 18: isolated
    assert labels.dtype == np.int32
    assert len(set(labels[:8])) == 1 and len(set(labels[8:16])) == 1 and labels[0] != labels[8]
    assert labels.tolist() == [0] * 8 + [1] * 8 + [2, 3, 4]  # 16, 17, 18 alone; equal sizes: lower id first


def test_communities_of_reads_arcs_as_undirected() -> None:
    src, dst = two_cliques(6)
    graph = ICGraph.from_arcs(src, dst, np.full(src.size, 0.1), num_nodes=14)  # arcs in one direction only
    labels = communities_of(graph, seed=3)
    assert labels.tolist() == [0] * 6 + [1] * 6 + [2, 3]


def test_ids_are_dense_and_ordered_by_size() -> None:
    # A 5-clique (5..9), a triangle (0, 1, 2), a pair (3, 4) and an isolated node 10.
    edges = [(u, v) for u in range(5, 10) for v in range(u + 1, 10)] + [(0, 1), (1, 2), (0, 2), (3, 4)]
    src, dst = np.array(edges).T
    labels = label_propagation(*symmetric_csr(src, dst, 11))
    assert labels.tolist() == [1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 3]


def test_deterministic_given_seed() -> None:
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 300, 900), rng.integers(0, 300, 900)
    keep = src != dst
    indptr, indices = symmetric_csr(src[keep], dst[keep], 300)
    first = label_propagation(indptr, indices, seed=4)
    assert np.array_equal(first, label_propagation(indptr, indices, seed=4))
    assert first.min() == 0 and set(first.tolist()) == set(range(first.max() + 1))
    assert np.all(np.diff(np.bincount(first)) <= 0)


def test_bad_csr_is_rejected() -> None:
    with pytest.raises(ValueError, match="CSR"):
        label_propagation(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        label_propagation(np.array([0, 1]), np.array([3]))
