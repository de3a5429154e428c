"""``sharerank demand``: share and purchase volumes per period, per category and per community (friend circles
by label propagation on the social graph and share partners), their next-period forecasts scored against the
naive one (:mod:`~sharerank.training.demand.forecast`), and the products whose share-to-purchase conversion is
rising: what producers could make more of before the orders come in (C2M)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sharerank.dataset.reader import Dataset, load_dataset
from sharerank.models.recommenders.graph import friends_matrix
from sharerank.models.seeding.communities import label_propagation
from sharerank.training.demand.forecast import MIN_PERIODS, VALIDATION_PERIODS, score_series

TOP_COMMUNITIES = 20
"""Communities reported (and scored): the largest by purchases."""
MIN_SHARES = 20
"""Shares a product needs in each window before its conversion can be called rising."""
Z95 = 1.959963984540054
TAIL_FRACTION = 0.5
"""Trailing days with fewer events than this share of the median day are left out (see
:func:`observed_window`)."""
DAY = 86400.0


def period_index(ts: np.ndarray, start: float, width: float, periods: int) -> np.ndarray:
    """The period of each time, -1 outside the observed window."""
    index = np.floor((ts - start) / width).astype(np.int64)
    return np.where((index >= 0) & (index < periods), index, -1)


def observed_window(ts: np.ndarray, width: float) -> tuple[float, int]:
    """``(start, periods)``: whole periods ending with the last day that holds at least :data:`TAIL_FRACTION` of
    the median day's events, counted back from there (a partial first period is left out). A partial last
    period, or a log's thin tail (cascades running past the window), would look like demand collapsing."""
    first = float(ts.min())
    days = np.bincount(((ts - first) // DAY).astype(np.int64))
    busy = np.flatnonzero(days >= TAIL_FRACTION * np.median(days))
    end = first + (int(busy[-1]) + 1) * DAY
    periods = int((end - first) // width)
    return end - periods * width, periods


def volumes(groups: np.ndarray, period: np.ndarray, num_groups: int, periods: int) -> np.ndarray:
    """``(num_groups, periods)`` event counts; events of group -1 (unknown) are left out."""
    keep = groups >= 0
    return np.bincount(groups[keep] * periods + period[keep], minlength=num_groups * periods).reshape(
        num_groups, periods)


def rising_conversion(dataset: Dataset, share_period: np.ndarray, bought_period: np.ndarray, periods: int,
                      top: int = 10) -> list[dict[str, Any]]:
    """Products converting more of their shares into purchases in the last third of the periods than before:
    a two-proportion z-test at 95%, each window with at least :data:`MIN_SHARES` shares; largest z first."""
    shares = dataset.shares
    recent_from = periods - max(1, periods // 3)
    attributed = dataset.purchases.share >= 0
    counts = {}
    for name, window in (("earlier", share_period < recent_from), ("recent", share_period >= recent_from)):
        counts[f"{name}_shares"] = np.bincount(shares.product[window], minlength=dataset.num_products)
    for name, window in (("earlier", bought_period < recent_from), ("recent", bought_period >= recent_from)):
        mask = attributed & window
        counts[f"{name}_bought"] = np.bincount(dataset.purchases.product[mask], minlength=dataset.num_products)
    out = []
    for p in np.flatnonzero((counts["earlier_shares"] >= MIN_SHARES) & (counts["recent_shares"] >= MIN_SHARES)):
        n1, n2 = counts["earlier_shares"][p], counts["recent_shares"][p]
        r1, r2 = min(counts["earlier_bought"][p] / n1, 1.0), min(counts["recent_bought"][p] / n2, 1.0)
        pooled = (r1 * n1 + r2 * n2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (r2 - r1) / se if se > 0 else 0.0
        if z >= Z95:
            out.append({"product_id": str(dataset.products[p]), "category": str(dataset.category[p]),
                        "earlier_conversion": round(r1, 4), "recent_conversion": round(r2, 4),
                        "earlier_shares": int(n1), "recent_shares": int(n2), "z": round(z, 2)})
    return sorted(out, key=lambda row: -row["z"])[:top]


def _summary(scores: list) -> dict[str, Any]:
    kept = [s for s in scores if s is not None]
    if not kept:
        return {"series": 0}
    return {"series": len(kept), "mase": round(float(np.mean([s.mase for s in kept])), 4),
            "naive_mase": round(float(np.mean([s.naive_mase for s in kept])), 4),
            "variants": {v: sum(s.variant == v for s in kept) for v in sorted({s.variant for s in kept})}}


def run_demand(data: Path, *, period_days: float = 7.0, seed: int = 0) -> dict[str, Any]:
    """The report ``sharerank demand`` prints (see the module docstring)."""
    if period_days <= 0:
        raise ValueError("--period-days must be positive")
    dataset = load_dataset(data, with_test=False)
    purchases = dataset.purchases
    times = [purchases.ts[np.isfinite(purchases.ts)]]
    if dataset.shares is not None:
        times.append(dataset.shares.ts[np.isfinite(dataset.shares.ts)])
    every = np.concatenate(times)
    if len(every) == 0:
        raise ValueError(f"{data}: purchases have no times; demand needs them")
    width = period_days * DAY
    start, periods = observed_window(every, width)
    if periods < MIN_PERIODS:
        raise ValueError(f"{data}: {periods} periods of {period_days:g} days; forecasts need at least {MIN_PERIODS} "
                         f"(try a smaller --period-days)")
    timed = np.isfinite(purchases.ts)
    bought_period = np.full(len(purchases), -1, dtype=np.int64)
    bought_period[timed] = period_index(purchases.ts[timed], start, width, periods)
    timed = bought_period >= 0
    friends = friends_matrix(dataset)
    community = label_propagation(friends.indptr, friends.indices, seed=seed).astype(np.int64)
    category_names, category_code = np.unique(dataset.category.astype(str), return_inverse=True)
    category_code = np.where(category_names[category_code] == "", -1, category_code)
    share_period = np.empty(0, dtype=np.int64)
    kinds: dict[str, dict[str, np.ndarray]] = {"purchases": {}, "shares": {}}
    buyer_group = {"category": category_code[purchases.product], "community": community[purchases.user]}
    for group, codes in buyer_group.items():
        kinds["purchases"][group] = volumes(np.where(timed, codes, -1), np.maximum(bought_period, 0),
                                            len(category_names) if group == "category" else community.max() + 1,
                                            periods)
    if dataset.shares is not None:
        shares = dataset.shares
        share_period = np.where(np.isfinite(shares.ts), period_index(np.nan_to_num(shares.ts), start, width,
                                                                      periods), -1)
        shared_timed = share_period >= 0
        sharer_group = {"category": category_code[shares.product], "community": community[shares.recipient]}
        for group, codes in sharer_group.items():
            kinds["shares"][group] = volumes(np.where(shared_timed, codes, -1), np.maximum(share_period, 0),
                                             len(category_names) if group == "category" else community.max() + 1,
                                             periods)
    top = np.argsort(-kinds["purchases"]["community"].sum(axis=1), kind="stable")[:TOP_COMMUNITIES]
    names = {"category": {i: str(n) for i, n in enumerate(category_names) if n != ""},
             "community": {int(c): str(c) for c in top}}
    series: dict[str, dict[str, dict[str, Any]]] = {"category": {}, "community": {}}
    scores: dict[str, list] = {"purchases": [], "shares": []}
    for group, labels in names.items():
        for row, label in labels.items():
            entry: dict[str, Any] = {}
            for kind, tables in kinds.items():
                if group not in tables:
                    continue
                values = tables[group][row]
                scored = score_series(values)
                scores[kind].append(scored)
                entry[kind] = {"volumes": values.tolist(),
                               "next_forecast": round(scored.next_forecast, 2) if scored else float(values[-1])}
            series[group][label] = entry
    return {
        "data": str(data), "period_days": period_days, "periods": periods,
        "period_starts": [start + i * width for i in range(periods)],
        "held_out": f"the last period; the smoothing variant chosen per series on the {VALIDATION_PERIODS} before it",
        "score": {kind: _summary(found) for kind, found in scores.items()},
        "beats_naive": {kind: bool(_summary(found).get("mase", math.inf) < _summary(found).get("naive_mase", 0))
                        for kind, found in scores.items() if any(s is not None for s in found)},
        "categories": series["category"], "communities": series["community"],
        "rising_conversion": rising_conversion(dataset, share_period, bought_period, periods)
        if dataset.shares is not None else [],
    }
