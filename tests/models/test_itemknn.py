import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sharerank.models.recommenders.itemknn import ItemKNN


def random_interactions(num_users: int, num_products: int, density: float, seed: int) -> sp.csr_matrix:
    x = sp.random(num_users, num_products, density=density, format="csr", random_state=seed)
    x.data[:] = 1.0
    return x


def dense_cosine(x: np.ndarray, shrink: float) -> np.ndarray:
    counts = x.sum(axis=0)
    gram = x.T @ x
    denom = np.sqrt(counts)[:, None] * np.sqrt(counts)[None, :] + shrink
    sim = np.divide(gram, denom, out=np.zeros_like(gram), where=denom > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def test_itemknn_hand_computed() -> None:
    # Buyers: product 0 = {0, 1, 2}, product 1 = {0, 1}, product 2 = {2, 3}.
    # sim(0, 1) = 2 / sqrt(6), sim(0, 2) = 1 / sqrt(6), sim(1, 2) = 0.
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=np.float32))
    model = ItemKNN(neighbors=1).fit(x)
    s01, s02 = 2 / np.sqrt(6), 1 / np.sqrt(6)
    # One neighbour each: 0 -> 1, 1 -> 0, 2 -> 0.
    np.testing.assert_allclose(model.weight.toarray(), [[0, s01, 0], [s01, 0, 0], [s02, 0, 0]], rtol=1e-6)
    scores = model.score(np.array([3, 2]))
    assert scores.dtype == torch.float32 and scores.shape == (2, 3)
    np.testing.assert_allclose(scores.numpy(), [[s02, 0, 0], [s02, s01, 0]], rtol=1e-6)


@pytest.mark.parametrize("shrink", [0.0, 2.5])
@pytest.mark.parametrize("block_size", [3, 1024])
def test_itemknn_unpruned_matches_dense_cosine(shrink: float, block_size: int) -> None:
    x = random_interactions(40, 23, 0.2, seed=1)
    model = ItemKNN(neighbors=100, shrink=shrink, block_size=block_size).fit(x)
    sim = dense_cosine(x.toarray().astype(np.float64), shrink)
    np.testing.assert_allclose(model.weight.toarray(), sim, rtol=1e-5, atol=1e-7)
    users = np.array([0, 5, 39, 5])
    np.testing.assert_allclose(model.score(users).numpy(), x[users].toarray() @ sim, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neighbors", [1, 4, 10])
def test_itemknn_keeps_the_top_neighbours_of_each_row(neighbors: int) -> None:
    x = random_interactions(60, 30, 0.15, seed=2)
    weight = ItemKNN(neighbors=neighbors, block_size=7).fit(x).weight.toarray()
    sim = dense_cosine(x.toarray().astype(np.float64), 0.0)
    for i in range(30):
        kept = np.flatnonzero(weight[i])
        dropped = np.setdiff1d(np.flatnonzero(sim[i] > 0), kept)
        assert len(kept) == min(neighbors, np.count_nonzero(sim[i]))
        np.testing.assert_allclose(weight[i, kept], sim[i, kept], rtol=1e-5)
        if len(dropped):  # ties at the boundary may go either way, never a smaller one kept
            assert sim[i, kept].min() >= sim[i, dropped].max() - 1e-6


def test_itemknn_own_items_finite_and_errors() -> None:
    x = random_interactions(30, 12, 0.3, seed=3)
    model = ItemKNN(neighbors=5).fit(x)
    assert model.name == "itemknn"
    scores = model.score(torch.arange(30))
    assert torch.isfinite(scores[torch.from_numpy(x.toarray() > 0)]).all()
    assert repr(model) == "ItemKNN(neighbors=5, shrink=0.0)"
    with pytest.raises(RuntimeError):
        ItemKNN().score(np.arange(2))
    with pytest.raises(ValueError):
        ItemKNN(neighbors=0)
    with pytest.raises(ValueError):
        ItemKNN(shrink=-1.0)
