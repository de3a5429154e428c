"""Recipient fatigue for seeding (models/seeding/fatigue.py): the counts, the curves, the launch snapshot."""

from __future__ import annotations

import numpy as np
import pytest

from sharerank.dataset.reader import Shares, load_dataset
from sharerank.models.seeding.fatigue import (
    PAIR_EDGES,
    FatigueCurves,
    FatigueState,
    fit_curves,
    share_counts,
)
from sharerank.models.seeding.influence import InfluenceModel


class _Log:
    """The two fields of a Dataset that share_counts and FatigueState.snapshot read."""

    def __init__(self, shares: Shares, num_users: int):
        self.shares, self.num_users = shares, num_users


def _random_log(rng: np.random.Generator, n_shares: int, n_users: int) -> _Log:
    sharer = rng.integers(0, n_users, n_shares)
    recipient = (sharer + rng.integers(1, n_users, n_shares)) % n_users
    ts = rng.integers(0, 40, n_shares).astype(np.float64)  # many ties in time
    return _Log(Shares(np.arange(n_shares).astype(str), sharer, recipient, np.zeros(n_shares, dtype=np.int64), ts),
                n_users)


@pytest.mark.parametrize("window", [1.0, 5.0, 100.0])
def test_share_counts_match_a_naive_loop(window: float) -> None:
    log = _random_log(np.random.default_rng(7), 400, 9)
    received, pair = share_counts(log, window)
    s = log.shares
    for i in range(len(s.id)):
        # Earlier = before it in time, or at the same time and earlier in the log.
        earlier = (s.ts < s.ts[i]) | ((s.ts == s.ts[i]) & (np.arange(len(s.id)) < i))
        to_them = earlier & (s.recipient == s.recipient[i])
        assert received[i] == (to_them & (s.ts > s.ts[i] - window)).sum(), i
        assert pair[i] == (to_them & (s.sharer == s.sharer[i])).sum(), i


def test_share_counts_by_hand() -> None:
    # u0 -> u2 at t = 0, 3, 9; u1 -> u2 at t = 4; window 5: (t - 5, t].
    shares = Shares(np.array(["a", "b", "c", "d"]), np.array([0, 0, 1, 0]), np.array([2, 2, 2, 2]),
                    np.zeros(4, dtype=np.int64), np.array([0.0, 3.0, 4.0, 9.0]))
    received, pair = share_counts(_Log(shares, 3), 5.0)
    assert received.tolist() == [0, 1, 2, 0]  # at t = 9 the window (4, 9] holds none of the others
    assert pair.tolist() == [0, 1, 0, 2]


def _trials(rng: np.random.Generator, n: int, half: float | None, mute_scale: float | None):
    q = rng.uniform(0.05, 0.3, n)
    received = rng.poisson(2.5, n).astype(np.float64)
    pair = rng.geometric(0.15, n) - 1
    p = q.copy()
    if half is not None:
        p *= half / (half + received)
    if mute_scale is not None:
        p *= (1.0 + (1.0 / mute_scale) ** 4) / (1.0 + ((pair + 1.0) / mute_scale) ** 4)
    return rng.random(n) < p, q, received, pair


def test_curves_recover_the_fatigue_that_made_the_conversions() -> None:
    y, q, received, pair = _trials(np.random.default_rng(3), 200_000, half=2.0, mute_scale=6.0)
    curves = fit_curves(y, q, received, pair)
    assert curves.info["tests"]["received"]["used"] and curves.info["tests"]["pair"]["used"]
    assert curves.half_shares == pytest.approx(2.0, rel=0.2)
    start = PAIR_EDGES[:-1]
    truth = (1.0 + (1.0 / 6.0) ** 4) / (1.0 + ((start + 1.0) / 6.0) ** 4)
    assert np.abs(curves.pair - truth).max() < 0.1
    assert np.all(np.diff(curves.pair) <= 1e-12)  # more shares from one sender never help


def test_without_fatigue_the_curves_stay_flat() -> None:
    y, q, received, pair = _trials(np.random.default_rng(4), 200_000, half=None, mute_scale=None)
    curves = fit_curves(y, q, received, pair)
    assert curves.is_flat, curves.info
    assert np.all(curves.factor(received, pair) == 1.0)
    assert "off" in curves.info


def test_snapshot_counts_the_window_before_the_launch_and_the_pairs_so_far(tmp_path) -> None:
    shares = Shares(np.array(["a", "b", "c", "d", "e"]), np.array([0, 0, 1, 0, 1]), np.array([2, 2, 2, 1, 2]),
                    np.zeros(5, dtype=np.int64), np.array([0.0, 3.0, 4.0, 5.0, 20.0]))
    influence = InfluenceModel(3, ("c",), {"arc_src": np.array([0, 1, 0]), "arc_dst": np.array([2, 2, 1]),
                                           "given_p": np.full(3, 0.5)}, {}, None)
    curves = FatigueCurves(2.0, np.linspace(1.0, 0.3, len(PAIR_EDGES) - 1))
    state = FatigueState.snapshot(_Log(shares, 3), influence, curves, window_s=3.0, at_ts=5.0)
    assert state.received.tolist() == [0.0, 1.0, 2.0]  # (2, 5]: b, c to u2 and d to u1; e is after the launch
    pair = np.array([2, 1, 1])  # u0 -> u2 twice, u1 -> u2 once, u0 -> u1 once, by t = 5
    assert np.allclose(state.arc_factor, 2.0 / (2.0 + state.received[[2, 2, 1]]) * curves.pair[pair])
    assert np.allclose(state.recipient_fatigue(), 1.0 - 2.0 / (2.0 + state.received))
    state.save(tmp_path / "fatigue")
    loaded = FatigueState.load(tmp_path / "fatigue")
    assert loaded.active and loaded.curves.half_shares == 2.0
    assert np.array_equal(loaded.arc_factor, state.arc_factor) and np.array_equal(loaded.received, state.received)
    off = FatigueState.off(influence, "test")
    off.save(tmp_path / "off")
    assert not FatigueState.load(tmp_path / "off").active


def test_influence_offset_raises_the_fresh_recipient_chance(tiny_world) -> None:
    """A share that fatigue took half of still converted: the chance the model learns for a fresh recipient
    is higher than the fatigue-blind one."""
    dataset = load_dataset(tiny_world)
    n = len(dataset.shares.id)
    blind = InfluenceModel.fit(dataset)
    halved = InfluenceModel.fit(dataset, share_offset=np.full(n, 0.5))
    src, dst = blind.arrays["arc_src"], blind.arrays["arc_dst"]
    assert halved.conversion(src, dst, None).mean() > 1.5 * blind.conversion(src, dst, None).mean()
    with pytest.raises(ValueError, match="one factor per share"):
        InfluenceModel.fit(dataset, share_offset=np.ones(n - 1))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        InfluenceModel.fit(dataset, share_offset=np.zeros(n))
