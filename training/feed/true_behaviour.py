"""How a simulated world's people answer a feed page: the chance each shown product is bought, from ``truth/``.

The feed is scored as the simulator would have its people behave (``training/sources/simulate.py``, items 4, 6,
7, 9 and 10), at one moment ``at`` and for the shares the feed could know of, those made in ``[since, at]``:

- **A product shared to the user** converts as a share does in the world: each distinct sharer ``s`` of it in
  ``[since, at]`` is one trial with the true probability

  .. math::
      p_s = \\min(1, p_{su}\\, w(u, c)) \\cdot \\frac{\\tau_u}{\\tau_u + r_u(at)}

  (``truth/influence.csv``, ``interests.csv``, ``fatigue.csv``), and ``p_s = 0`` when ``u`` has muted ``s`` by
  ``at`` (``truth/mutes.csv``). ``r_u(at)`` counts the shares ``u`` saw in ``(at - W, at]`` as the simulator counts
  them: muted and collusive shares (a ring member's share of the ring's product to a ring-mate) do not count.
  Showing a share again is not a new share: the page does not add to ``r_u``. A collusive share is scored by the
  same formula, not by the ring's own conversion (that is collusion, not something a feed earns). A world without
  fatigue has no ``tau``, no mutes: the factor is 1.
- **Any shown product** may also be bought organically. The simulator draws a user's organic purchases by
  interest, then by popularity within the category (item 6); it does not write the popularity, so a product's
  share of its category is read from the world's organic purchases, add-one smoothed:
  ``pi_u(i) = w(u, c_i) / sum_c w(u, c) * (n_i + 1) / sum_{j in c_i} (n_j + 1)`` (sums to 1 over the catalogue),
  and the user's organic rate is their own organic purchases per day over the world's span (an unbiased
  estimate of their activity). Over ``organic_days`` the product is bought organically with probability
  ``o = 1 - exp(-rate_u * organic_days * pi_u(i))``.
- A product the user bought by ``at`` converts with probability 0 (nobody buys twice); otherwise
  ``P = 1 - (1 - o) * prod_s (1 - p_s)``.

A page's expected conversions are the sum of its products' ``P``. This needs every share the world made
(``sharerank simulate --log all``): fatigue counts the shares that did not convert too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from sharerank.dataset.reader import Dataset, has_truth, read_truth
from sharerank.dataset.schema import TRUTH

DAY = 86_400.0


@dataclass(frozen=True)
class TrueBehaviour:
    """The world's true answer to a feed shown at ``at`` (unix seconds); rows are the dataset's user and product
    rows. Build it with :meth:`from_world`.

    Args:
        at: when the page is shown.
        since: the first moment whose shares the feed knows (the online store was filled from here).
        share_p: ``{(user, product): [p_s, ...]}``: one true conversion probability per distinct sharer of the
            product to the user in ``[since, at]`` (0 for a muted sharer).
        shared_by: ``{(user, product): {sharer rows}}`` for the same pairs.
        organic_rate: expected organic purchase attempts of each user row over the horizon.
        interest: ``weight(u, c)`` per user row and category (categories sorted by name).
        product_category: each product row's category column in ``interest``.
        category_share: each product's (smoothed) share of its category's organic purchases.
        bought: ``{(user, product)}`` bought at or before ``at``.
        fatigue: ``tau_u / (tau_u + r_u(at))`` per user row (1 without fatigue).
        muted: ``{(sharer, user)}`` pairs where ``user`` muted ``sharer`` by ``at``.
    """

    at: float
    since: float
    share_p: dict[tuple[int, int], list[float]]
    shared_by: dict[tuple[int, int], set[int]]
    organic_rate: np.ndarray
    interest: np.ndarray
    product_category: np.ndarray
    category_share: np.ndarray
    bought: frozenset[tuple[int, int]]
    fatigue: np.ndarray
    muted: frozenset[tuple[int, int]]

    @classmethod
    def from_world(cls, dataset: Dataset, *, since: float, at: float, organic_days: float = 7.0) -> TrueBehaviour:
        """Reads ``truth/`` of the simulated world ``dataset`` was loaded from.

        Raises:
            ValueError: the folder is not a simulated world, or its share log is not complete (successes only).
        """
        root = Path(dataset.root)
        if not has_truth(root):
            raise ValueError(f"{root}: not a simulated world (no truth/): the replay scores pages by the true model")
        if dataset.shares is None or len(dataset.shares.id) == 0:
            raise ValueError(f"{root}: no shares.csv: nothing was shared to anyone")
        if not since <= at:
            raise ValueError(f"need since <= at, got {since} > {at}")
        if organic_days < 0:
            raise ValueError(f"organic_days must be >= 0, got {organic_days}")
        _require_complete_log(dataset)
        users = {str(u): i for i, u in enumerate(dataset.users)}
        n_users, n_products = dataset.num_users, dataset.num_products
        categories = np.unique(np.asarray(dataset.category, dtype=str))
        product_category = np.searchsorted(categories, np.asarray(dataset.category, dtype=str))

        interest = _interest(read_truth(root, "interests"), users, categories, n_users)
        p_arc = _arcs(read_truth(root, "influence"), users, n_users)
        ring_of, ring_products = _rings(root, users, dataset)
        tolerance, mute_after, window = _fatigue_truth(root, users, n_users)
        muted = frozenset(_mutes(root, users, at)) if tolerance is not None else frozenset()

        shares = dataset.shares
        order = np.argsort(shares.id, kind="stable")  # zero-padded ids: event order, as the simulator ran them
        sharer, recipient, product, ts = (a[order] for a in (shares.sharer, shares.recipient, shares.product,
                                                             shares.ts))
        collusive = _collusive(sharer, recipient, product, ring_of, ring_products)
        if tolerance is None:
            fatigue = np.ones(n_users)
        else:
            seen = _seen(sharer, recipient, collusive, mute_after, n_users)
            recent = seen & ~collusive & (ts > at - window) & (ts <= at)
            received = np.bincount(recipient[recent], minlength=n_users)
            fatigue = tolerance / (tolerance + received)

        known = (ts >= since) & (ts <= at)
        share_p: dict[tuple[int, int], list[float]] = {}
        shared_by: dict[tuple[int, int], set[int]] = {}
        keys = sharer[known] * n_users + recipient[known]
        arc = np.searchsorted(p_arc[0], keys)
        arc = np.minimum(arc, len(p_arc[0]) - 1)
        if not np.array_equal(p_arc[0][arc], keys):
            missing = int(np.flatnonzero(p_arc[0][arc] != keys)[0])
            raise ValueError(f"truth/influence.csv has no arc for a share from row {sharer[known][missing]} to "
                             f"{recipient[known][missing]}: not this world's truth")
        p = np.minimum(1.0, p_arc[1][arc] * interest[recipient[known], product_category[product[known]]])
        p = p * fatigue[recipient[known]]
        for s, u, i, value in zip(sharer[known].tolist(), recipient[known].tolist(), product[known].tolist(),
                                  p.tolist(), strict=True):
            sharers = shared_by.setdefault((u, i), set())
            if s in sharers:  # one trial per person: the same sharer again is the same recommendation
                continue
            sharers.add(s)
            share_p.setdefault((u, i), []).append(0.0 if (s, u) in muted else value)

        purchases = dataset.purchases
        done = purchases.ts <= at
        bought = frozenset(zip(purchases.user[done].tolist(), purchases.product[done].tolist(), strict=True))
        organic = purchases.share < 0
        counts = np.bincount(purchases.product[organic], minlength=n_products) + 1.0
        per_category = np.bincount(product_category, weights=counts, minlength=len(categories))
        span_days = max(1.0, float(np.ptp(purchases.ts[organic])) / DAY) if organic.any() else 1.0
        rate = np.bincount(purchases.user[organic], minlength=n_users) / span_days * organic_days
        return cls(at=at, since=since, share_p=share_p, shared_by=shared_by, organic_rate=rate,
                   interest=interest, product_category=product_category,
                   category_share=counts / per_category[product_category], bought=bought, fatigue=fatigue,
                   muted=muted)

    def organic(self, user: int, products: np.ndarray) -> np.ndarray:
        """Chance the user buys each product organically over the horizon."""
        weights = self.interest[user]
        pick = weights[self.product_category[products]] / weights.sum() * self.category_share[products]
        return -np.expm1(-self.organic_rate[user] * pick)

    def shared(self, user: int, products: np.ndarray) -> np.ndarray:
        """Chance each product converts through its shares to the user (0 when nobody shared it in the window)."""
        return np.array([1.0 - np.prod([1.0 - p for p in self.share_p.get((user, int(i)), ())]) for i in products])

    def conversion(self, user: int, products: np.ndarray) -> np.ndarray:
        """Chance the user buys each shown product: through its shares or organically, 0 once bought."""
        products = np.asarray(products, dtype=np.int64)
        p = 1.0 - (1.0 - self.organic(user, products)) * (1.0 - self.shared(user, products))
        gone = np.fromiter(((user, int(i)) in self.bought for i in products), dtype=bool, count=len(products))
        return np.where(gone, 0.0, p)


def _require_complete_log(dataset: Dataset) -> None:
    """The simulator numbers shares in event order (``s0000001`` is row 1); a log of successes only has gaps."""
    digits = np.char.lstrip(np.asarray(dataset.shares.id, dtype=str), "s")
    try:
        numbers = np.sort(digits.astype(np.int64))
    except ValueError:
        raise ValueError(f"{dataset.root}: share ids are not the simulator's (s0000001...)") from None
    if len(numbers) and numbers[-1] - numbers[0] + 1 != len(numbers):
        raise ValueError(f"{dataset.root}: shares.csv lacks shares (a log of successes only?); the true fatigue "
                         "counts every share: simulate with --log all")


def _rows(column, users: dict[str, int]) -> np.ndarray:
    return np.fromiter((users.get(u, -1) for u in column.to_pylist()), dtype=np.int64)


def _interest(table, users: dict[str, int], categories: np.ndarray, n_users: int) -> np.ndarray:
    user = _rows(table.column("user_id"), users)
    category = np.asarray(table.column("category").to_pylist(), dtype=str)
    column = np.searchsorted(categories, category)
    known = (user >= 0) & (column < len(categories))
    known[known] &= categories[column[known]] == category[known]
    interest = np.zeros((n_users, len(categories)))
    interest[user[known], column[known]] = table.column("weight").to_numpy()[known]
    return interest


def _arcs(table, users: dict[str, int], n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """True ``p_uv`` of every arc as ``(sorted keys src * n + dst, p)``."""
    src, dst = _rows(table.column("src_id"), users), _rows(table.column("dst_id"), users)
    known = (src >= 0) & (dst >= 0)
    keys = src[known] * n_users + dst[known]
    order = np.argsort(keys, kind="stable")
    return keys[order], table.column("p").to_numpy()[known][order]


def _rings(root: Path, users: dict[str, int], dataset: Dataset) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Ring of each user row (-1: none) and the ``(ring, product row)`` pairs each ring pushes."""
    ring_of = np.full(dataset.num_users, -1, dtype=np.int64)
    if not TRUTH["rings"].path(root).exists():
        return ring_of, set()
    members = read_truth(root, "rings")
    rows = _rows(members.column("user_id"), users)
    ring_of[rows[rows >= 0]] = members.column("ring").to_numpy()[rows >= 0].astype(np.int64)
    pushed = read_truth(root, "ring_products")
    products = {str(p): i for i, p in enumerate(dataset.products)}
    pairs = {(int(r), products[p]) for r, p in zip(pushed.column("ring").to_pylist(),
                                                   pushed.column("product_id").to_pylist(), strict=True)
             if p in products}
    return ring_of, pairs


