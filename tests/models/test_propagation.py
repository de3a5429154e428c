import numpy as np
import pytest
import torch

from sharerank.models.recommenders.propagation import bipartite_adjacency, spmm_symmetric


def dense_reference(users: np.ndarray, products: np.ndarray, num_users: int, num_products: int) -> np.ndarray:
    """D^-1/2 A D^-1/2 of the bipartite graph, built densely in float64 the obvious way."""
    n = num_users + num_products
    a = np.zeros((n, n))
    for u, p in zip(users, products, strict=True):
        a[u, num_users + p] = 1.0
        a[num_users + p, u] = 1.0
    deg = a.sum(axis=1)
    inv_sqrt = np.zeros(n)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def random_graph(seed: int, num_users: int, num_products: int, num_edges: int) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (num_edges,), generator=gen)
    products = torch.randint(0, num_products, (num_edges,), generator=gen)
    return users, products


def to_float64(adj: torch.Tensor) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        adj.crow_indices(), adj.col_indices(), adj.values().double(), size=adj.shape, check_invariants=True
    )


@pytest.mark.parametrize(
    ("seed", "num_users", "num_products", "num_edges"),
    [(0, 5, 7, 12), (1, 20, 9, 60), (2, 30, 40, 25), (3, 3, 3, 30)],
)
def test_bipartite_adjacency_matches_dense_reference(
    seed: int, num_users: int, num_products: int, num_edges: int
) -> None:
    # Small catalogues with many draws produce duplicates and isolated nodes alike.
    users, products = random_graph(seed, num_users, num_products, num_edges)
    adj = bipartite_adjacency(users, products, num_users, num_products)

    assert adj.layout == torch.sparse_csr
    assert adj.dtype == torch.float32
    assert adj.shape == (num_users + num_products, num_users + num_products)
    dense = adj.to_dense().numpy()
    expected = dense_reference(users.numpy(), products.numpy(), num_users, num_products)
    np.testing.assert_allclose(dense, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(dense, dense.T)


def test_bipartite_adjacency_hand_computed() -> None:
    # User 0 bought products 0 and 1, user 1 bought product 1 (twice: counts once), user 2 nothing.
    # deg(u0) = 2, deg(u1) = 1, deg(p0) = 1, deg(p1) = 2 (nodes: u0 u1 u2 p0 p1 = 0 1 2 3 4), so
    # A[u0, p0] = 1/sqrt(2*1), A[u0, p1] = 1/sqrt(2*2) = 0.5, A[u1, p1] = 1/sqrt(1*2).
    adj = bipartite_adjacency(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), 3, 2)
    r = 2**-0.5
    expected = torch.tensor(
        [
            [0, 0, 0, r, 0.5],
            [0, 0, 0, 0, r],
            [0, 0, 0, 0, 0],
            [r, 0, 0, 0, 0],
            [0.5, r, 0, 0, 0],
        ]
    )
    torch.testing.assert_close(adj.to_dense(), expected)
    assert adj.values().numel() == 6  # three distinct pairs, stored in both directions


def test_duplicates_collapse() -> None:
    users, products = random_graph(4, 10, 10, 40)
    once = bipartite_adjacency(users, products, 10, 10)
    twice = bipartite_adjacency(torch.cat([users, users]), torch.cat([products, products]), 10, 10)
    torch.testing.assert_close(twice.to_dense(), once.to_dense())
    assert twice.values().numel() == once.values().numel()


def test_isolated_nodes_have_zero_rows() -> None:
    adj = bipartite_adjacency(torch.tensor([1]), torch.tensor([2]), num_users=4, num_products=5)
    dense = adj.to_dense()
    assert torch.isfinite(dense).all()
    nonzero = dense.abs().sum(dim=1) > 0
    assert nonzero.nonzero().flatten().tolist() == [1, 4 + 2]
    assert dense[1, 6] == 1.0


def test_empty_graph() -> None:
    adj = bipartite_adjacency(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), 2, 3)
    assert adj.shape == (5, 5)
    assert adj.to_dense().abs().sum() == 0


@pytest.mark.parametrize(
    ("users", "products"),
    [([0, 3], [0, 0]), ([0, -1], [0, 0]), ([0, 0], [0, 4]), ([0], [0, 1])],
)
def test_bipartite_adjacency_rejects_bad_input(users: list[int], products: list[int]) -> None:
    with pytest.raises(ValueError):
        bipartite_adjacency(torch.tensor(users), torch.tensor(products), num_users=3, num_products=4)


def test_spmm_symmetric_forward_and_gradient_match_dense() -> None:
    users, products = random_graph(5, 12, 15, 50)
    adj = to_float64(bipartite_adjacency(users, products, 12, 15))
    dense = adj.to_dense()
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(27, 4, dtype=torch.float64, generator=gen)
    weight = torch.randn(27, 4, dtype=torch.float64, generator=gen)

    x_sparse = x.clone().requires_grad_()
    out_sparse = spmm_symmetric(adj, spmm_symmetric(adj, x_sparse))  # two layers, as in LightGCN
    (out_sparse * weight).sum().backward()

    x_dense = x.clone().requires_grad_()
    out_dense = dense @ (dense @ x_dense)
    (out_dense * weight).sum().backward()

    torch.testing.assert_close(out_sparse, out_dense)
    torch.testing.assert_close(x_sparse.grad, x_dense.grad)


def test_spmm_symmetric_gradcheck() -> None:
    users, products = random_graph(7, 6, 5, 14)
    adj = to_float64(bipartite_adjacency(users, products, 6, 5))
    x = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: spmm_symmetric(adj, inp), (x,))
