"""The trials influence is learned from: which shares (or exposures) reached someone who could still convert,
and whether they did.

Two logging regimes, told apart from the data:

- **recorded**: the log holds shares that failed too (the simulator, RecordEvents shares without a purchase).
  Every share whose recipient had not bought the product yet is a trial; it converted when a purchase is
  attributed to it.
- **exposure** (successes only): real cascade logs (christianity, BeiBei) keep only the shares that converted,
  so almost every recorded share is a success and per-arc rates come out ~1. Failed trials are inferred
  from exposure, after Goyal, Bonchi and Lakshmanan (WSDM'10): when a user adopts a product, each active
  friend (either direction of a social link or a share) who had not adopted it yet was exposed; the exposure
  converted when that friend's adoption is credited to a share from the user within the learned window
  (:data:`WINDOW_QUANTILE` of the credited delays), and failed otherwise. "Active" means the friend adopted
  something in the training data: someone who never uses the platform cannot fail to respond to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sharerank.dataset.reader import Dataset

SUCCESSES_ONLY_RATE = 0.95
"""A log whose recorded trial shares convert at least this often records only successes (real logs: 1.0;
the simulator with failures logged: ~0.05)."""
WINDOW_QUANTILE = 0.99
"""The exposure window is this quantile of the delays between a sharer's adoption and the credited adoption."""
REGIMES = ("auto", "recorded", "exposure")


@dataclass(frozen=True)
class Trials:
    """One row per trial: ``sender`` reached ``recipient`` with ``product``; ``converted``; ``counted``: the
    conversion is a purchase that the affinity counts also hold (so the trial's features can leave it out)."""

    sender: np.ndarray
    recipient: np.ndarray
    product: np.ndarray
    converted: np.ndarray
    counted: np.ndarray
    regime: str
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sender)


def share_trials(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per share: is it a trial (its recipient had not bought the product before it), did it convert, and
    when (inf: never)."""
    shares, purchases = dataset.shares, dataset.purchases
    ts = np.nan_to_num(purchases.ts, nan=np.inf)  # a purchase of unknown time never disqualifies a share
    attributed = purchases.share >= 0
    converted_ts = np.full(len(shares.id), np.inf)
    converted_ts[purchases.share[attributed]] = ts[attributed]
    key, first_ts = first_adoptions(dataset)
    bought_at = lookup(key, shares.recipient * dataset.num_products + shares.product, first_ts, missing=np.inf)[0]
    return ~(bought_at < shares.ts), converted_ts < np.inf, converted_ts


def first_adoptions(dataset: Dataset, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys ``user * num_products + product`` of the purchases (``keep``: a mask over them) and
    the time of each pair's first purchase (inf when unknown)."""
    purchases = dataset.purchases
    ts = np.nan_to_num(purchases.ts, nan=np.inf)
    key = purchases.user * dataset.num_products + purchases.product
    if keep is not None:
        key, ts = key[keep], ts[keep]
    order = np.lexsort((ts, key))
    key, ts = key[order], ts[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    return key[first], ts[first]


def learning_trials(dataset: Dataset, share_mask: np.ndarray, purchase_mask: np.ndarray,
                    regime: str = "auto") -> Trials:
    """The trials of the shares in ``share_mask`` (recorded) or of the adoptions in ``purchase_mask``
    (exposure), in the regime asked for or, with ``auto``, the one the log shows.

    Raises:
        ValueError: an unknown regime, or nothing to learn from.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    trial, converted, converted_ts = share_trials(dataset)
    keep = share_mask & trial
    if not keep.any():
        raise ValueError("no shares to learn from (the mask selects none, or every recipient had bought)")
    rate = float(converted[keep].mean())
    inferred = "exposure" if rate >= SUCCESSES_ONLY_RATE else "recorded"
    info = {"regime_inferred": inferred, "recorded_trials": int(keep.sum()),
            "recorded_conversion_rate": round(rate, 4)}
    if (inferred if regime == "auto" else regime) == "recorded":
        cutoff = dataset.shares.ts[share_mask].max()
        shares = dataset.shares
        own = converted & (converted_ts <= cutoff)
        return Trials(shares.sharer[keep], shares.recipient[keep], shares.product[keep], converted[keep], own[keep],
                      "recorded", info)
    return _exposure_trials(dataset, share_mask & converted, purchase_mask, info)


def _exposure_trials(dataset: Dataset, credited_mask: np.ndarray, purchase_mask: np.ndarray, info: dict) -> Trials:
    shares, n, n_products = dataset.shares, dataset.num_users, dataset.num_products
    key, adopted_at = first_adoptions(dataset, purchase_mask)
    finite = np.isfinite(adopted_at)
    key, adopted_at = key[finite], adopted_at[finite]
    user, product = key // n_products, key % n_products
    active = np.zeros(n, dtype=bool)
    active[user] = True

    # Credited shares: the delay from the sharer's adoption to the recipient's, and the learned window.
    s, r, c = shares.sharer[credited_mask], shares.recipient[credited_mask], shares.product[credited_mask]
    sharer_at = lookup(key, s * n_products + c, adopted_at, missing=np.nan)[0]
    recipient_at = lookup(key, r * n_products + c, adopted_at, missing=np.nan)[0]
    delay = recipient_at - sharer_at
    known = np.isfinite(delay)
    window = float(np.quantile(delay[known], WINDOW_QUANTILE)) if known.any() else np.inf
    in_window = known & (delay <= window)
    success = np.unique(((s * n + r) * n_products + c)[in_window])

    # Every adoption exposes the adopter's active friends who had not adopted the product yet.
    src, dst = dataset.network_arcs()
    pairs = np.unique(np.r_[src * n + dst, dst * n + src])
    pairs = pairs[pairs // n != pairs % n]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // n, minlength=n), out=indptr[1:])
    neighbour = pairs % n
    degree = indptr[user + 1] - indptr[user]
    trial_adoption = np.repeat(np.arange(len(user)), degree)
    offset = np.arange(len(trial_adoption)) - np.repeat(np.cumsum(degree) - degree, degree)
    v = neighbour[indptr[user][trial_adoption] + offset]
    u, p, t_u = user[trial_adoption], product[trial_adoption], adopted_at[trial_adoption]
    t_v = lookup(key, v * n_products + p, adopted_at, missing=np.inf)[0]
    y = np.isin((u * n + v) * n_products + p, success)
    exposed = active[v] & ((t_v > t_u) | y)
    info.update({"exposure_window_seconds": window, "window_quantile": WINDOW_QUANTILE,
                 "adoptions": int(len(user)), "active_users": int(active.sum()),
                 "exposure_trials": int(exposed.sum()), "exposure_successes": int(y[exposed].sum()),
                 "credited_beyond_window": int((known & ~in_window).sum())})
    return Trials(u[exposed], v[exposed], p[exposed], y[exposed], y[exposed], "exposure", info)


def lookup(keys: np.ndarray, query: np.ndarray, *values: np.ndarray, missing: float = 0.0):
    """Values at ``query`` in sorted unique ``keys`` (``missing`` where absent)."""
    if not len(keys):
        return tuple(np.full(np.shape(query), missing) for _ in values)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    found = keys[pos] == query
    return tuple(np.where(found, val[pos], missing) for val in values)