def _collusive(sharer, recipient, product, ring_of: np.ndarray, ring_products: set[tuple[int, int]]) -> np.ndarray:
    ring = ring_of[sharer]
    inside = (ring >= 0) & (ring == ring_of[recipient])
    out = np.zeros(len(sharer), dtype=bool)
    for i in np.flatnonzero(inside).tolist():
        out[i] = (int(ring[i]), int(product[i])) in ring_products
    return out


def _fatigue_truth(root: Path, users: dict[str, int], n_users: int):
    """``(tolerance, mute_after, window_s)`` per user row, or ``(None, None, 0)`` in a world without fatigue."""
    if not TRUTH["fatigue"].path(root).exists():
        return None, None, 0.0
    table = read_truth(root, "fatigue")
    rows = _rows(table.column("user_id"), users)
    known = rows >= 0
    tolerance = np.ones(n_users)
    mute_after = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    tolerance[rows[known]] = table.column("tolerance").to_numpy()[known]
    mute_after[rows[known]] = table.column("mute_after").to_numpy()[known].astype(np.int64)
    window = float(pc.max(table.column("window_s")).as_py() or 0.0)
    return tolerance, mute_after, window


def _mutes(root: Path, users: dict[str, int], at: float) -> set[tuple[int, int]]:
    """``(sharer, user)`` pairs: ``user`` (``dst_id``) muted ``sharer`` (``src_id``) at or before ``at``."""
    table = read_truth(root, "mutes")
    src, dst = _rows(table.column("src_id"), users), _rows(table.column("dst_id"), users)
    when = table.column("ts").to_numpy()
    keep = (src >= 0) & (dst >= 0) & (when <= at)
    return set(zip(src[keep].tolist(), dst[keep].tolist(), strict=True))


def _seen(sharer, recipient, collusive, mute_after: np.ndarray, n_users: int) -> np.ndarray:
    """Whether the recipient saw each share (rows in event order): the ``j``-th ordinary share from one sender
    is seen while ``j <= m_recipient``; collusive shares are always seen (and never counted)."""
    pair = sharer * n_users + recipient
    ordinary = np.flatnonzero(~collusive)
    order = ordinary[np.argsort(pair[ordinary], kind="stable")]
    grouped = pair[order]
    starts = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    j = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1
    seen = np.ones(len(sharer), dtype=bool)
    seen[order] = j <= mute_after[recipient[order]]
    return seen
