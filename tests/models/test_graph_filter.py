import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sharerank.models.recommenders.factors import FactorScorer
from sharerank.models.recommenders.graph_filter import GraphFilter, _orthonormal, _top_eigenvectors


def random_interactions(num_users: int, num_products: int, density: float, seed: int) -> sp.csr_matrix:
    x = sp.random(num_users, num_products, density=density, format="lil", random_state=seed)
    x[num_users - 1, :] = 0  # a user without purchases
    x[:, num_products - 1] = 0  # a product nobody bought
    x = x.tocsr()
    x.data[:] = 1.0
    return x


def dense_reference(x: np.ndarray, k: int, beta: float, blur_time: float, blur_steps: int, sharpen_time: float,
                    sharpen_steps: int, early_merge: bool, user_power: float, item_power: float,
                    spectral_power: float = 0.0, friends_rows: np.ndarray | None = None) -> np.ndarray:
    """The filter's formula in float64, with dense eigenvectors and textbook Euler / RK4 steps; ``friends_rows``
    (γ times each user's friends' mean row) enters the ideal term."""
    du, di = x.sum(axis=1), x.sum(axis=0)
    inv_u = np.divide(1.0, du ** user_power, out=np.zeros_like(du), where=du > 0)
    inv_i = np.divide(1.0, di ** item_power, out=np.zeros_like(di), where=di > 0)
    norm = inv_u[:, None] * x * inv_i[None, :]
    p = norm.T @ norm
    p /= np.linalg.eigvalsh(p).max()  # the spectrum in [0, 1]
    values, vectors = np.linalg.eigh(p)
    order = np.argsort(-values)
    assert values[order[k - 1]] - values[order[k]] > 1e-3, "test data must separate the top-k subspace"
    v = vectors[:, order[:k]]
    weights = np.sqrt(np.clip(values[order[:k]], 0, None)) ** spectral_power  # σ_j^p, σ_1 = 1
    weights /= weights.mean()
    rows = x if friends_rows is None else x + friends_rows
    ideal = beta * rows @ (np.diag(inv_i) @ v @ np.diag(weights) @ v.T @ np.diag(di ** item_power))

    r, tau = x.copy(), blur_time / blur_steps
    for _ in range(blur_steps):
        r = r + tau * (r @ p - r)
    if early_merge:
        r = r + ideal
    h = sharpen_time / sharpen_steps
    for _ in range(sharpen_steps):
        k1 = -r @ p
        k2 = -(r + h / 2 * k1) @ p
        k3 = -(r + h / 2 * k2) @ p
        k4 = -(r + h * k3) @ p
        r = r + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    if not early_merge:
        r = r + ideal
    return r


