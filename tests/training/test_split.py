"""Hold-out splits: each user's latest purchases by time, or the given test.csv."""

from __future__ import annotations

import numpy as np

from sharerank.dataset.reader import Interactions
from sharerank.training.feed.split import holdout_last


def interactions(users, products, ts) -> Interactions:
    n = len(users)
    return Interactions(np.asarray(users), np.asarray(products), np.asarray(ts, dtype=float), np.full(n, -1))


def test_holds_out_the_latest_fifth_per_user() -> None:
    # user 0: 10 purchases at t=0..9 → the last 2 held out; user 1: one purchase → kept for training.
    data = interactions([0] * 10 + [1], list(range(10)) + [5], list(range(10)) + [3])
    train, test = holdout_last(data, 0.2)
    assert sorted(test.product.tolist()) == [8, 9]
    assert len(train) == 9 and 5 in train.product.tolist()


def test_matches_a_naive_loop_on_random_input() -> None:
    rng = np.random.default_rng(3)
    n = 500
    data = interactions(rng.integers(0, 40, n), rng.integers(0, 100, n), rng.permutation(n))
    train, test = holdout_last(data, 0.2)
    assert len(train) + len(test) == n
    for user in range(40):
        times = np.sort(data.ts[data.user == user])
        held = 0 if len(times) < 2 else max(1, round(0.2 * len(times)))
        expected = set(times[len(times) - held:]) if held else set()
        assert set(test.ts[test.user == user]) == expected


def test_zero_fraction_holds_nothing() -> None:
    data = interactions([0, 0, 1], [1, 2, 3], [1, 2, 3])
    train, test = holdout_last(data, 0.0)
    assert len(train) == 3 and len(test) == 0
