import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sharerank.models.recommenders.popularity import Popularity


def test_popularity_hand_computed() -> None:
    # Users 0-3 x products 0-3; a duplicate entry and an explicit zero must not count.
    users = np.array([0, 1, 2, 0, 3, 3, 1])
    products = np.array([0, 0, 0, 2, 2, 2, 3])
    values = np.array([1, 1, 1, 1, 1, 1, 0], dtype=np.float32)
    x = sp.coo_matrix((values, (users, products)), shape=(4, 4))

    model = Popularity().fit(x)
    scores = model.score(np.array([2, 0, 2]))

    assert model.name == "popularity"
    assert scores.dtype == torch.float32 and scores.shape == (3, 4)
    assert scores.tolist() == [[3.0, 0.0, 2.0, 0.0]] * 3


def test_popularity_scores_are_fresh_and_finite() -> None:
    x = sp.random(20, 9, density=0.3, format="csr", random_state=0)
    x.data[:] = 1.0
    model = Popularity().fit(x)
    first = model.score(torch.arange(5))
    first[:, :] = float("-inf")  # the harness masks in place
    second = model.score(np.arange(20))
    assert torch.isfinite(second).all()
    assert torch.equal(second[0], torch.from_numpy(np.asarray((x != 0).sum(axis=0)).ravel().astype(np.float32)))
    assert model.score(np.array([], dtype=np.int64)).shape == (0, 9)


def test_popularity_errors_and_repr() -> None:
    with pytest.raises(RuntimeError):
        Popularity().score(np.arange(2))
    with pytest.raises(TypeError):
        Popularity().fit(np.ones((2, 2)))
    assert repr(Popularity()) == "Popularity()"