CONFIGS = [
    dict(num_factors=6, ideal_weight=0.1, blur_time=1.0, blur_steps=1, sharpen_time=2.0, sharpen_steps=1,
         early_merge=True, user_power=0.3, item_power=0.4, spectral_power=0.5),  # the defaults' shape
    dict(num_factors=6, ideal_weight=0.2, blur_time=1.0, blur_steps=1, sharpen_time=2.5, sharpen_steps=1,
         early_merge=True, user_power=0.5, item_power=0.5, spectral_power=0.0),  # BSPM-EM, the paper's Gowalla
    dict(num_factors=4, ideal_weight=0.3, blur_time=1.0, blur_steps=1, sharpen_time=0.0, sharpen_steps=1,
         early_merge=False, user_power=0.5, item_power=0.5, spectral_power=0.0),  # GF-CF
    dict(num_factors=5, ideal_weight=0.5, blur_time=0.7, blur_steps=2, sharpen_time=1.2, sharpen_steps=2,
         early_merge=False, user_power=0.2, item_power=0.6, spectral_power=2.0),
    dict(num_factors=0, ideal_weight=0.2, blur_time=1.0, blur_steps=1, sharpen_time=1.0, sharpen_steps=1,
         early_merge=True, user_power=0.4, item_power=0.3, spectral_power=0.0),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape, chunk_size", [((40, 30), 3), ((40, 30), 512), ((26, 40), 4)])
def test_graph_filter_matches_dense_reference(config: dict, shape: tuple[int, int], chunk_size: int) -> None:
    # More users than products: eigenvectors of R̃ᵀR̃; fewer: of R̃R̃ᵀ, mapped back.
    num_users, num_products = shape
    x = random_interactions(num_users, num_products, 0.15, seed=0)
    model = GraphFilter(**config, chunk_size=chunk_size).fit(x)
    users = np.array([0, 7, num_users - 1, 7, 12, 25, 3])
    scores = model.score(users)

    assert scores.dtype == torch.float32 and scores.shape == (7, num_products)
    expected = dense_reference(x.toarray().astype(np.float64), max(config["num_factors"], 1),
                               config["ideal_weight"] if config["num_factors"] else 0.0,
                               config["blur_time"], config["blur_steps"], config["sharpen_time"],
                               config["sharpen_steps"], config["early_merge"], config["user_power"],
                               config["item_power"], config["spectral_power"])[users]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert torch.equal(scores[2], torch.zeros(num_products))  # the last user bought nothing
    own = torch.from_numpy(x[users].toarray() > 0)
    assert torch.isfinite(scores[own]).all()


@pytest.mark.parametrize("config", CONFIGS)
def test_the_served_form_with_every_neighbour_kept_scores_as_the_filter(config: dict) -> None:
    """User and product vectors plus the item-item part, none of its entries cut: the exact scores, whatever the
    blur (its first step on each block of products is a sparse product; a blur step below 1 also needs the block)."""
    num_users, num_products = 40, 30
    x = random_interactions(num_users, num_products, 0.15, seed=2)
    model = GraphFilter(**config, chunk_size=7).fit(x)
    served = FactorScorer(model.factors(neighbours=num_products), x).score(np.arange(num_users))
    exact = model.score(np.arange(num_users))
    np.testing.assert_allclose(served.numpy(), exact.numpy(), rtol=1e-4, atol=1e-5 * float(exact.abs().max()))


@pytest.mark.parametrize("shape", [(40, 30), (26, 40)])
def test_graph_filter_singular_values(shape: tuple[int, int]) -> None:
    x = random_interactions(*shape, 0.15, seed=0)
    model = GraphFilter(num_factors=6).fit(x)
    expected = np.linalg.svd(model._norm.toarray().astype(np.float64), compute_uv=False)[:6]
    np.testing.assert_allclose(model.singular_values, expected, rtol=1e-4)
    assert model.singular_values[0] == pytest.approx(1.0, abs=1e-5)  # the normalised top singular value


@pytest.mark.parametrize("block_size, krylov_factor", [(8, 3.0), (64, 3.0), (4, 8.0)])
def test_block_lanczos_matches_dense_eigh(block_size: int, krylov_factor: float) -> None:
    rng = np.random.default_rng(0)
    n, k = 400, 12
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    spectrum = 0.9 ** np.arange(n)
    operator = (basis * spectrum) @ basis.T
    values, vectors = _top_eigenvectors(lambda z: (operator @ z).astype(np.float32), n, k,
                                        block_size=block_size, krylov_factor=krylov_factor, dense_max=0)
    assert values.shape == (k,) and vectors.shape == (n, k) and vectors.dtype == np.float32
    # The leading pairs converge first; the ones near the k-th are approximate with a small basis.
    np.testing.assert_allclose(values[: k // 2], spectrum[: k // 2], rtol=1e-5)
    np.testing.assert_allclose(values, spectrum[:k], rtol=1e-2)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(k), atol=1e-5)
    head = vectors[:, : k // 2]
    np.testing.assert_allclose(head @ head.T, basis[:, : k // 2] @ basis[:, : k // 2].T, atol=1e-4)
    if krylov_factor > 3:
        np.testing.assert_allclose(values, spectrum[:k], rtol=1e-5)


@pytest.mark.parametrize("deficient", [False, True])
def test_orthonormal(deficient: bool) -> None:
    block = np.random.default_rng(1).standard_normal((500, 16), dtype=np.float32)
    if deficient:
        block[:, 3] = block[:, 2]
    q = _orthonormal(block.copy())
    assert q.shape == (500, 16) and q.dtype == np.float32
    np.testing.assert_allclose(q.T @ q, np.eye(16), atol=1e-5)
    # Same span: projecting the block onto q loses nothing.
    np.testing.assert_allclose(q @ (q.T @ block), block, atol=1e-4)


def test_graph_filter_errors_and_repr() -> None:
    assert GraphFilter.name == "graphfilter"
    assert repr(GraphFilter()) == (
        "GraphFilter(num_factors=768, ideal_weight=0.1, blur_time=1.0, sharpen_time=2.0, sharpen_steps=1, "
        "early_merge=True, user_power=0.3, item_power=0.4, spectral_power=0.5, social_weight=0.0)"
    )
    with pytest.raises(RuntimeError):
        GraphFilter().score(np.arange(2))
    with pytest.raises(ValueError):
        GraphFilter(num_factors=-1)
    with pytest.raises(ValueError):
        GraphFilter(sharpen_steps=0)
    with pytest.raises(ValueError, match="exponents"):
        GraphFilter(user_power=-0.1)
    with pytest.raises(ValueError, match="spectral_power"):
        GraphFilter(spectral_power=-0.5)
    with pytest.raises(ValueError, match="social_weight"):
        GraphFilter(social_weight=-1.0)
    with pytest.raises(ValueError, match="users × users"):
        GraphFilter(social_weight=1.0).fit(sp.eye(5, 4, format="csr"), social=sp.eye(4, format="csr"))


def _friends(num_users: int) -> sp.csr_matrix:
    """Directed links, some one way and some both, one self-link, and the last user (who bought nothing)
    linked to two others."""
    src = np.array([0, 1, 1, 2, 5, 7, 7, 12, num_users - 1, num_users - 1, 3])
    dst = np.array([1, 0, 2, 5, 2, 12, 3, 7, 0, 12, 3])
    return sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(num_users, num_users))


@pytest.mark.parametrize("config", CONFIGS[:3])
def test_friends_enter_the_ideal_term_as_their_mean_row(config: dict) -> None:
    num_users, num_products = 40, 30
    x = random_interactions(num_users, num_products, 0.15, seed=0)
    links = _friends(num_users)
    model = GraphFilter(**config, social_weight=0.7).fit(x, social=links)
    users = np.array([0, 2, 3, 7, num_users - 1])
    scores = model.score(users)

    dense = x.toarray().astype(np.float64)
    friends = ((links + links.T).toarray() > 0).astype(np.float64)
    np.fill_diagonal(friends, 0.0)  # a self-link makes no friend
    mean = friends @ dense / np.maximum(friends.sum(axis=1, keepdims=True), 1.0)
    expected = dense_reference(dense, config["num_factors"], config["ideal_weight"], config["blur_time"],
                               config["blur_steps"], config["sharpen_time"], config["sharpen_steps"],
                               config["early_merge"], config["user_power"], config["item_power"],
                               config["spectral_power"], friends_rows=0.7 * mean)[users]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # Someone who bought nothing is scored by their friends' purchases, and the served form scores them alike
    # (their vector carries the friends' part; no purchase of theirs reaches the item-item part).
    assert scores[-1].abs().max() > 0.01 * scores.abs().max()
    factors = model.factors()
    served = factors.user[num_users - 1] @ factors.product.T
    np.testing.assert_allclose(served, scores[-1].numpy(), rtol=1e-4, atol=1e-5 * float(scores[-1].abs().max()))


def test_without_a_social_weight_the_links_change_nothing() -> None:
    x = random_interactions(40, 30, 0.15, seed=1)
    alone = GraphFilter(num_factors=6).fit(x).score(np.arange(40))
    assert torch.equal(GraphFilter(num_factors=6).fit(x, social=_friends(40)).score(np.arange(40)), alone)
    assert torch.equal(GraphFilter(num_factors=6, social_weight=0.7).fit(x).score(np.arange(40)), alone)
    with pytest.raises(TypeError):
        GraphFilter().fit(np.ones((3, 3)))


def test_the_served_forms_time_is_estimated_from_one_block() -> None:
    """The automatic choice keeps this estimate of its budget for the graph filter's refit; a one-block timing
    off by the block count, or missing the neighbour cut, would be off by far more than the bounds allow."""
    x = random_interactions(3000, 5000, 0.004, seed=3)
    model = GraphFilter(num_factors=64, chunk_size=128).fit(x)
    model.factors(neighbours=50)  # compiled kernels, warm caches: as after the trial's ranking
    estimates, actual = [], []
    for seed in range(3):
        estimates.append(model.served_seconds(neighbours=50, seed=seed))
        started = time.perf_counter()
        model.factors(neighbours=50)
        actual.append(time.perf_counter() - started)
    ratio = np.median(estimates) / np.median(actual)
    assert 0.33 < ratio < 3.0, (estimates, actual)
