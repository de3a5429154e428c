"""Collusive ring detection: a hand-computed case, a planted ring in random background traffic, the vectorised
evidence against a naive loop."""

import numpy as np
import pytest

from sharerank.models.rings import DEFAULT_THRESHOLD, ring_scores


def _log(rows):
    """(sharer, recipient, product, converted) rows -> the four arrays."""
    a = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(bool)


# Users 0, 1, 2 each start one product and the two others buy it through their share; 1 and 2 re-share a
# product to someone who already has it (no purchase). 0 and outsider 10 converted each other once (products 5
# and 7), so 10 joins the component; 1 shares product 6 to 11, who does not buy.
HAND = [
    (0, 1, 0, 1), (0, 2, 0, 1), (1, 0, 1, 1), (1, 2, 1, 1), (2, 0, 2, 1), (2, 1, 2, 1),
    (1, 2, 0, 0), (2, 1, 1, 0),
    (0, 10, 5, 1), (10, 0, 7, 1), (1, 11, 6, 0),
]


def test_hand_computed_group_and_scores():
    scores = ring_scores(*_log(HAND), num_users=12)
    assert len(scores.groups) == 1
    g = scores.groups[0]
    assert g.members.tolist() == [0, 1, 2, 10]
    assert (g.internal_shares, g.internal_purchases, g.repeat_products) == (10, 8, 3)
    assert (g.outside_shares, g.outside_purchases, g.outside_reach) == (1, 0, 0.0)
    assert g.reciprocal_pairs == 4 and g.density == pytest.approx(4 / 6)
    assert g.score == pytest.approx((1 - 0) * 3 / 4)
    # 0, 1 and 2 took part in all three repeat products; 10 in none, so 10 scores 0 though in the group.
    assert scores.user.tolist() == pytest.approx([0.75] * 3 + [0.0] * 7 + [0.0, 0.0])
    assert scores.group.tolist() == [0, 0, 0] + [-1] * 7 + [0, -1]
    assert scores.flagged_users(0.5).tolist() == [0, 1, 2]


def test_outside_conversions_lower_the_score():
    rows = HAND + [(0, 20 + i, 30 + i, 1) for i in range(6)]  # six purchases outside through 0's shares
    g = ring_scores(*_log(rows), num_users=30).groups[0]
    assert g.outside_purchases == 6 and g.outside_reach == pytest.approx(6 / 14)
    assert g.score == pytest.approx((1 - 6 / 14) * 3 / 4)


def _world(rng, n_users=400, n_products=60, n_shares=6000, ring=(7, 50, 93, 150, 222, 301), ring_products=5):
    """Random background shares converting at 5%, plus a planted ring that pushes its products to itself."""
    sharer = rng.integers(0, n_users, n_shares)
    recipient = (sharer + rng.integers(1, n_users, n_shares)) % n_users
    product = rng.integers(0, n_products, n_shares)
    converted = rng.random(n_shares) < 0.05
    rows = [np.stack([sharer, recipient, product, converted], axis=1)]
    members = np.array(ring)
    for p in range(n_products, n_products + ring_products):  # products of the ring's own
        order = rng.permutation(members)
        for i, buyer in enumerate(order[1:], start=1):  # each buys through an earlier member's share
            rows.append(np.array([[rng.choice(order[:i]), buyer, p, 1]]))
        for a in order:  # and everyone shares it to everyone afterwards, mostly without effect
            for b in order:
                if a != b:
                    rows.append(np.array([[a, b, p, 0]]))
    log = np.concatenate(rows)
    return log[:, 0], log[:, 1], log[:, 2], log[:, 3].astype(bool), n_users, members


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_planted_ring_is_found_and_nobody_else_is_flagged(seed):
    *log, n_users, members = _world(np.random.default_rng(seed))
    scores = ring_scores(*log, num_users=n_users)
    assert scores.flagged_users(DEFAULT_THRESHOLD).tolist() == sorted(members.tolist())
    top = scores.flagged_groups(DEFAULT_THRESHOLD)
    assert len(top) == 1 and set(members) <= set(top[0].members.tolist())
    assert top[0].repeat_products == 5


def test_evidence_matches_a_naive_loop():
    sharer, recipient, product, converted, n_users, _ = _world(np.random.default_rng(5))
    scores = ring_scores(sharer, recipient, product, converted, num_users=n_users)
    assert scores.groups
    for index, g in enumerate(scores.groups):
        members = set(g.members.tolist())
        assert all(scores.group[u] == index for u in members)
        internal = [(s, r, p, c) for s, r, p, c in zip(sharer, recipient, product, converted, strict=True)
                    if s in members and r in members]
        out = [(s, r, p, c) for s, r, p, c in zip(sharer, recipient, product, converted, strict=True)
               if s in members and r not in members]
        buyers = {}
        for _, r, p, c in internal:
            if c:
                buyers.setdefault(p, set()).add(r)
        repeat = sum(len(b) >= 2 for b in buyers.values())
        won_in, won_out = sum(c for *_, c in internal), sum(c for *_, c in out)
        reach = won_out / max(1, won_in + won_out)
        assert (g.internal_shares, g.internal_purchases, g.outside_shares, g.outside_purchases) == (
            len(internal), won_in, len(out), won_out)
        assert g.repeat_products == repeat
        assert g.score == pytest.approx((1 - reach) * repeat / (repeat + 1))


def test_no_conversions_no_groups_and_bad_input_is_refused():
    scores = ring_scores(*_log([(0, 1, 0, 0), (1, 0, 0, 0)]), num_users=3)
    assert scores.groups == [] and scores.user.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="one entry per share"):
        ring_scores(np.array([0]), np.array([1, 2]), np.array([0]), np.array([True]), num_users=3)
    with pytest.raises(ValueError, match="must lie in"):
        ring_scores(*_log([(0, 5, 0, 1)]), num_users=3)
