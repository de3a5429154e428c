"""Collusive ring detection (刷信誉, fake credibility): small groups that share products to each other and buy
through each other's shares, over and over, while reaching few people outside.

Read from the share log alone: which shares a purchase was attributed to (a *conversion*). Three steps:

1. **Reciprocal conversions.** Two people are linked when each has bought through a share from the other
   (at least one conversion u -> v and one v -> u). Ordinary friends rarely convert each other both ways; a
   ring does so all the time. Candidate groups are the connected components of this graph with at least
   ``min_members`` people (networkx).
2. **Evidence per group** ``g`` with ``k`` members: internal shares and conversions (both ends in ``g``);
   *repeat products* ``r``: products that at least two members bought through shares from other members (a
   ring buys the same products among itself; ordinary pairs convert each other on different products);
   outside conversions ``o``: purchases by non-members through members' shares; *outside reach*
   ``o / (i + o)`` with ``i`` internal conversions; density: reciprocal pairs over ``k (k - 1) / 2``.
3. **Scores.**

   .. math::
       \\mathrm{score}(g) = \\left(1 - \\frac{o}{i + o}\\right) \\cdot \\frac{r}{r + 1}

   in [0, 1): high when the members' conversions stay inside and they co-buy several products. Before scoring,
   whoever took part in at least two of a group's repeat products joins it (a person outside every group, or
   another group: ring members whose conversions with the others ran one way only, a ring the reciprocal
   graph cut in two). A member's
   score is their group's times their *participation*, the share of the group's repeat products they bought
   through a member's share or sold to a member; people outside every group score 0. So someone attached to a
   ring by one reciprocal pair, who takes no part in its repeat products, is not flagged with it.

The default threshold (:data:`DEFAULT_THRESHOLD`) was chosen on a validation world (``sharerank simulate
--users 100000 --seed 1 --rings 100 --fatigue-window-days 7``), never on the world the README reports.

Works on full share logs and on success-only logs alike (only conversions are read for the graph, repeat
products and reach; internal shares are reported as evidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from sharerank.dataset.reader import Dataset

DEFAULT_THRESHOLD = 0.55
"""Flag a group (and a member) whose score is at least this: the highest user-level F1 of the 0.05 grid on the
validation world (precision 0.997, recall 0.982 there); see the module."""


@dataclass(frozen=True)
class RingGroup:
    """One candidate group and its evidence (user indices, counts over the whole log)."""

    members: np.ndarray       # user indices, ascending
    score: float              # (1 - outside_reach) * repeat_products / (repeat_products + 1)
    internal_shares: int      # shares from a member to another member
    internal_purchases: int   # purchases through those shares
    repeat_products: int      # products at least two members bought through members' shares
    outside_shares: int       # shares from members to non-members
    outside_purchases: int    # purchases by non-members through members' shares
    outside_reach: float      # outside_purchases / (internal_purchases + outside_purchases)
    reciprocal_pairs: int     # member pairs who converted each other both ways
    density: float            # reciprocal_pairs / (k (k - 1) / 2)


@dataclass(frozen=True)
class RingScores:
    """Scores of every user and every candidate group; ``group[u]`` indexes ``groups`` (-1: none)."""

    user: np.ndarray          # float64 per user in [0, 1); 0 outside every group
    group: np.ndarray         # int64 per user
    groups: list[RingGroup]   # candidate groups, best score first

    def flagged_users(self, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
        """Indices of the users scoring at least ``threshold``, ascending."""
        return np.flatnonzero(self.user >= threshold)

    def flagged_groups(self, threshold: float = DEFAULT_THRESHOLD) -> list[RingGroup]:
        """The groups scoring at least ``threshold``, best first."""
        return [g for g in self.groups if g.score >= threshold]


def ring_scores(sharer: np.ndarray, recipient: np.ndarray, product: np.ndarray, converted: np.ndarray,
                num_users: int, *, min_members: int = 3) -> RingScores:
    """Ring scores of every user and candidate group from a share log.

    Args:
        sharer, recipient, product: One entry per share (dense user and product indices).
        converted: Per share, whether a purchase was attributed to it.
        num_users: Number of users (indices lie in ``[0, num_users)``).
        min_members: Smallest candidate group (default: 3; a pair cannot co-buy a product through each other).

    Returns:
        :class:`RingScores`; deterministic (groups ordered by score, then by their smallest member).

    Raises:
        ValueError: arrays of different lengths, or an index out of range.
    """
    sharer, recipient, product = (np.asarray(a, dtype=np.int64) for a in (sharer, recipient, product))
    converted = np.asarray(converted, dtype=bool)
    if not sharer.shape == recipient.shape == product.shape == converted.shape or sharer.ndim != 1:
        raise ValueError("sharer, recipient, product and converted need one entry per share")
    if sharer.size and (min(sharer.min(), recipient.min()) < 0 or max(sharer.max(), recipient.max()) >= num_users):
        raise ValueError(f"user indices must lie in [0, {num_users})")
    if min_members < 2:
        raise ValueError("min_members must be at least 2")

    group = _reciprocal_groups(sharer[converted], recipient[converted], num_users, min_members)
    n_groups = int(group.max(initial=-1)) + 1
    if n_groups == 0:
        return RingScores(np.zeros(num_users), group, [])
    width = int(product.max()) + 1
    group = _attach(group, _repeat_keys(group, sharer, recipient, product, converted, width), sharer, recipient,
                    product, converted, width)
    n_groups = int(group.max()) + 1

    g_from, g_to = group[sharer], group[recipient]
    inside = (g_from >= 0) & (g_from == g_to)
    outside = (g_from >= 0) & ~inside

    def per_group(mask: np.ndarray) -> np.ndarray:
        return np.bincount(g_from[mask], minlength=n_groups)

    internal_shares, internal_purchases = per_group(inside), per_group(inside & converted)
    outside_shares, outside_purchases = per_group(outside), per_group(outside & converted)
    repeat_key = _repeat_keys(group, sharer, recipient, product, converted, width)
    repeat_products = np.bincount(repeat_key // width, minlength=n_groups)
    reach = outside_purchases / np.maximum(1, internal_purchases + outside_purchases)
    score = (1.0 - reach) * repeat_products / (repeat_products + 1.0)

    # Participation: repeat products each member bought from, or sold to, another member.
    on_repeat = inside & converted & np.isin(g_from * width + product, repeat_key)
    touched = np.unique(np.concatenate([sharer[on_repeat] * width + product[on_repeat],
                                        recipient[on_repeat] * width + product[on_repeat]]))
    per_user = np.bincount(touched // width, minlength=num_users)
    member = group >= 0
    user_score = np.zeros(num_users)
    user_score[member] = score[group[member]] * np.minimum(
        1.0, per_user[member] / np.maximum(1, repeat_products[group[member]]))

    pairs = _reciprocal_pairs(sharer[converted], recipient[converted], num_users)
    pair_group = group[pairs[0]]
    reciprocal = np.bincount(pair_group[(pair_group >= 0) & (pair_group == group[pairs[1]])], minlength=n_groups)
    size = np.bincount(group[member], minlength=n_groups)
    members_of = np.split(np.flatnonzero(member)[np.argsort(group[member], kind="stable")], np.cumsum(size)[:-1])
    groups = [RingGroup(members=members_of[g], score=float(score[g]), internal_shares=int(internal_shares[g]),
                        internal_purchases=int(internal_purchases[g]), repeat_products=int(repeat_products[g]),
                        outside_shares=int(outside_shares[g]), outside_purchases=int(outside_purchases[g]),
                        outside_reach=float(reach[g]), reciprocal_pairs=int(reciprocal[g]),
                        density=float(reciprocal[g] / (size[g] * (size[g] - 1) / 2)))
              for g in range(n_groups)]
    order = sorted(range(n_groups), key=lambda g: (-groups[g].score, int(groups[g].members[0])))
    renumber = np.empty(n_groups, dtype=np.int64)
    renumber[order] = np.arange(n_groups)
    group[member] = renumber[group[member]]
    return RingScores(user_score, group, [groups[g] for g in order])


def _repeat_keys(group, sharer, recipient, product, converted, width: int) -> np.ndarray:
    """``group * width + product`` of every repeat product: bought by at least two members of the group through
    shares from other members."""
    g_from = group[sharer]
    won = converted & (g_from >= 0) & (g_from == group[recipient])
    bought = np.unique((g_from[won] * width + product[won]) * group.size + recipient[won])
    key, buyers = np.unique(bought // group.size, return_counts=True)
    return key[buyers >= 2]


def _attach(group, repeat_key, sharer, recipient, product, converted, width: int) -> np.ndarray:
    """Groups merged with whoever took part in at least two of a group's repeat products (bought them through a
    member's share, or sold them to a member): a person outside every group joins it, two groups so tied become
    one (connected components over those ties, networkx). Catches ring members whose conversions with the
    others ran one way only, and rings the reciprocal graph cut in two."""
    n_groups = int(group.max()) + 1
    unit = np.where(group >= 0, group, n_groups + np.arange(group.size))  # a group, or one ungrouped person
    ties = []
    for outer, inner in ((recipient, sharer), (sharer, recipient)):
        g = group[inner]
        hit = converted & (g >= 0) & (unit[outer] != g) & np.isin(g * width + product, repeat_key)
        ties.append(np.stack([unit[outer[hit]], g[hit], product[hit]], axis=1))
    taken = np.unique(np.concatenate(ties), axis=0)  # (unit, group, product), each once
    pair, count = np.unique(taken[:, :2], axis=0, return_counts=True)
    linked = nx.Graph()
    linked.add_nodes_from(range(n_groups))
    linked.add_edges_from(map(tuple, pair[count >= 2].tolist()))
    merged = np.full(group.size, -1, dtype=np.int64)
    for units in nx.connected_components(linked):
        units = np.fromiter(units, dtype=np.int64)
        target = int(units[units < n_groups].min())  # every component holds a group: only groups have ties
        merged[np.isin(unit, units)] = target
    _, merged[merged >= 0] = np.unique(merged[merged >= 0], return_inverse=True)
    return merged


def _reciprocal_pairs(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs (a < b) with at least one conversion a -> b and one b -> a."""
    arcs = np.unique(src * n + dst)
    both = arcs[np.isin((arcs % n) * n + arcs // n, arcs)]
    a, b = both // n, both % n
    keep = a < b
    return a[keep], b[keep]


def _reciprocal_groups(src: np.ndarray, dst: np.ndarray, n: int, min_members: int) -> np.ndarray:
    """Group index per user (-1: none): connected components of the reciprocal-conversion graph with at least
    ``min_members`` people, numbered by smallest member."""
    a, b = _reciprocal_pairs(src, dst, n)
    graph = nx.Graph()
    graph.add_edges_from(zip(a.tolist(), b.tolist(), strict=True))
    components = sorted((sorted(c) for c in nx.connected_components(graph) if len(c) >= min_members),
                        key=lambda c: c[0])
    group = np.full(n, -1, dtype=np.int64)
    for index, component in enumerate(components):
        group[component] = index
    return group


def dataset_ring_scores(dataset: Dataset, **kwargs) -> RingScores:
    """:func:`ring_scores` of a dataset folder's share log (a share converted when a purchase names it); no
    shares, no groups."""
    if dataset.shares is None:
        return RingScores(np.zeros(dataset.num_users), np.full(dataset.num_users, -1, dtype=np.int64), [])
    converted = np.zeros(len(dataset.shares.id), dtype=bool)
    converted[dataset.purchases.share[dataset.purchases.share >= 0]] = True
    return ring_scores(dataset.shares.sharer, dataset.shares.recipient, dataset.shares.product, converted,
                       dataset.num_users, **kwargs)
