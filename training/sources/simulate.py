"""Synthetic social-commerce world: the embedded default dataset and the ground truth for evaluation.

`simulate_world(out, users=N, seed=S)` writes a dataset folder plus `truth/`, and returns a
summary. The same (users, seed, knobs) always gives byte-identical files.

Generative model, in order:

1. **Roles.** ~2% of users are KOCs (key opinion consumers: ordinary buyers whose shares convert well),
   ~3% are spammers (share very often, to many friends, and rarely convince anyone); at least 5 of each.
2. **Communities and friendships.** Users fall into communities of uneven size. Each user gets a
   lognormal degree target (spammers' are larger). Friendships are wired Chung-Lu style: a `homophily`
   share of the edge draws pairs two members of one community (the community picked in proportion to its
   total degree target), the rest pairs any two users; both endpoints are drawn in proportion to their
   targets. Self loops and duplicates are dropped, so degrees are heavy-tailed and most links stay inside
   a community. `social.csv` holds both arcs of every friendship.
3. **Influence.** Every user has a persuasion (normal ~0.02-0.1, KOC 0.2-0.4, spammer ~0.005) and a
   susceptibility (lognormal around 1). The true base probability of an arc is
   `p_uv = clip(persuasion[u] * susceptibility[v], 0.001, 0.6)`, rounded to 6 decimals before it is used.
4. **Interests.** Each community has a Dirichlet profile over the 12 categories; a user's interests are a
   Dirichlet draw centred on a mix of the community profile and the global category mix (homophily in
   taste). `weight(v, c) = 12 * interest(v, c)` (mean 1 over categories), rounded to 4 decimals, at least
   1e-4. The true probability that a share of a product of category c from u makes v buy is

       min(1, p_uv * weight(v, c))

   `truth/influence.csv` holds p_uv for every social arc and `truth/interests.csv` holds weight(v, c) for
   every (user, category) pair.
5. **Products.** Category from a skewed category mix, price lognormal around the category's typical price,
   seller from a heavy-tailed seller size distribution, ~95% in stock. Each product has a quality and a
   heavy-tailed exposure; its popularity (how often organic buyers pick it) is their product.
6. **Organic purchases.** Each user makes a Poisson number of organic purchase attempts (activity varies
   per user) at uniform times over `days` days from 2025-01-01 UTC: category from the user's interests,
   product by popularity within the category.
7. **Cascades.** Events run in time order. After any purchase the buyer may share the product to some
   friends (KOCs and spammers more often and to more friends); spammers also push popular products they
   did not buy, to many friends at a time. A share converts with the true probability above unless the
   recipient already bought the product; the converted purchase follows after a random delay, is
   attributed to the share (`purchases.share_id`) and may be shared onward, so cascades are multi-hop
   with increasing timestamps (late ones may end after the window). Nobody buys a product twice.
8. **Logging.** `log="all"` writes every share; `log="successes-only"` only those a purchase is attributed
   to, as real logs record them (truth/ is the same either way).

Two behaviours are off by default (a world made without them is byte for byte what it was before they
existed: they draw from a random stream of their own and change nothing when off):

9. **Recipient fatigue** (`fatigue_window_days > 0`). Each user has a tolerance `tau_v` (lognormal around
   `fatigue_tolerance`) and a mute threshold `m_v` (lognormal around `mute_after`, at least 2). A share u -> v
   at time t is the `j`-th share v got from u (ever). If `j > m_v`, v has muted u: the share is delivered
   but never seen, never converts and does not count. Otherwise v sees it and it converts with

       min(1, p_uv * weight(v, c)) * tau_v / (tau_v + r_v(t))

   where `r_v(t)` is the number of shares v saw before this one at times in `(t - W, t]`
   (`W = fatigue_window_days`); the share with `j = m_v` is the last one seen, and v mutes u right after it.
   `truth/fatigue.csv` holds `tau_v`, `m_v` and `W` (seconds) per user, `truth/mutes.csv` every mute.
10. **Collusive rings** (`rings > 0`). Each ring is a small group of normal users of one community (sizes
   around `ring_size`), made friends with each other, that pushes `ring_products` products of its own: for
   each, one member buys it at a random time in the window and shares it to every ring-mate; a ring-mate buys
   through that share with probability `ring_conversion`, and each member who buys a ring product shares it to
   every ring-mate in turn (never outside the ring). Collusive shares are never muted, never reduced by
   fatigue and not counted in anyone's window. Ring members otherwise live ordinary lives (organic
   purchases, shares to friends with their true p_uv).
   `truth/rings.csv` lists each member and ring, `truth/ring_products.csv` each ring's products.

Files: products.csv, purchases.csv, shares.csv, social.csv, truth/influence.csv, truth/interests.csv,
truth/users.csv (and truth/fatigue.csv, truth/mutes.csv, truth/rings.csv, truth/ring_products.csv with the
features above on). Ids are zero-padded strings (`u000001`, `p00001`, `s0000001`, `seller001`) so they sort;
timestamps are unix seconds.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from sharerank.dataset.schema import FILES, TRUTH
from sharerank.dataset.writer import write_columns

CATEGORIES = ("Beauty", "Baby", "Home", "Food", "Fashion", "Electronics",
              "Sports", "Books", "Toys", "Health", "Pets", "Garden")
# Typical (median) price of each category, same order as CATEGORIES.
CATEGORY_MEDIAN_PRICE = np.array([25.0, 30.0, 40.0, 12.0, 35.0, 120.0, 45.0, 15.0, 25.0, 20.0, 22.0, 30.0])

START_TS = 1_735_689_600  # 2025-01-01 00:00:00 UTC
DAY = 86_400

ROLE_NAMES = ("normal", "koc", "spammer")
NORMAL, KOC, SPAMMER = 0, 1, 2
# Per-role behaviour, indexed by role code.
SHARE_AFTER_PURCHASE = np.array([0.5, 0.7, 0.9])   # chance a buyer shares what they bought
EXTRA_RECIPIENTS = np.array([2.0, 3.0, 12.0])       # recipients per share action = 1 + Poisson(this)
DEGREE_BOOST = np.array([1.0, 1.0, 2.5])            # spammers befriend more people
SPAM_ACTIONS_PER_DAY = 0.06                          # spammer pushes of products they did not buy
SHARE_DELAY_MEAN = 6 * 3600                          # purchase -> share, seconds (exponential)
CONVERT_DELAY_MEAN = DAY                             # share -> converted purchase, seconds (exponential)

# Event kinds of the cascade loop.
PURCHASE, SHARE, SPAM = 0, 1, 2
# A share's fate under fatigue: muted (never seen), seen and counted in the recipient's window, or seen
# without counting (fatigue off, or a collusive share).
UNSEEN, SEEN_COUNTED, SEEN = 0, 1, 2
TRUST_STREAM = 15  # the third word of the fatigue-and-rings random stream's seed (the issue that added them)


@dataclass(frozen=True)
class WorldKnobs:
    """The few knobs of the world; `resolve` fills defaults that scale with the number of users."""

    products: int            # catalogue size; default max(200, users // 5)
    communities: int         # default max(5, users // 200)
    mean_degree: float       # mean friend count target; default 12
    homophily: float         # share of friendship draws inside a community; default 0.85
    koc_fraction: float      # default 0.02 (at least 5 KOCs)
    spammer_fraction: float  # default 0.03 (at least 5 spammers)
    organic_per_user: float  # mean organic purchase attempts per user; default 4
    days: int                # length of the organic purchase window; default 180
    fatigue_window_days: float  # recipient fatigue window W in days; default 0 (no fatigue, no muting)
    fatigue_tolerance: float    # median per-person tolerance tau_v (with fatigue on); default 2
    mute_after: float           # median shares from one sender before a person mutes them; default 6
    rings: int                  # collusive rings; default 0 (none)
    ring_size: int              # typical members per ring (each ring ring_size - 2 .. + 2, at least 3); default 6
    ring_products: int          # products each ring pushes; default 6
    ring_conversion: float      # chance a ring-mate buys through a collusive share; default 0.7

    @classmethod
    def resolve(cls, users: int, **overrides) -> WorldKnobs:
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown world knobs: {sorted(unknown)}")
        if users < 50:
            raise ValueError("users must be at least 50")
        defaults = dict(products=max(200, users // 5), communities=max(5, users // 200), mean_degree=12.0,
                        homophily=0.85, koc_fraction=0.02, spammer_fraction=0.03, organic_per_user=4.0,
                        days=180, fatigue_window_days=0.0, fatigue_tolerance=2.0, mute_after=6.0, rings=0,
                        ring_size=6, ring_products=6, ring_conversion=0.7)
        knobs = cls(**{**defaults, **overrides})
        if not 0.0 <= knobs.homophily <= 1.0:
            raise ValueError("homophily must be in [0, 1]")
        if knobs.fatigue_window_days < 0 or knobs.fatigue_tolerance <= 0 or knobs.mute_after < 2:
            raise ValueError("need fatigue_window_days >= 0, fatigue_tolerance > 0 and mute_after >= 2")
        if knobs.rings < 0 or knobs.ring_size < 3 or knobs.ring_products < 1:
            raise ValueError("need rings >= 0, ring_size >= 3 and ring_products >= 1")
        if not 0.0 <= knobs.ring_conversion <= 1.0:
            raise ValueError("ring_conversion must be in [0, 1]")
        if knobs.rings * (knobs.ring_size + 2) > users // 2:
            raise ValueError(f"{knobs.rings} rings of about {knobs.ring_size} would take more than half of "
                             f"{users} users")
        if knobs.products < len(CATEGORIES) or knobs.communities < 1 or knobs.communities > users:
            raise ValueError("need products >= number of categories and 1 <= communities <= users")
        return knobs


LOG_REGIMES = ("all", "successes-only")
"""What the written shares.csv keeps: every share, or (as real logs do) only the shares that converted."""


def simulate_world(out: Path, *, users: int, seed: int = 0, log: str = "all",
                   progress: Callable[[str, float], None] | None = None, **knobs) -> dict:
    """Write a synthetic world to `out` and return a JSON-able summary.

    `log="successes-only"` drops the shares nobody bought through from shares.csv, as real cascade logs do; the
    world itself, truth/ included, is the same as with `log="all"`, so what is learned from either can be
    measured against the same truth. `progress(stage, fraction)` is called as each stage starts, with the
    overall fraction done.
    Knobs: see `WorldKnobs`. The summary counts users, products, communities, KOCs, spammers, social arcs
    (= 2 x friendships), purchases (organic / via a share), shares; `max_cascade_depth` is the most share
    hops behind any purchase; `seconds` is the wall time (the only non-deterministic field).
    """
    started = time.perf_counter()
    if log not in LOG_REGIMES:
        raise ValueError(f"log must be one of {', '.join(LOG_REGIMES)}, got {log!r}")
    k = WorldKnobs.resolve(users, **knobs)
    report = progress or (lambda stage, fraction: None)
    rng = np.random.default_rng(np.random.SeedSequence([seed, users]))
    # Fatigue and rings draw from a stream of their own, so the rest of the world draws what it always drew.
    trust_rng = np.random.default_rng(np.random.SeedSequence([seed, users, TRUST_STREAM]))

    report("graph", 0.0)
    roles = _assign_roles(rng, users, k.koc_fraction, k.spammer_fraction)
    community = _assign_communities(rng, users, k.communities)
    targets = _degree_targets(rng, roles, k.mean_degree)
    pairs = _wire_friendships(rng, community, targets, k.homophily)
    ring_of = _assign_rings(trust_rng, roles, community, k.rings, k.ring_size)
    if k.rings:
        pairs = _with_ring_friendships(users, ring_of, *pairs)
    indptr, friends = _friend_lists(users, *pairs)
    arc_p = _true_influence(rng, roles, indptr, friends)

    report("interests", 0.2)
    weight = _interest_weights(rng, community, k.communities)
    products = _make_products(rng, k.products)

    report("organic", 0.3)
    schedule = _schedule(rng, weight, products, roles, k)
    ring_product = _ring_products(trust_rng, ring_of, k)
    if k.rings:
        schedule = _with_ring_launches(trust_rng, schedule, ring_of, ring_product, k.days * DAY)
    tolerance, mute_after = _fatigue(trust_rng, users, k)

    report("cascades", 0.4)
    ring_ptr, ring_members = _ring_lists(ring_of)
    purchases, shares, mutes = _run_cascades(
        *schedule, indptr, friends, arc_p, weight, products["category"], SHARE_AFTER_PURCHASE[roles],
        EXTRA_RECIPIENTS[roles], int(rng.integers(2**31)), round(k.fatigue_window_days * DAY), tolerance,
        mute_after, ring_of, ring_ptr, ring_members, ring_product, k.ring_conversion)

    report("write", 0.7)
    logged = np.ones(len(shares), dtype=bool)
    if log == "successes-only":
        logged[:] = False
        logged[purchases[purchases[:, 3] >= 0, 3]] = True
    _write_world(Path(out), users, community, roles, indptr, friends, arc_p, weight, products,
                 purchases, shares, logged)
    _write_trust(Path(out), users, k, tolerance, mute_after, mutes, ring_of, ring_product)
    report("done", 1.0)

    via_share = int((purchases[:, 3] >= 0).sum())
    extra = {}
    if k.fatigue_window_days > 0:
        extra.update(fatigue_window_days=k.fatigue_window_days, mutes=int(len(mutes)),
                     shares_unseen=int((shares[:, 4] == UNSEEN).sum()))
    if k.rings:
        attributed = purchases[purchases[:, 3] >= 0]
        collusive = _collusive(shares[attributed[:, 3]], ring_of, ring_product)
        extra.update(rings=k.rings, ring_members=int((ring_of >= 0).sum()), collusive_purchases=int(collusive.sum()))
    return {
        "users": users, "seed": seed, "products": k.products, "communities": k.communities,
        "kocs": int((roles == KOC).sum()), "spammers": int((roles == SPAMMER).sum()),
        "social_arcs": int(friends.size), "friendships": int(friends.size // 2),
        "purchases": int(len(purchases)), "organic_purchases": int(len(purchases)) - via_share,
        "share_purchases": via_share, "shares": int(len(shares)),
        "share_driven_purchase_fraction": round(via_share / max(1, len(purchases)), 4),
        "log": log, "shares_logged": int(logged.sum()),
        "max_cascade_depth": int(purchases[:, 4].max(initial=0)),
        **extra,
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---------------------------------------------------------------------------------------------- people


def _assign_roles(rng, n: int, koc_fraction: float, spammer_fraction: float) -> np.ndarray:
    n_koc = max(5, round(koc_fraction * n))
    n_spam = max(5, round(spammer_fraction * n))
    roles = np.full(n, NORMAL, dtype=np.int8)
    chosen = rng.permutation(n)[: n_koc + n_spam]
    roles[chosen[:n_koc]] = KOC
    roles[chosen[n_koc:]] = SPAMMER
    return roles


def _assign_communities(rng, n: int, n_communities: int) -> np.ndarray:
    """Uneven community sizes; every community gets at least one member."""
    sizes = rng.dirichlet(np.full(n_communities, 2.0))
    community = rng.choice(n_communities, size=n, p=sizes)
    community[rng.permutation(n)[:n_communities]] = np.arange(n_communities)
    return community.astype(np.int32)


def _degree_targets(rng, roles: np.ndarray, mean_degree: float) -> np.ndarray:
    """Lognormal targets (mean `mean_degree` before the role boost), capped so Chung-Lu stays sane."""
    sigma = 1.0
    targets = rng.lognormal(np.log(mean_degree) - sigma**2 / 2, sigma, roles.size) * DEGREE_BOOST[roles]
    return np.clip(targets, 1.0, min(roles.size - 1, 40 * mean_degree))


def _choose_in_groups(rng, group_of_draw: np.ndarray, item_group: np.ndarray,
                      item_weight: np.ndarray) -> np.ndarray:
    """For each draw, pick an item of the draw's group with probability proportional to its weight."""
    order = np.argsort(item_group, kind="stable")
    cum = np.cumsum(item_weight[order])
    first = np.searchsorted(item_group[order], np.arange(item_group.max() + 2))
    lo = np.where(first[group_of_draw] > 0, cum[first[group_of_draw] - 1], 0.0)
    hi = cum[first[group_of_draw + 1] - 1]
    pos = np.searchsorted(cum, lo + rng.random(group_of_draw.size) * (hi - lo), side="right")
    return order[np.minimum(pos, first[group_of_draw + 1] - 1)]


