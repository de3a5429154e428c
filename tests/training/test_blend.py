"""The blend's weight search: what its cost estimate says against what it takes."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from sharerank.models.recommenders.itemknn import ItemKNN
from sharerank.models.recommenders.popularity import Popularity
from sharerank.training.feed.blend import search, search_seconds


def test_the_weight_searchs_time_beyond_scoring_is_estimated_from_one_batch() -> None:
    """The automatic choice tries a blend only when this estimate, its members' validation passes and refits fit in
    what is left of the budget; leaving out the weights or the batches would be off by far more than the bounds."""
    rng = np.random.default_rng(0)
    train = sp.random(2000, 12_000, density=0.0008, format="csr", random_state=1)
    train.data[:] = 1.0
    valid = sp.random(2000, 12_000, density=0.0003, format="csr", random_state=2)
    valid.data[:] = 1.0
    users = np.sort(rng.permutation(np.flatnonzero(np.diff(valid.indptr))))
    members = [Popularity().fit(train), ItemKNN(neighbors=20).fit(train)]
    popularity = np.asarray(train.sum(axis=0)).ravel()
    estimates, actual = [], []
    for _ in range(3):
        estimates.append(search_seconds(users, train))
        started = time.perf_counter()
        search(members, users, train, valid, popularity)
        total = time.perf_counter() - started
        started = time.perf_counter()
        for member in members:  # what the members' own validation passes cost: scoring every user once
            for start in range(0, len(users), 512):
                member.score(users[start:start + 512])
        actual.append(total - (time.perf_counter() - started))
    ratio = np.median(estimates) / np.median(actual)
    assert 0.33 < ratio < 3.0, (estimates, actual)
