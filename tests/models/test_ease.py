import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sharerank.models.recommenders import ease as ease_module
from sharerank.models.recommenders.ease import EASE, EASEMemoryError, _mirror_upper, available_memory


def random_interactions(num_users: int, num_products: int, density: float, seed: int) -> sp.csr_matrix:
    x = sp.random(num_users, num_products, density=density, format="csr", random_state=seed)
    x.data[:] = 1.0
    return x


def closed_form(x: np.ndarray, reg: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + reg * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)[None, :]


@pytest.mark.parametrize("reg", [1.0, 50.0, 500.0])
@pytest.mark.parametrize("block_size", [5, 2048])
def test_ease_matches_float64_closed_form(reg: float, block_size: int) -> None:
    x = random_interactions(80, 37, 0.2, seed=0)
    model = EASE(reg=reg, block_size=block_size).fit(x)
    expected = closed_form(x.toarray().astype(np.float64), reg)
    assert model.weight.dtype == torch.float32
    assert np.all(np.diag(model.weight.numpy()) == 0.0)
    np.testing.assert_allclose(model.weight.numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())

    users = np.array([3, 0, 79, 3])
    scores = model.score(users)
    assert scores.dtype == torch.float32 and scores.shape == (4, 37)
    np.testing.assert_allclose(scores.numpy(), x[users].toarray() @ expected, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(scores).all()


def test_ease_mkl_path_for_large_catalogues(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ease_module._mkl_lapack() is not None  # torch's x86 wheels link MKL
    x = random_interactions(60, 29, 0.2, seed=5)
    monkeypatch.setattr(ease_module, "_MAX_OPENBLAS", 10)
    model = EASE(reg=30.0).fit(x)
    np.testing.assert_allclose(model.weight.numpy(), closed_form(x.toarray().astype(np.float64), 30.0),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("max_openblas", [10, 20_000])
def test_ease_not_positive_definite(monkeypatch: pytest.MonkeyPatch, max_openblas: int) -> None:
    monkeypatch.setattr(ease_module, "_MAX_OPENBLAS", max_openblas)
    with pytest.raises(np.linalg.LinAlgError):
        ease_module._invert_spd_in_place(-np.eye(12, dtype=np.float32))


def test_ease_without_mkl_refuses_large_catalogues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease_module, "_MAX_OPENBLAS", 3)
    monkeypatch.setattr(ease_module, "_mkl_lapack", lambda: None)
    with pytest.raises(ValueError, match="MKL"):
        ease_module._invert_spd_in_place(np.eye(4, dtype=np.float32))


def test_ease_user_without_purchases_scores_zero() -> None:
    x = random_interactions(10, 6, 0.3, seed=1).tolil()
    x[4, :] = 0
    model = EASE(reg=10.0).fit(x.tocsr())
    assert torch.equal(model.score(np.array([4])), torch.zeros(1, 6))


def test_ease_fits_and_memory_error() -> None:
    assert EASE.memory_required(1000) == int(1.1 * 4 * 1000**2) + 256 * 2**20
    assert EASE.fits(1000, memory_bytes=10**9)
    assert not EASE.fits(1000, memory_bytes=10**8)
    assert not EASE.fits(200_000, memory_bytes=64 * 2**30)  # 160 GB of weights
    assert EASE.fits(10)  # against the memory available now
    assert available_memory() > 0

    x = random_interactions(10, 8, 0.3, seed=2)
    with pytest.raises(EASEMemoryError, match=r"needs ~0\.3 GiB.*only 0\.0 GiB") as info:
        EASE().fit(x, memory_bytes=1000)
    assert isinstance(info.value, MemoryError)
    assert info.value.num_products == 8


@pytest.mark.parametrize("n, block_size", [(1, 4), (7, 3), (10, 10), (13, 4)])
def test_mirror_upper(n: int, block_size: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n)).astype(np.float32)
    expected = np.triu(a) + np.triu(a, 1).T
    _mirror_upper(a, block_size)
    np.testing.assert_array_equal(a, expected)


def test_ease_auto_reg() -> None:
    x = random_interactions(80, 37, 0.2, seed=4)
    model = EASE().fit(x)
    expected = float(np.clip(25.0 * x.nnz / 37, 10.0, 3000.0))
    assert model.fitted_reg == EASE.auto_reg(x) == pytest.approx(expected)
    np.testing.assert_allclose(model.weight.numpy(), closed_form(x.toarray().astype(np.float64), expected),
                               rtol=1e-4, atol=1e-6)
    assert EASE.auto_reg(sp.csr_matrix((5, 4))) == 10.0
    assert EASE.auto_reg(sp.csr_matrix(np.ones((1000, 2)))) == 3000.0


def test_ease_errors_and_repr() -> None:
    assert EASE.name == "ease"
    assert repr(EASE(reg=20.0)) == "EASE(reg=20.0)"
    assert repr(EASE()) == "EASE(reg='auto')"
    for bad in (0.0, -1.0, "large"):
        with pytest.raises(ValueError):
            EASE(reg=bad)
    with pytest.raises(RuntimeError):
        EASE().score(np.arange(2))