def _wire_friendships(rng, community: np.ndarray, targets: np.ndarray, homophily: float):
    """Chung-Lu friendships, mostly inside communities; returns unique undirected pairs (a < b)."""
    total = targets.sum()
    n_inside = round(homophily * total / 2)
    n_across = round((1 - homophily) * total / 2)
    mass = np.bincount(community, weights=targets)
    edge_community = rng.choice(mass.size, size=n_inside, p=mass / total)
    inside = [_choose_in_groups(rng, edge_community, community, targets) for _ in range(2)]
    anyone = np.zeros(n_across, dtype=np.int64)
    across = [_choose_in_groups(rng, anyone, np.zeros_like(community), targets) for _ in range(2)]
    a = np.concatenate([inside[0], across[0]])
    b = np.concatenate([inside[1], across[1]])
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    pairs = np.sort(lo.astype(np.int64) * community.size + hi)
    pairs = pairs[np.diff(pairs, prepend=-1) != 0]
    return pairs // community.size, pairs % community.size


def _friend_lists(n: int, a: np.ndarray, b: np.ndarray):
    """CSR adjacency holding both arcs of each friendship, friends sorted per user."""
    arcs = np.sort(np.concatenate([a * n + b, b * n + a]))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(arcs // n, minlength=n), out=indptr[1:])
    return indptr, arcs % n


def _true_influence(rng, roles: np.ndarray, indptr: np.ndarray, friends: np.ndarray) -> np.ndarray:
    """p_uv = clip(persuasion[u] * susceptibility[v]) for every arc, in CSR order."""
    n = roles.size
    persuasion = np.clip(rng.lognormal(np.log(0.045), 0.35, n), 0.02, 0.1)
    persuasion[roles == KOC] = rng.uniform(0.2, 0.4, (roles == KOC).sum())
    persuasion[roles == SPAMMER] = rng.uniform(0.003, 0.008, (roles == SPAMMER).sum())
    susceptibility = np.clip(rng.lognormal(0.0, 0.3, n), 0.4, 2.5)
    sharer = np.repeat(np.arange(n), np.diff(indptr))
    return np.round(np.clip(persuasion[sharer] * susceptibility[friends], 0.001, 0.6), 6)


def _interest_weights(rng, community: np.ndarray, n_communities: int) -> np.ndarray:
    """weight(v, c) = 12 * interest(v, c); interests cluster by community."""
    n_cat = len(CATEGORIES)
    global_mix = rng.dirichlet(np.full(n_cat, 4.0))
    profiles = rng.dirichlet(np.full(n_cat, 0.6), n_communities)
    centre = 0.7 * profiles[community] + 0.3 * global_mix
    interest = rng.standard_gamma(6.0 * centre + 0.05)
    interest /= interest.sum(axis=1, keepdims=True)
    return np.maximum(np.round(n_cat * interest, 4), 1e-4)


# --------------------------------------------------------------------------------- fatigue and rings


def _assign_rings(rng, roles: np.ndarray, community: np.ndarray, n_rings: int, ring_size: int) -> np.ndarray:
    """Ring index per user (-1: none): each ring is drawn from the normal users of one community, picked in
    proportion to its normal users among those with room for the ring."""
    ring_of = np.full(roles.size, -1, dtype=np.int64)
    if not n_rings:
        return ring_of
    sizes = np.maximum(3, ring_size + rng.integers(-2, 3, n_rings))
    for ring, size in enumerate(sizes):
        free = (roles == NORMAL) & (ring_of < 0)
        room = np.bincount(community[free], minlength=community.max() + 1).astype(np.float64)
        room[room < size] = 0
        if not room.any():
            raise ValueError(f"no community has {size} normal users left for ring {ring}")
        chosen = rng.choice(room.size, p=room / room.sum())
        members = rng.choice(np.flatnonzero(free & (community == chosen)), size=size, replace=False)
        ring_of[members] = ring
    return ring_of


def _with_ring_friendships(n: int, ring_of: np.ndarray, a: np.ndarray, b: np.ndarray):
    """The friendship pairs (a < b) plus every pair of members of one ring, unique and in pair order."""
    members = np.flatnonzero(ring_of >= 0)
    x, y = np.meshgrid(members, members, indexing="ij")
    same = (ring_of[x] == ring_of[y]) & (x < y)
    pairs = np.unique(np.concatenate([a * n + b, x[same] * n + y[same]]))
    return pairs // n, pairs % n


def _ring_products(rng, ring_of: np.ndarray, k: WorldKnobs) -> np.ndarray:
    """rings x products booleans: the products each ring pushes (one row of False without rings)."""
    chosen = np.zeros((max(1, k.rings), k.products), dtype=np.bool_)
    for ring in range(k.rings):
        chosen[ring, rng.choice(k.products, size=min(k.ring_products, k.products), replace=False)] = True
    return chosen


def _with_ring_launches(rng, schedule, ring_of: np.ndarray, ring_product: np.ndarray, window: int):
    """The schedule plus one purchase per (ring, ring product) by a random member at a random time."""
    ts, kind, actor, product = schedule
    ring, pushed = np.nonzero(ring_product)
    starter = np.array([rng.choice(np.flatnonzero(ring_of == r)) for r in ring], dtype=np.int64)
    ts = np.concatenate([ts, START_TS + rng.integers(0, window, ring.size)])
    kind = np.concatenate([kind, np.full(ring.size, PURCHASE, dtype=np.int64)])
    actor = np.concatenate([actor, starter])
    product = np.concatenate([product, pushed.astype(np.int64)])
    order = np.lexsort((kind, product, actor, ts))
    return ts[order], kind[order], actor[order], product[order]


def _fatigue(rng, n: int, k: WorldKnobs) -> tuple[np.ndarray, np.ndarray]:
    """Per-user tolerance tau_v and mute threshold m_v (unused, and drawn from nothing, without fatigue)."""
    if k.fatigue_window_days <= 0:
        return np.ones(n), np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    tolerance = np.round(rng.lognormal(np.log(k.fatigue_tolerance), 0.5, n), 3).clip(0.05)
    mute_after = np.maximum(2, np.round(rng.lognormal(np.log(k.mute_after), 0.4, n))).astype(np.int64)
    return tolerance, mute_after


def _ring_lists(ring_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of ring members: members of ring r are ring_members[ring_ptr[r]:ring_ptr[r + 1]]."""
    members = np.flatnonzero(ring_of >= 0)
    members = members[np.argsort(ring_of[members], kind="stable")]
    counts = np.bincount(ring_of[members], minlength=1)
    ring_ptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=ring_ptr[1:])
    return ring_ptr, members.astype(np.int64)


def _collusive(share_rows: np.ndarray, ring_of: np.ndarray, ring_product: np.ndarray) -> np.ndarray:
    """Whether each share (sharer, recipient, product, ...) is a ring member's share of a ring product to a
    ring-mate."""
    ring = ring_of[share_rows[:, 0]]
    return (ring >= 0) & (ring == ring_of[share_rows[:, 1]]) & ring_product[np.maximum(ring, 0), share_rows[:, 2]]


# -------------------------------------------------------------------------------------------- products


def _make_products(rng, n: int) -> dict[str, np.ndarray]:
    """Catalogue columns plus `popularity` (quality x heavy-tailed exposure) that drives organic choice."""
    n_cat = len(CATEGORIES)
    category = rng.choice(n_cat, size=n, p=rng.dirichlet(np.full(n_cat, 5.0)))
    category[rng.permutation(n)[:n_cat]] = np.arange(n_cat)  # no empty category
    n_sellers = max(10, n // 25)
    seller = rng.choice(n_sellers, size=n, p=_normalised(rng.lognormal(0.0, 1.2, n_sellers)))
    quality = rng.beta(4.0, 2.0, n)
    exposure = rng.pareto(1.5, n) + 1.0
    return {
        "category": category.astype(np.int64),
        "price": np.round(CATEGORY_MEDIAN_PRICE[category] * rng.lognormal(0.0, 0.6, n), 2).clip(0.5),
        "seller": seller,
        "in_stock": (rng.random(n) < 0.95).astype(np.int8),
        "popularity": quality * exposure,
    }


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


# -------------------------------------------------------------------------------------------- schedule


def _schedule(rng, weight: np.ndarray, products: dict, roles: np.ndarray, k: WorldKnobs):
    """Seed events of the cascade loop, sorted by time: organic purchases and spammer pushes."""
    n = roles.size
    window = k.days * DAY
    activity = rng.gamma(2.0, k.organic_per_user / 2.0, n)
    buyer = np.repeat(np.arange(n), rng.poisson(activity))
    cum_interest = np.cumsum(weight, axis=1)
    u = rng.random(buyer.size) * cum_interest[buyer, -1]
    category = np.minimum((cum_interest[buyer] <= u[:, None]).sum(axis=1), len(CATEGORIES) - 1)
    bought = _choose_in_groups(rng, category, products["category"], products["popularity"])

    spammers = np.flatnonzero(roles == SPAMMER)
    pusher = np.repeat(spammers, rng.poisson(SPAM_ACTIONS_PER_DAY * k.days, spammers.size))
    pushed = rng.choice(products["category"].size, size=pusher.size, p=_normalised(products["popularity"]))

    actor = np.concatenate([buyer, pusher]).astype(np.int64)
    product = np.concatenate([bought, pushed]).astype(np.int64)
    kind = np.concatenate([np.full(buyer.size, PURCHASE), np.full(pusher.size, SPAM)]).astype(np.int64)
    ts = START_TS + rng.integers(0, window, actor.size)
    order = np.lexsort((product, actor, ts))
    return ts[order], kind[order], actor[order], product[order]


# -------------------------------------------------------------------------------------------- cascades


@njit(cache=True)
def _grown(buf, n):
    """Return `buf` with room for row `n`, doubling its capacity when full."""
    if n < buf.shape[0]:
        return buf
    bigger = np.empty((2 * buf.shape[0], buf.shape[1]), dtype=buf.dtype)
    bigger[:n] = buf[:n]
    return bigger


@njit(cache=True)
def _pick_friends(lo, hi, count, scratch):
    """`count` distinct arc positions from [lo, hi), uniformly (partial Fisher-Yates in `scratch`)."""
    degree = hi - lo
    for i in range(degree):
        scratch[i] = lo + i
    for i in range(count):
        j = i + np.random.randint(0, degree - i)
        scratch[i], scratch[j] = scratch[j], scratch[i]
    return scratch[:count]


@njit(cache=True)
def _run_cascades(sched_ts, sched_kind, sched_actor, sched_product, indptr, friends, arc_p, weight,
                  product_category, share_prob, extra_recipients, seed, window, tolerance, mute_after, ring_of,
                  ring_ptr, ring_members, ring_product, ring_p):
    """Play all events in time order; returns purchases (user, product, ts, share, depth), shares
    (sharer, recipient, product, ts, seen: SEEN_COUNTED, SEEN or UNSEEN) and mutes (sharer, recipient, ts),
    all int64, rows in event order, share ids = share row numbers. `window` 0 turns fatigue off (every share
    is seen); without rings every `ring_of` is -1. Neither draws a random number of its own, so with both off
    the stream is the old one."""
    np.random.seed(seed)
    n_users = ring_of.size
    n_products = product_category.size
    purchases = np.empty((max(16, sched_ts.size), 5), dtype=np.int64)
    shares = np.empty((max(16, 2 * sched_ts.size), 5), dtype=np.int64)
    mutes = np.empty((16, 3), dtype=np.int64)
    n_purchases = 0
    n_shares = 0
    n_mutes = 0
    bought = {np.int64(0)}
    bought.clear()
    recent = np.zeros(n_users, dtype=np.int64)  # shares each user saw in the fatigue window
    expired = 0  # shares before this row have left the window (rows are in time order)
    from_sender = {np.int64(0): np.int64(0)}  # (sharer, recipient) -> shares so far
    from_sender.clear()
    scratch = np.empty(np.diff(indptr).max() + 1, dtype=np.int64)
    zero = np.int64(0)
    # Derived events: (ts, seq, kind, actor, product, arc or share id, depth); seq breaks ties in order.
    pending = [(zero, zero, zero, zero, zero, zero, zero)]
    pending.pop()
    seq = np.int64(sched_ts.size)
    next_scheduled = 0
    while next_scheduled < sched_ts.size or len(pending) > 0:
        scheduled_left = next_scheduled < sched_ts.size
        if scheduled_left and (len(pending) == 0 or sched_ts[next_scheduled] <= pending[0][0]):
            i = next_scheduled
            next_scheduled += 1
            ts, kind, actor, product, ref, depth = (sched_ts[i], sched_kind[i], sched_actor[i],
                                                    sched_product[i], np.int64(-1), np.int64(0))
        else:
            ts, _, kind, actor, product, ref, depth = heapq.heappop(pending)

        if kind == SHARE:  # actor shared `product` over arc `ref`
            recipient = friends[ref]
            shares = _grown(shares, n_shares)
            shares[n_shares] = (actor, recipient, product, ts, SEEN)
            p = min(1.0, arc_p[ref] * weight[recipient, product_category[product]])
            ring = ring_of[actor]
            if ring >= 0 and ring_of[recipient] == ring and ring_product[ring, product]:
                p = ring_p  # collusive: no fatigue, no muting
            elif window > 0:
                while shares[expired, 3] <= ts - window:
                    if shares[expired, 4] == SEEN_COUNTED:
                        recent[shares[expired, 1]] -= 1
                    expired += 1
                pair = actor * n_users + recipient
                count = from_sender.get(pair, 0) + 1
                from_sender[pair] = count
                if count > mute_after[recipient]:  # muted: delivered, never seen
                    shares[n_shares, 4] = UNSEEN
                    p = 0.0
                else:
                    p *= tolerance[recipient] / (tolerance[recipient] + recent[recipient])
                    recent[recipient] += 1
                    shares[n_shares, 4] = SEEN_COUNTED
                    if count == mute_after[recipient]:
                        mutes = _grown(mutes, n_mutes)
                        mutes[n_mutes] = (actor, recipient, ts)
                        n_mutes += 1
            if recipient * n_products + product not in bought and np.random.random() < p:
                delay = 1 + np.int64(np.random.exponential(CONVERT_DELAY_MEAN))
                heapq.heappush(pending, (ts + delay, seq, PURCHASE, recipient, product, n_shares, depth))
                seq += 1
            n_shares += 1
            continue

        if kind == PURCHASE:
            key = actor * n_products + product
            if key in bought:
                continue
            bought.add(key)
            purchases = _grown(purchases, n_purchases)
            purchases[n_purchases] = (actor, product, ts, ref, depth)
            n_purchases += 1
            ring = ring_of[actor]
            if ring >= 0 and ring_product[ring, product]:  # a ring member pushes it to every ring-mate
                lo = indptr[actor]
                for m in range(ring_ptr[ring], ring_ptr[ring + 1]):
                    mate = ring_members[m]
                    if mate == actor:
                        continue
                    arc = lo + np.searchsorted(friends[lo:indptr[actor + 1]], mate)
                    delay = 1 + np.int64(np.random.exponential(SHARE_DELAY_MEAN))
                    heapq.heappush(pending, (ts + delay, seq, SHARE, actor, product, arc, depth + 1))
                    seq += 1
                continue
            if np.random.random() >= share_prob[actor]:
                continue
        # A buyer (or a spammer pushing a product) shares it to some friends.
        lo, hi = indptr[actor], indptr[actor + 1]
        count = min(hi - lo, 1 + np.random.poisson(extra_recipients[actor]))
        for arc in _pick_friends(lo, hi, count, scratch):
            delay = 1 + np.int64(np.random.exponential(SHARE_DELAY_MEAN))
            heapq.heappush(pending, (ts + delay, seq, SHARE, actor, product, arc, depth + 1))
            seq += 1
    return purchases[:n_purchases], shares[:n_shares], mutes[:n_mutes]


# ----------------------------------------------------------------------------------------------- files


def _ids(prefix: str, index: np.ndarray, count: int) -> pa.Array:
    """Ids numbered from 1 and zero-padded to the width of `count` (u000042), so they sort like numbers."""
    numbers = pa.array(np.asarray(index, dtype=np.int64) + 1)
    digits = pc.utf8_lpad(pc.cast(numbers, pa.string()), len(str(count)), "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _write_world(out: Path, n_users, community, roles, indptr, friends, arc_p, weight, products,
                 purchases, shares, logged) -> None:
    user_ids = _ids("u", np.arange(n_users), n_users)
    n_products = products["category"].size
    product_ids = _ids("p", np.arange(n_products), n_products)
    n_sellers = int(products["seller"].max()) + 1
    category_names = pa.array(CATEGORIES)
    sharer = np.repeat(np.arange(n_users), np.diff(indptr))

    write_columns(out, FILES["products"], {
        "product_id": product_ids,
        "category": category_names.take(products["category"]),
        "price": products["price"],
        "seller_id": _ids("seller", products["seller"], n_sellers),
        "in_stock": products["in_stock"],
    })
    share_ids = _ids("s", np.arange(len(shares)), len(shares))
    via = purchases[:, 3]
    write_columns(out, FILES["purchases"], {
        "user_id": user_ids.take(purchases[:, 0]),
        "product_id": product_ids.take(purchases[:, 1]),
        "ts": purchases[:, 2],
        "share_id": share_ids.take(pa.array(np.maximum(via, 0), mask=via < 0)),
    })
    kept = np.flatnonzero(logged)
    write_columns(out, FILES["shares"], {
        "share_id": share_ids.take(kept),
        "sharer_id": user_ids.take(shares[kept, 0]),
        "recipient_id": user_ids.take(shares[kept, 1]),
        "product_id": product_ids.take(shares[kept, 2]),
        "ts": shares[kept, 3],
    })
    write_columns(out, FILES["social"], {"src_id": user_ids.take(sharer), "dst_id": user_ids.take(friends)})
    write_columns(out, TRUTH["influence"], {
        "src_id": user_ids.take(sharer), "dst_id": user_ids.take(friends), "p": arc_p,
    })
    n_cat = len(CATEGORIES)
    write_columns(out, TRUTH["interests"], {
        "user_id": user_ids.take(np.repeat(np.arange(n_users), n_cat)),
        "category": category_names.take(np.tile(np.arange(n_cat), n_users)),
        "weight": weight.ravel(),
    })
    write_columns(out, TRUTH["users"], {
        "user_id": user_ids, "community": community, "role": pa.array(ROLE_NAMES).take(roles),
    })


def _write_trust(out: Path, n_users: int, k: WorldKnobs, tolerance, mute_after, mutes, ring_of,
                 ring_product) -> None:
    """truth/fatigue.csv and truth/mutes.csv with fatigue on, truth/rings.csv and truth/ring_products.csv with
    rings; nothing otherwise."""
    user_ids = _ids("u", np.arange(n_users), n_users)
    if k.fatigue_window_days > 0:
        write_columns(out, TRUTH["fatigue"], {
            "user_id": user_ids, "tolerance": tolerance, "mute_after": mute_after,
            "window_s": np.full(n_users, round(k.fatigue_window_days * DAY), dtype=np.int64),
        })
        write_columns(out, TRUTH["mutes"], {
            "src_id": user_ids.take(mutes[:, 0]), "dst_id": user_ids.take(mutes[:, 1]), "ts": mutes[:, 2],
        })
    if k.rings:
        members = np.flatnonzero(ring_of >= 0)
        members = members[np.lexsort((members, ring_of[members]))]
        write_columns(out, TRUTH["rings"], {"user_id": user_ids.take(members), "ring": ring_of[members]})
        ring, product = np.nonzero(ring_product)
        write_columns(out, TRUTH["ring_products"], {
            "ring": ring, "product_id": _ids("p", product, k.products),
        })
